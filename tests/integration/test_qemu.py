"""What qsnap learns from the QEMU it runs, and what QEMU says about it."""

import json
import os
import re
import shutil

from harness import QEMU, QEMU_ARGS, ROOT, check, qsnap
from test_snapshots import fill_guest, guest_view


def qemu_log(vm):
    with open(vm.path("run", "qemu.log"), errors="replace") as f:
        return f.read()


def test_no_deprecation_warnings(t):
    """Every kind of save, restore and dump, and QEMU's log has no warning
    that qsnap uses something QEMU deprecated (QEMU 10 warns for fd: to a
    file, QEMU 9.1 removed the compress capability)."""
    vm = t.vm(extra_init=["--ram-mode", "shared"])
    vm.boot()
    saved = fill_guest(vm, "a", mib=4)
    vm.save("shared")
    vm.save("live", "--live")
    vm.save("zst", "--compress")
    qsnap("dump-memory", vm.dir, os.path.join(t.dir, "d.zst"))
    qsnap("dump-memory", vm.dir, os.path.join(t.dir, "d.raw"), "--no-compress")
    for s in ("shared", "live", "zst"):
        vm.restore(s)
        check(guest_view(vm) == saved, f"snapshot {s} restored wrong")
    vm.restore("shared", "--lazy")
    vm.save("stream")
    vm.restore("stream")
    check(guest_view(vm) == saved, "snapshot stream restored wrong")
    log = qemu_log(vm)
    bad = [l for l in log.splitlines() if re.search(r"deprecat|warning", l, re.I)]
    check(not bad, f"QEMU ({QEMU or 'the system QEMU'}) warned:\n" + "\n".join(bad))


SYSTEM_QEMU = shutil.which("qemu-system-x86_64")
QEMU10 = os.path.join(ROOT, "build", "qemu10", "usr", "bin", "qemu-system-x86_64")


def set_qemu(vm, binary):
    """What a user does after a QEMU upgrade: vm.json names the new QEMU."""
    with open(vm.path("vm.json")) as f:
        d = json.load(f)
    d["qemu"] = binary
    with open(vm.path("vm.json"), "w") as f:
        json.dump(d, f, indent=2)


def test_snapshots_survive_a_qemu_upgrade(t):
    """On the system's QEMU (7.2): stream, shared-RAM and live snapshots
    restore on QEMU 10 (the VM keeps its versioned machine type). On QEMU
    10: a snapshot of 10's machine type is refused by 7.2 with a clear
    error, before the running VM is touched."""
    check(os.path.exists(QEMU10), f"{QEMU10} is missing: run scripts/qemu10")
    old, new = (QEMU10, SYSTEM_QEMU) if QEMU else (SYSTEM_QEMU, QEMU10)
    vm = t.vm(extra_init=["--ram-mode", "shared", "--qemu", old])
    vm.boot()
    machine = vm.state()["machine"]["type"]
    check(re.fullmatch(r"pc-i440fx-\d+\.\d+", machine), f"no versioned machine type: {machine}")
    saved = {}
    saved["shared"] = fill_guest(vm, "shared", mib=4)
    vm.save("shared")
    saved["live"] = fill_guest(vm, "live", mib=4)
    vm.save("live", "--live")
    vm.restore("shared", "--lazy")
    saved["stream"] = fill_guest(vm, "stream", mib=4)
    p = vm.save("stream")
    check("stream" in p.stdout, p.stdout)
    with open(vm.path("snapshots", "stream", "meta.json")) as f:
        meta = json.load(f)
    check(meta.get("machine") == machine and meta.get("qemu_version"),
          f"meta.json does not record QEMU and machine type: {meta}")
    set_qemu(vm, new)
    if QEMU:
        # 7.2 has no pc-i440fx-10.0.
        before = vm.state()
        p = qsnap("restore", vm.dir, "stream", ok=False)
        check(p.returncode == 1 and machine in p.stderr and "QEMU 10" in p.stderr, p.stderr)
        check(vm.state() == before, "the refused restore changed state.json")
        check(vm.sh('echo "$X"') == saved["stream"]["x"], "the refused restore touched the VM")
        return
    for name in ("stream", "shared", "live"):
        vm.restore(name)
        check(guest_view(vm) == saved[name], f"snapshot {name} from QEMU 7.2 restored wrong on 10")
        check(vm.status()["state"] == "running", "not running after the restore")
    # A cold start on 10 keeps the recorded machine type, so later
    # snapshots stay loadable on either.
    vm.stop()
    vm.boot()
    check(vm.state()["qemu"]["machine"] == machine, "a cold start on 10 changed the machine type")


def test_restore_failure_says_why(t):
    """A machine state whose stream header is damaged (size and magic
    intact): QEMU's own reason for refusing it reaches the user (QEMU >= 9.1
    reports it in query-migrate and stays up; older ones in qemu.log), and
    the other snapshots still restore."""
    vm = t.vm()
    vm.boot()
    saved = fill_guest(vm, "good", mib=4)
    vm.save("good")
    vm.save("bad")
    # After "QEVM": the stream's version, 3 on every QEMU since 2.x.
    with open(vm.path("snapshots", "bad", "vmstate"), "r+b") as f:
        f.seek(4)
        f.write(b"\x00\x00\x00\x63")
    p = qsnap("restore", vm.dir, "bad", ok=False)
    check(p.returncode == 1 and "restoring 'bad' failed" in p.stderr,
          f"exit {p.returncode}: {p.stdout} {p.stderr}")
    check("load of migration failed" in p.stderr and "version" in p.stderr,
          f"QEMU's reason is not in the error: {p.stderr}")
    vm.restore("good")
    check(guest_view(vm) == saved, "the good snapshot restored wrong")


def test_stream_format_per_qemu(t):
    """A plain save is QEMU's mapped-ram format where QEMU has it (10:
    a sparse file as long as the guest's RAM, written by multifd channels),
    the sequential stream otherwise (7.2); compressed and live saves are
    always the sequential stream. Each restores, verifies, and goes through
    export and import."""
    vm = t.vm(memory="256M")
    vm.boot()
    saved = fill_guest(vm, "m", mib=16)
    vm.save("plain")
    vm.save("zst", "--compress")
    vm.save("live", "--live")
    metas = {}
    for s in ("plain", "zst", "live"):
        with open(vm.path("snapshots", s, "meta.json")) as f:
            metas[s] = json.load(f)
    want = "mapped-ram" if QEMU else None
    check(metas["plain"].get("format") == want, f"plain save format: {metas['plain']}")
    check(metas["zst"].get("format") is None and metas["live"].get("format") is None,
          f"compressed or live save not the plain stream: {metas}")
    path = vm.path("snapshots", "plain", "vmstate")
    st = os.stat(path)
    if want:
        check(st.st_size >= 256 << 20, f"mapped-ram file shorter than the RAM: {st.st_size}")
        check(st.st_blocks * 512 < st.st_size // 2, "mapped-ram file is not sparse")
    for s in ("plain", "zst", "live"):
        vm.sh("X=changed")
        vm.restore(s)
        check(guest_view(vm) == saved, f"snapshot {s} restored wrong")
    p = qsnap("verify", vm.dir)
    check("all intact" in p.stdout, p.stdout)
    tar = os.path.join(t.dir, "plain.tar")
    qsnap("export", vm.dir, "plain", tar)
    vm.stop()
    dest = os.path.join(t.dir, "imported")
    qsnap("import", dest, tar, *QEMU_ARGS)
    st2 = os.stat(os.path.join(dest, "snapshots", "plain", "vmstate"))
    check(st2.st_size == st.st_size, "import changed the machine state's size")
    check(not want or st2.st_blocks * 512 < st2.st_size * 3 // 4,
          f"import filled the mapped-ram file's holes: {st.st_blocks} -> {st2.st_blocks} blocks")
    qsnap("verify", dest)
    qsnap("restore", dest, "plain")
    try:
        from harness import Serial
        s = Serial(os.path.join(dest, "run", "serial.sock"))
        check(s.sh('echo "$X"') == saved["x"], "the imported snapshot restored wrong")
        s.close()
    finally:
        qsnap("stop", dest, ok=False)


def test_back_to_back_migrations(t):
    """Live saves, dumps and plain saves one right after another: QEMU 10
    refuses a migration that starts within milliseconds of a finished
    background snapshot ("duplicate yank instance") and then stays stuck;
    qsnap waits until QEMU has let go of the last one."""
    vm = t.vm()
    vm.boot()
    saved = {}
    for i in range(3):
        saved[f"l{i}"] = fill_guest(vm, f"l{i}", mib=2)
        vm.save(f"l{i}", "--live")
        qsnap("dump-memory", vm.dir, os.path.join(t.dir, f"d{i}.zst"))
        vm.save(f"p{i}")
        saved[f"p{i}"] = saved[f"l{i}"]
    st = json.loads(qsnap("qmp", vm.dir, "query-migrate").stdout)
    check(st.get("status") == "completed", f"QEMU's last migration: {st}")
    for name in ("l0", "p1", "l2"):
        vm.restore(name)
        check(guest_view(vm) == saved[name], f"snapshot {name} restored wrong")


def test_direct_io_setting(t):
    """QSNAP_DIRECT_IO=save,restore: a mapped-ram save and its restore with
    QEMU's direct-io (QEMU 10; ignored where QEMU has no direct-io)."""
    vm = t.vm()
    vm.boot()
    saved = fill_guest(vm, "dio", mib=8)
    env = {**os.environ, "QSNAP_DIRECT_IO": "save,restore"}
    qsnap("save", vm.dir, "D", env=env)
    vm.sh("X=changed")
    qsnap("restore", vm.dir, "D", env=env)
    vm.connect()
    check(guest_view(vm) == saved, "the direct-io snapshot restored wrong")
    params = json.loads(qsnap("qmp", vm.dir, "query-migrate-parameters").stdout)
    check(params.get("direct-io") is (True if QEMU else None), f"direct-io: {params.get('direct-io')}")
    log = qemu_log(vm)
    check("Segmentation" not in log and "error" not in log.lower(), f"QEMU said:\n{log}")


def test_save_settings(t):
    """qsnap config's save settings take effect on the next save (its
    --json says which path it took, meta.json the format), are kept in
    vm.json, and bad values are refused with a clear error, leaving vm.json
    and state.json as they were."""
    vm = t.vm()
    vm.boot()
    saved = fill_guest(vm, "path", mib=8)
    conf = json.loads(qsnap("config", vm.dir, "--json").stdout)
    check(conf["save_path"] == "auto" and conf["precopy"] == "auto"
          and conf["multifd_channels"] == "auto", f"defaults: {conf}")

    def meta(name):
        with open(vm.path("snapshots", name, "meta.json")) as f:
            return json.load(f)

    def files():
        return {n: open(vm.path(n), "rb").read() for n in ("vm.json", "state.json")}

    # auto: mapped-ram where QEMU has it (QEMU 10), else a stream.
    a = json.loads(vm.save("A", "--json").stdout)
    check(a["path"] == ("mapped-ram" if QEMU else "stream"), f"auto took {a['path']}")
    check(a["precopy"] is vm.precopy_by_default() and a["paused"] > 0, f"auto: {a}")
    names = [p["name"] for p in a["phases"]]
    for want in ("layers", "cut", "cont", "fsync", "checksum", "commit", "paused"):
        check(want in names, f"no phase {want} in {names}")
    starts = [p["start"] for p in a["phases"]]
    check(starts == sorted(starts) and all(p["seconds"] >= 0 for p in a["phases"]),
          f"phases out of order: {a['phases']}")
    check(meta("A").get("format") == ("mapped-ram" if QEMU else None), f"meta: {meta('A')}")

    qsnap("config", vm.dir, "--save-path", "stream", "--precopy", "off")
    b = json.loads(vm.save("B", "--json").stdout)
    check(b["path"] == "stream" and b["precopy"] is False and b["channels"] == 0, f"stream: {b}")
    check(meta("B").get("format") is None, f"meta (a stream has no format): {meta('B')}")
    with open(vm.path("vm.json")) as f:
        d = json.load(f)
    check(d.get("save_path") == "stream" and d.get("precopy") == "off", f"vm.json: {d}")

    # ram-file on any QEMU: RAM in a sparse file of its own, as long as the
    # guest's RAM; the machine state without it. precopy on is taken also
    # where auto would not (the user's word that their QEMU sees every
    # write; this guest is idle).
    qsnap("config", vm.dir, "--save-path", "ram-file", "--precopy", "on")
    r = json.loads(vm.save("R", "--json").stdout)
    check(r["path"] == "ram-file" and r["ram_mode"] == "shared" and r["precopy"] is True,
          f"ram-file: {r}")
    ram = os.stat(vm.path("snapshots", "R", "ram"))
    check(ram.st_size == 256 << 20 and ram.st_blocks * 512 < ram.st_size,
          f"the RAM file: {ram.st_size} bytes, {ram.st_blocks * 512} allocated")
    check(os.path.getsize(vm.path("snapshots", "R", "vmstate")) < 64 << 20,
          "the machine state still holds RAM")

    before = files()
    for args, words in ((["--save-path", "fast"], "--save-path"),
                        (["--precopy", "maybe"], "--precopy"),
                        (["--multifd-channels", "0x4"], "multifd-channels"),
                        (["--multifd-channels", "65"], "more than 64"),
                        (["--multifd-channels", "-1"], "multifd-channels")):
        p = qsnap("config", vm.dir, *args, ok=False)
        check(p.returncode != 0 and words in p.stderr, f"config {args}: {p.stderr}")
    check(files() == before, "a refused setting changed vm.json or state.json")

    if QEMU:
        qsnap("config", vm.dir, "--save-path", "mapped-ram", "--multifd-channels", "3",
              "--precopy", "auto")
        c = json.loads(vm.save("C", "--json").stdout)
        check(c["path"] == "mapped-ram" and c["channels"] == 3 and c["precopy"], f"mapped: {c}")
        params = json.loads(qsnap("qmp", vm.dir, "query-migrate-parameters").stdout)
        check(params.get("multifd-channels") == 3, f"QEMU's channels: {params}")
    else:
        # A QEMU without mapped-ram refuses that path clearly; nothing is saved.
        qsnap("config", vm.dir, "--save-path", "mapped-ram")
        p = qsnap("save", vm.dir, "C", ok=False)
        check(p.returncode != 0 and "mapped-ram" in p.stderr and "--save-path" in p.stderr,
              f"save: {p.stderr}")
        check("C" not in [s["name"] for s in vm.snapshots()], "a refused save left a snapshot")
    qsnap("config", vm.dir, "--save-path", "auto", "--multifd-channels", "auto",
          "--precopy", "auto")
    conf = json.loads(qsnap("config", vm.dir, "--json").stdout)
    check(conf["save_path"] == "auto" and conf["multifd_channels"] == "auto", f"reset: {conf}")
    for name in ("A", "B", "R") + (("C",) if QEMU else ()):
        vm.restore(name)
        check(guest_view(vm) == saved, f"snapshot {name} restored wrong")
        # The RAM file is mapped copy-on-write, not read.
        check(vm.status()["ram_lazy"] == (name == "R"), f"{name}: {vm.status()}")
    p = qsnap("verify", vm.dir, "R")
    check("all intact" in p.stdout, p.stdout)


def test_config_qemu(t):
    """qsnap config --qemu changes a stopped VM's QEMU binary for its next
    start; a binary that is not there, and a running VM, are refused with
    vm.json as it was."""
    qemu = QEMU or shutil.which("qemu-system-x86_64")
    vm = t.vm()
    with open(vm.path("vm.json"), "rb") as f:
        before = f.read()
    p = qsnap("config", vm.dir, "--qemu", "/nonexistent/qemu-system-x86_64", ok=False)
    check(p.returncode != 0 and "/nonexistent/qemu-system-x86_64" in p.stderr
          and "not found" in p.stderr, p.stderr)
    check(open(vm.path("vm.json"), "rb").read() == before, "a refused --qemu changed vm.json")
    qsnap("config", vm.dir, "--qemu", qemu)
    conf = json.loads(qsnap("config", vm.dir, "--json").stdout)
    check(conf["qemu"] == qemu, f"config --json: {conf}")
    vm.boot()
    pid = json.loads(qsnap("status", "--json", vm.dir).stdout)["pid"]
    check(os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(qemu),
          f"QEMU runs {os.readlink(f'/proc/{pid}/exe')}, not {qemu}")
    with open(vm.path("vm.json"), "rb") as f:
        running = f.read()
    p = qsnap("config", vm.dir, "--qemu", qemu, ok=False)
    check(p.returncode != 0 and "running" in p.stderr, p.stderr)
    check(open(vm.path("vm.json"), "rb").read() == running, "a refused --qemu changed vm.json")
