"""Differential snapshots: after a lazy restore of a shared-RAM snapshot, a
save writes only the pages the guest changed since the snapshot it was
restored from or last saved as (qsnap save --diff), and a chain of them
restores exactly."""

import glob
import json
import os
import shutil
import signal
import tarfile
import time

from harness import QEMU_ARGS, VM, Fail, check, file_digest, qsnap


def diff_vm(t, **kw):
    return t.vm(extra_init=["--ram-mode", "shared"], **kw)


def state(vm, tag, mib):
    """RAM data (a tmpfs file of mib MiB), disk data and a shell variable."""
    vm.sh(f"X={tag}-$RANDOM$RANDOM")
    vm.sh(f"dd if=/dev/urandom of=/tmp/{tag}.bin bs=1M count={mib} 2>/dev/null")
    vm.sh(f"echo {tag} > /mnt/who; sync")
    return view(vm)


def view(vm):
    return {
        "x": vm.sh('echo "$X"'),
        "ram": vm.sh("cat /tmp/*.bin 2>/dev/null | md5sum | cut -d' ' -f1"),
        "files": vm.sh("ls /tmp/*.bin 2>/dev/null | tr '\\n' ' '"),
        "disk": vm.sh("cat /mnt/who"),
    }


def listed(vm):
    return {s["name"]: s for s in vm.snapshots()}


def vmstate_size(vm, name):
    return os.path.getsize(vm.path("snapshots", name, "vmstate"))


def flip_middle_byte(path):
    """Damage a file the way a bad disk would: one byte in its middle."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))


def chain(vm, name):
    """The snapshots whose deltas a restore of name loads first."""
    s = next(s for s in vm.state()["snapshots"] if s["name"] == name)
    return [d["snapshot"] for d in s.get("ram_chain", [])]


def test_diff_chain(t):
    """Five milestones, each saved after the guest wrote more, each holding
    what changed since the one before; restored exactly in any order and
    every way; a branch, a plain save between, a deleted middle one and a
    damaged older delta."""
    vm = diff_vm(t)
    vm.boot()
    views = {"base": state(vm, "base", 32)}
    vm.save("base")
    vm.restore("base", "--lazy")
    for i in range(1, 6):
        name = f"m{i}"
        # New data, and data written over: the old file's first half.
        vm.sh(f"dd if=/dev/urandom of=/tmp/base.bin bs=1M count=4 conv=notrunc 2>/dev/null")
        views[name] = state(vm, name, 8)
        p = vm.save(name, "--diff")
        check("differential" in p.stdout, p.stdout)
        size = vmstate_size(vm, name)
        check(12 << 20 <= size < 24 << 20, f"{name}'s stream is {size >> 20} MiB")
        check(chain(vm, name) == [f"m{k}" for k in range(1, i)], f"{name}: {chain(vm, name)}")
    m5 = listed(vm)["m5"]
    check(m5["ram_after"] == "m4" and m5["ram_deltas"] == 4, f"m5 listed: {m5}")
    check("what changed since m4" in qsnap("list", vm.dir).stdout, "list does not show m5's chain")
    # The five together take little more than what the guest wrote (60 MiB).
    own = sum(listed(vm)[f"m{i}"]["size"] for i in range(1, 6))
    check(own < 110 << 20, f"the five milestones take {own >> 20} MiB")

    vm.restore("m3", "--lazy")
    check(view(vm) == views["m3"], "m3 lazy")
    vm.restore("m5")
    check(view(vm) == views["m5"], "m5 eager")
    vm.restore("m1", "--lazy")
    check(view(vm) == views["m1"], "m1 lazy")
    vm.stop()
    qsnap("start", vm.dir, "--from", "m4")
    vm.connect()
    check(view(vm) == views["m4"], "start --from m4")
    vm.stop()
    qsnap("start", vm.dir, "--from", "m2", "--lazy")
    vm.connect()
    check(view(vm) == views["m2"], "start --from m2 --lazy")

    # A branch from m2, with a plain save between: it builds on m2.
    views["b3"] = state(vm, "b3", 4)
    vm.save("plain")
    vm.save("b3", "--diff")
    check(chain(vm, "b3") == ["m1", "m2"], f"b3: {chain(vm, 'b3')}")
    check(vmstate_size(vm, "b3") < 12 << 20, "b3 holds more than since m2")
    vm.restore("m5", "--lazy")
    check(view(vm) == views["m5"], "m5 lazy")
    vm.restore("b3", "--lazy")
    check(view(vm) == views["b3"], "b3 lazy")

    # A deleted middle one: the later ones keep its delta (a hard link).
    qsnap("delete", vm.dir, "m3")
    vm.restore("m4", "--lazy")
    check(view(vm) == views["m4"], "m4 after deleting m3")
    vm.restore("m5")
    check(view(vm) == views["m5"], "m5 after deleting m3")
    qsnap("verify", vm.dir)

    # m4's chain folded into a RAM file of its own: it restores the same,
    # loads only its own delta, and a delta builds on it.
    qsnap("compact", vm.dir, "--fold", "m4")
    m4 = listed(vm)["m4"]
    check(m4["ram_deltas"] == 0 and m4["ram_base"] == "m4", f"m4 after the fold: {m4}")
    # Its RAM file is its own now, and counts in its size.
    m4_dir = next(s["dir"] for s in vm.state()["snapshots"] if s["name"] == "m4")
    ram_blocks = os.stat(os.path.join(vm.dir, m4_dir, "ram")).st_blocks * 512
    check(m4["size"] >= ram_blocks, f"m4's size {m4['size']} leaves out its RAM file ({ram_blocks})")
    check(not os.path.exists(vm.path("snapshots", "m4", "delta.1")), "m4 kept its deltas")
    p = qsnap("compact", vm.dir, "--fold", "m4", ok=False)
    check(p.returncode != 0 and "no older deltas" in p.stderr, p.stderr)
    vm.restore("m4", "--lazy")
    check(view(vm) == views["m4"], "m4 lazy after the fold")
    views["m6"] = state(vm, "m6", 2)
    vm.save("m6", "--diff")
    check(chain(vm, "m6") == ["m4"], f"m6: {chain(vm, 'm6')}")
    vm.restore("m4")
    check(view(vm) == views["m4"], "m4 eager after the fold")
    vm.restore("m6")
    check(view(vm) == views["m6"], "m6 eager")
    vm.restore("m5")
    check(view(vm) == views["m5"], "m5 after m4's fold")
    qsnap("verify", vm.dir)

    # A damaged older delta (m1's stream, which m2 and m5 link) is found by
    # verify and refused by a restore, which leaves the VM as it was.
    flip_middle_byte(vm.path("snapshots", "m1", "vmstate"))
    p = qsnap("verify", vm.dir, "m5", ok=False)
    check(p.returncode != 0 and "delta.1" in p.stdout + p.stderr, p.stdout + p.stderr)
    vm.restore("m4")
    p = qsnap("restore", vm.dir, "m5", ok=False)
    check(p.returncode != 0 and "damaged" in p.stderr, p.stderr)
    check(view(vm) == views["m4"], "the VM changed after a refused restore")



def test_compact_leaves_the_chain_the_next_save_builds_on(t):
    """qsnap compact folds a chain of 8 older deltas, but not the one the
    next --diff save builds on (that save would then hold everything
    written since the RAM file), and a save's own compaction of its disk
    layers folds nothing."""
    vm = diff_vm(t)
    vm.boot()
    qsnap("config", vm.dir, "--max-chain", "3")
    views = {"base": state(vm, "base", 16)}
    vm.save("base")
    vm.restore("base", "--lazy")
    for i in range(1, 11):
        views[f"m{i}"] = state(vm, f"m{i}", 2)
        vm.save(f"m{i}", "--diff")
    # Each save compacted the disks (a chain of 3 layers at most), and
    # folded nothing.
    deltas = {n: s["ram_deltas"] for n, s in listed(vm).items() if n != "base"}
    check(deltas == {f"m{i}": i - 1 for i in range(1, 11)}, f"chains after the saves: {deltas}")
    qsnap("compact", vm.dir)
    deltas = {n: s["ram_deltas"] for n, s in listed(vm).items() if n != "base"}
    want = {f"m{i}": i - 1 for i in range(1, 11)}
    want["m9"] = 0
    check(deltas == want, f"chains after qsnap compact: {deltas}, expected {want}")
    views["m11"] = state(vm, "m11", 1)
    vm.save("m11", "--diff")
    size = vmstate_size(vm, "m11")
    check(size < 8 << 20, f"m11 after the compaction holds {size >> 20} MiB for 1 MiB written (20 since the RAM file)")
    for name in ("m9", "m11", "m10"):
        vm.restore(name, "--lazy")
        check(view(vm) == views[name], f"{name} after the compaction")

def test_diff_milestones_restore_exactly(t):
    vm = diff_vm(t)
    vm.boot()
    base = state(vm, "base", 64)
    vm.save("base")
    ram_sum = file_digest(vm.path("snapshots", "base", "ram"))
    vm.restore("base", "--lazy")
    check(view(vm) == base, "lazy base wrong")

    m1 = state(vm, "m1", 16)
    p = vm.save("m1", "--diff")
    check("differential" in p.stdout, p.stdout)
    snaps = listed(vm)
    check(snaps["m1"]["ram_base"] == "base", f"m1's base: {snaps['m1']}")
    # The delta holds about what the guest wrote (16 MiB and the page
    # cache, kernel and shell pages it touched), far less than the 64 MiB
    # of data in RAM that a full stream would carry.
    d1 = vmstate_size(vm, "m1")
    check(16 << 20 <= d1 < 40 << 20, f"m1's stream is {d1 >> 20} MiB")
    check(snaps["m1"]["size"] < 60 << 20, f"m1 listed at {snaps['m1']['size']} bytes")

    m2 = state(vm, "m2", 8)
    vm.save("m2", "--diff")
    d2 = vmstate_size(vm, "m2")
    # Only what changed since m1: m2's 8 MiB, not m1's 16 again.
    check(8 << 20 <= d2 < 16 << 20, f"m2's stream is {d2 >> 20} MiB")
    check(chain(vm, "m2") == ["m1"], f"m2's chain: {chain(vm, 'm2')}")
    vm.sh("X=later; rm -f /tmp/*.bin; echo later > /mnt/who; sync")

    vm.restore("m1")
    check(view(vm) == m1, f"m1 eager: {view(vm)} != {m1}")
    vm.restore("m2", "--lazy")
    check(view(vm) == m2, f"m2 lazy: {view(vm)} != {m2}")
    # A differential save of a VM restored from a differential snapshot.
    m3 = state(vm, "m3", 4)
    vm.save("m3", "--diff")
    check(listed(vm)["m3"]["ram_base"] == "base", "m3 does not build on base")
    check(chain(vm, "m3") == ["m1", "m2"], f"m3's chain: {chain(vm, 'm3')}")
    d3 = vmstate_size(vm, "m3")
    check(4 << 20 <= d3 < 12 << 20, f"m3's stream is {d3 >> 20} MiB")
    vm.restore("base")
    check(view(vm) == base, "base eager after the deltas")
    vm.restore("m3", "--lazy")
    check(view(vm) == m3, f"m3 lazy: {view(vm)} != {m3}")
    vm.restore("m1", "--lazy")
    check(view(vm) == m1, "m1 lazy")
    vm.stop()
    qsnap("start", vm.dir, "--from", "m2")
    vm.connect()
    check(view(vm) == m2, "start --from m2")
    vm.stop()
    qsnap("start", vm.dir, "--from", "m3", "--lazy")
    vm.connect()
    check(view(vm) == m3, "start --from m3 --lazy")
    vm.restore("base", "--lazy")
    check(view(vm) == base, "base lazy")

    # The base's RAM file was never written.
    check(file_digest(vm.path("snapshots", "base", "ram")) == ram_sum, "base's RAM changed")
    qsnap("verify", vm.dir)

    # Deleting the base keeps the deltas restorable (they link its RAM file).
    qsnap("delete", vm.dir, "base")
    vm.restore("m2")
    check(view(vm) == m2, "m2 after deleting base")
    vm.restore("m1", "--lazy")
    check(view(vm) == m1, "m1 lazy after deleting base")


def test_diff_refused_without_lazy_ram_and_damaged(t):
    vm = diff_vm(t)
    vm.boot()
    vm.save("base")
    p = qsnap("save", vm.dir, "nolazy", "--diff", ok=False)
    check(p.returncode != 0 and "--lazy" in p.stderr, p.stderr)
    check("nolazy" not in listed(vm), "a refused save left a snapshot")
    vm.restore("base", "--lazy")
    state(vm, "d", 8)
    vm.save("d", "--diff")
    # Read as a plain shared-RAM snapshot (by a qsnap that does not know
    # ram_base, or after an export that lost it), QEMU refuses the stream:
    # x-ignore-shared differs from the save's.
    st = vm.state()
    with open(vm.path("state.json")) as f:
        text = f.read()
    plain = json.loads(text)
    for s in plain["snapshots"]:
        s.pop("ram_base", None)
    with open(vm.path("state.json"), "w") as f:
        json.dump(plain, f)
    p = qsnap("restore", vm.dir, "d", ok=False)
    check(p.returncode != 0, "a delta loaded as a shared-RAM snapshot")
    with open(vm.path("state.json"), "w") as f:
        f.write(text)
    check(vm.state() == st, "state.json not put back")
    vm.restore("d")
    check(vm.sh("cat /mnt/who") == "d", "d after the refused load")
    # A damaged delta is refused, and the VM it would replace is not touched.
    flip_middle_byte(vm.path("snapshots", "d", "vmstate"))
    p = qsnap("verify", vm.dir, "d", ok=False)
    check(p.returncode != 0, "verify passed a damaged delta")
    p = qsnap("restore", vm.dir, "d", ok=False)
    if p.returncode == 0:
        raise Fail("a damaged delta was restored")


# Rewrites /tmp/churn (32 MiB) pass after pass, each 8-byte line of a pass
# its number, from the start: at any instant the file is a prefix of one pass
# and the rest of the pass before (a line cut in two at the instant aside).
CHURN = ("i=0; while :; do i=$((i+1)); printf '%07d\\n' $i > /tmp/blk; "
         "for k in $(seq 17); do cat /tmp/blk /tmp/blk > /tmp/blk2; mv /tmp/blk2 /tmp/blk; done; "
         "for k in $(seq 32); do cat /tmp/blk; done | dd of=/tmp/churn bs=1M iflag=fullblock "
         "conv=notrunc 2>/dev/null; done")


def one_instant(vm, what):
    """The restored guest's writers stopped, then what they left checked:
    the rewritten file one pass over the one before, the log on disk
    without a gap, the kernel without an oops."""
    # The writers stop before anything reads: the loop, then what it runs.
    vm.sh("kill $(jobs -p); killall -9 dd cat 2>/dev/null; wait; sync; "
          "echo 3 > /proc/sys/vm/drop_caches")
    runs = [line.split() for line in vm.sh("uniq -c /tmp/churn").splitlines()]
    # A line cut in two by the instant of the save is a run of one.
    passes = [int(v) for n, v in runs if n != "1" or len(runs) == 1]
    check(passes and all(a == b + 1 for a, b in zip(passes, passes[1:])),
          f"{what}: the rewritten file is not one instant: {runs[:8]}")
    lines = vm.sh("cat /mnt/log", timeout=120).split()
    check(len(lines) > 10 and lines == [str(i) for i in range(len(lines))],
          f"{what}: the log on disk has a gap, a repeat or garbage ({len(lines)} lines)")
    check(vm.sh("dmesg | grep -c -E 'BUG|Oops' || true") == "0", f"{what}: the kernel oopsed")


def test_diff_save_of_a_busy_guest(t):
    """Saves of a lazily restored guest that rewrites RAM and appends to a
    file on disk all the time pause it only at the end (precopy) on every
    QEMU, differential or not, also where QEMU's dirty log misses guest
    writes (TCG before 9.0): there qsnap rereads the pages the guest wrote
    once it is stopped. Each restored guest must be the one instant."""
    vm = diff_vm(t, memory="512M")
    vm.boot()
    state(vm, "base", 16)
    vm.save("base")
    vm.restore("base", "--lazy")
    vm.sh("(i=0; while :; do echo $i >> /mnt/log; sync; i=$((i+1)); done) >/dev/null 2>&1 & true")
    vm.sh(f"({CHURN}) >/dev/null 2>&1 & true")
    # Until the third pass is under way: the guest writes as it is saved.
    deadline = time.monotonic() + 120
    while int(vm.sh("head -c 7 /tmp/churn 2>/dev/null || echo 0") or 0) < 3:
        check(time.monotonic() < deadline, "the guest did not rewrite its file in 120 s")
        time.sleep(1)
    reread = not vm.precopy_by_default()
    for name, args in (("busy", ["--diff"]), ("full", [])):
        st = json.loads(vm.save(name, "--json", *args).stdout)
        phases = [p["name"] for p in st["phases"]]
        check(st["diff"] is bool(args) and st["precopy"] is True, f"{name}: {st}")
        check(("reread" in phases) is reread, f"{name}'s phases: {phases}")
    for name, args in (("busy", ["--lazy"]), ("full", [])):
        vm.restore(name, *args)
        one_instant(vm, name)


def test_diff_save_killed_leaves_nothing(t):
    from test_faults import finish, partial_vmstate_written, start_qsnap, wait_for

    vm = diff_vm(t, memory="512M")
    vm.boot()
    vm.sh("dd if=/dev/urandom of=/tmp/big.bin bs=1M count=200 2>/dev/null", timeout=300)
    vm.save("base")
    ram_sum = file_digest(vm.path("snapshots", "base", "ram"))
    vm.restore("base", "--lazy")
    now = state(vm, "k", 16)
    proc = start_qsnap("save", vm.dir, "doomed", "--diff")
    check(wait_for(lambda: partial_vmstate_written(vm), "the save to write", proc=proc),
          "the save ended before it could be interrupted")
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    check(list(listed(vm)) == ["base"], f"after the killed save: {list(listed(vm))}")
    vm.save("after", "--diff")
    check(list(listed(vm)) == ["base", "after"], f"listed: {list(listed(vm))}")
    check(not glob.glob(vm.path("snapshots", ".partial-*")), "a partial directory is left")
    check(view(vm) == now, "the guest changed while the save was undone")
    vm.restore("base")
    vm.restore("after", "--lazy")
    check(view(vm) == now, "after, restored, differs")
    check(file_digest(vm.path("snapshots", "base", "ram")) == ram_sum, "base's RAM changed")


def diff_chain_of_two(t):
    """base (shared RAM), restored --lazy; m1 and m2 saved --diff: m2's
    chain holds m1's delta. Returns the VM (running m2) and the views."""
    vm = diff_vm(t)
    vm.boot()
    views = {"base": state(vm, "base", 8)}
    vm.save("base")
    vm.restore("base", "--lazy")
    for name in ("m1", "m2"):
        vm.sh("dd if=/dev/urandom of=/tmp/base.bin bs=1M count=2 conv=notrunc 2>/dev/null")
        views[name] = state(vm, name, 4)
        vm.save(name, "--diff")
    check(chain(vm, "m2") == ["m1"], f"m2: {chain(vm, 'm2')}")
    return vm, views


def restores_exactly(vm, name, want):
    """restore --lazy, restore and start --from, each the saved guest."""
    vm.restore(name, "--lazy")
    check(view(vm) == want, f"{name} lazy: {view(vm)} != {want}")
    vm.restore(name)
    check(view(vm) == want, f"{name} eager: {view(vm)} != {want}")
    vm.stop()
    qsnap("start", vm.dir, "--from", name)
    vm.connect()
    check(view(vm) == want, f"{name} start --from: {view(vm)} != {want}")


def test_diff_export_import(t):
    """A differential snapshot with a chain of two, exported while the VM
    runs, imported into a fresh directory with nothing of the source left:
    it restores exactly every way, and saves --diff on from there; the RAM
    file's holes take no room in the archive; a damaged delta inside the
    archive is refused and leaves nothing behind."""
    vm, views = diff_chain_of_two(t)
    tar = os.path.join(t.dir, "m2.tar")
    qsnap("export", vm.dir, "m2", tar)
    with tarfile.open(tar) as tf:
        members = {m.name: m for m in tf.getmembers()}
    for name in ("snapshot/ram", "snapshot/vmstate", "snapshot/delta.1"):
        check(name in members, f"the archive has no {name}: {list(members)}")
    check("snapshot/delta.2" not in members, f"the archive has a delta.2: {list(members)}")
    with open(tar, "rb") as f:
        manifest = json.loads(tf_read(f, members["qsnap-export.json"]))
    check(manifest["snapshot"]["mode"] == "shared" and manifest["snapshot"]["ram_base"] == "base",
          f"manifest: {manifest['snapshot']}")
    ram = vm.path("snapshots", "m2", "ram")
    allocated = os.stat(ram).st_blocks * 512
    check(os.path.getsize(tar) < allocated + (48 << 20) < os.path.getsize(ram),
          f"the archive has {os.path.getsize(tar) >> 20} MiB, the RAM file "
          f"{allocated >> 20} MiB allocated of {os.path.getsize(ram) >> 20} MiB")
    vm.stop()

    # A damaged delta (m1's, which m2 builds on) and a damaged RAM file.
    for name in ("snapshot/delta.1", "snapshot/ram"):
        m = members[name]
        bad = os.path.join(t.dir, "bad.tar")
        shutil.copy(tar, bad)
        with open(bad, "r+b") as f:
            # The first data block holds the start of the stream / RAM.
            f.seek(m.offset_data + 100)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))
        p = qsnap("import", os.path.join(t.dir, "imported"), bad, ok=False)
        check(p.returncode == 1 and "checksum" in p.stderr and "nothing was imported" in p.stderr,
              f"import with a damaged {name}: {p.returncode} {p.stderr}")
        check(not [f for f in os.listdir(t.dir) if "imported" in f],
              f"a refused import left {os.listdir(t.dir)}")

    # Nothing of the source VM is left: the archive is all it takes.
    shutil.rmtree(vm.dir)
    new = os.path.join(t.dir, "imported")
    p = qsnap("import", new, tar, *QEMU_ARGS)
    check("imported snapshot m2" in p.stdout, p.stdout)
    qsnap("verify", new)
    got = os.stat(os.path.join(new, "snapshots", "m2", "ram")).st_blocks * 512
    check(got <= allocated + (1 << 20), f"the imported RAM file has {got >> 20} MiB allocated, "
          f"the exported one {allocated >> 20} MiB")
    with open(os.path.join(new, "state.json")) as f:
        s = json.load(f)["snapshots"][0]
    check(s["mode"] == "shared" and s["ram_base"] == "base"
          and [d["snapshot"] for d in s["ram_chain"]] == ["m1"], f"imported: {s}")
    vm2 = VM.__new__(VM)
    vm2.t, vm2.dir, vm2.serial = t, new, None
    t.vms.append(vm2)
    restores_exactly(vm2, "m2", views["m2"])
    # It is a chain to build on: a delta of it, restored.
    vm2.restore("m2", "--lazy")
    views["m3"] = state(vm2, "m3", 2)
    vm2.save("m3", "--diff")
    check(chain(vm2, "m3") == ["m1", "m2"], f"m3: {chain(vm2, 'm3')}")
    vm2.restore("m2", "--lazy")
    vm2.restore("m3", "--lazy")
    check(view(vm2) == views["m3"], f"m3: {view(vm2)} != {views['m3']}")


def tf_read(f, member):
    f.seek(member.offset_data)
    return f.read(member.size)


def test_diff_push_pull(t):
    """The same chain through a registry: m1's push sends the RAM file's
    chunks, m2's sends only its own delta and layer (the RAM chunks and
    m1's delta are there already); m2 pulled into a fresh directory
    restores exactly every way, and m1 pulled into it beside m2 too."""
    from test_registry import pull, pulled_vm, push, registry

    vm, views = diff_chain_of_two(t)
    ram = vm.path("snapshots", "m2", "ram")
    with registry(t) as reg:
        r1 = push(vm, "m1", reg.ref("qsnap/diff"))
        check(r1["uploaded_bytes"] > vmstate_size(vm, "m1") + (8 << 20), f"m1's push: {r1}")
        r2 = push(vm, "m2", reg.ref("qsnap/diff"))
        check(r2["present"] > 0
              and r2["uploaded_bytes"] < vmstate_size(vm, "m2") + (4 << 20)
              < os.stat(ram).st_blocks * 512,
              f"m2's push sent {r2['uploaded_bytes'] >> 20} MiB (its delta "
              f"{vmstate_size(vm, 'm2') >> 20} MiB): {r2}")
        vm.stop()

        new = os.path.join(t.dir, "pulled")
        got = pull(reg.ref("qsnap/diff", "m2"), new)
        check(got["name"] == "m2", f"pull: {got}")
        qsnap("verify", new)
        vm2 = pulled_vm(t, new)
        check(chain(vm2, "m2") == ["m1"] and listed(vm2)["m2"].get("ram_base") == "base",
              f"pulled: {vm2.state()['snapshots']}")
        restores_exactly(vm2, "m2", views["m2"])
        # m1 beside it: its machine state is m2's delta.1, copied, not fetched.
        vm2.stop()
        got = pull(reg.ref("qsnap/diff", "m1"), new)
        check(got["downloaded_bytes"] < vmstate_size(vm, "m1"), f"second pull: {got}")
        qsnap("verify", new)
        vm2.restore("m1", "--lazy")
        check(view(vm2) == views["m1"], f"m1 pulled: {view(vm2)} != {views['m1']}")
