"""Faults: processes killed halfway, a full disk, damaged state files, two
commands at once. Each test ends the same way: every earlier snapshot still
restores to its exact state, state.json parses, and no partial snapshot is
listed or left on disk."""

import glob
import json
import os
import signal
import subprocess
import time

from harness import QSNAP, Fail, check, check_no_sanitizer_report, process_running, qsnap

# Enough guest RAM in use that a save or a restore takes a while under TCG,
# so that a kill lands in the middle of it.
BIG_MIB = 200


def mark(vm, tag, mib=4):
    """Give the guest a state to come back to: a shell variable and a random
    file in RAM, and a file on its disk. Returns what view() sees."""
    vm.sh(f"X={tag}-$RANDOM$RANDOM")
    vm.sh(f"dd if=/dev/urandom of=/tmp/ram.bin bs=1M count={mib} 2>/dev/null")
    vm.sh(f"echo {tag} > /mnt/who; sync")
    return view(vm)


def view(vm):
    return {
        "x": vm.sh('echo "$X"'),
        "ram": vm.sh("md5sum /tmp/ram.bin | cut -d' ' -f1"),
        "disk": vm.sh("cat /mnt/who"),
    }


def fill_ram(vm, mib=BIG_MIB):
    vm.sh(f"dd if=/dev/urandom of=/tmp/big bs=1M count={mib} 2>/dev/null", timeout=300)


def vm_processes(vm):
    """Live processes whose working directory is the VM directory: QEMU."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{p}/cwd") == os.path.realpath(vm.dir) and process_running(p):
                pids.append(int(p))
        except OSError:
            pass
    return pids


def assert_consistent(vm, expected):
    """state.json parses, nothing partial is listed or left, no file is
    left that state.json does not name, at most one QEMU runs, and every
    snapshot restores to exactly the state it was saved in."""
    with open(vm.path("state.json")) as f:
        st = json.load(f)
    check("pending" not in st, f"an interrupted save is still pending: {st.get('pending')}")
    names = sorted(s["name"] for s in vm.snapshots())
    check(names == sorted(expected), f"snapshots listed: {names}, expected {sorted(expected)}")
    check(not glob.glob(vm.path("snapshots", ".partial-*")), "a partial snapshot is left")
    dirs = sorted(os.listdir(vm.path("snapshots")))
    want = sorted(os.path.basename(s["dir"]) for s in st["snapshots"])
    check(dirs == want, f"snapshots/ holds {dirs}, state.json names {want}")
    layers = sorted(os.listdir(vm.path("layers")))
    want = sorted(os.path.basename(ly["path"]) for ly in st["layers"])
    check(layers == want, f"layers/ holds {layers}, state.json names {want}")
    check(len(vm_processes(vm)) <= 1, f"more than one QEMU for the VM: {vm_processes(vm)}")
    for name, saved in expected.items():
        vm.restore(name)
        got = view(vm)
        check(got == saved, f"snapshot {name} restored to {got}, saved {saved}")
    check(len(vm_processes(vm)) == 1, f"QEMUs for the VM after the restores: {vm_processes(vm)}")


def start_qsnap(*args, interactive=False):
    """qsnap in the background; interactive: as from a terminal, where
    Ctrl-C's SIGINT is not ignored (a test run started as a background job
    of a script inherits it ignored, and qsnap keeps a signal ignored)."""
    def sigint_default():
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen([QSNAP, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_default if interactive else None)


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    check_no_sanitizer_report(err)
    return proc.returncode, out, err


def wait_for(cond, what, timeout=60, proc=None):
    deadline = time.time() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            return False
        check(time.time() < deadline, f"timed out waiting for {what}")
        time.sleep(0.005)
    return True


def partial_vmstate_written(vm):
    files = glob.glob(vm.path("snapshots", ".partial-*", "vmstate"))
    return any(os.path.getsize(f) > 0 for f in files if os.path.exists(f))


def one_line(stderr):
    return len(stderr.strip().splitlines()) == 1


# ---- processes killed ------------------------------------------------------


def test_qsnap_killed_during_save(t):
    vm = t.vm(memory="512M")
    vm.boot()
    expected = {"early": mark(vm, "early")}
    vm.save("early")
    fill_ram(vm)
    now = view(vm)
    pid = vm.qemu_pid()
    proc = start_qsnap("save", vm.dir, "doomed")
    check(wait_for(lambda: partial_vmstate_written(vm), "the save to write", proc=proc),
          "the save ended before it could be interrupted")
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    # What a reader sees before anyone cleans up: no partial snapshot.
    names = [s["name"] for s in vm.snapshots()]
    check(names == ["early"], f"after the killed save, listed: {names}")
    check("pending" in vm.state(), "state.json does not record the interrupted save")
    # The next command notices, undoes the save, resumes the guest, works.
    p = vm.save("after")
    check("saved after" in p.stdout, p.stdout)
    check(vm.qemu_pid() == pid, "QEMU was replaced")
    check(vm.status()["state"] == "running", f"state {vm.status()['state']}")
    check(view(vm) == now, "the guest changed while the save was undone")
    # QEMU let go of the removed partial file (its space is free again).
    held = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    check(not [h for h in held if ".partial" in h], f"QEMU still holds {held}")
    expected["after"] = now
    assert_consistent(vm, expected)


def test_qsnap_killed_during_restore(t):
    vm = t.vm(memory="512M")
    vm.boot()
    expected = {"small": mark(vm, "small")}
    vm.save("small")
    fill_ram(vm)
    expected["big"] = mark(vm, "big")
    vm.save("big")
    vm.sh("X=discarded")
    # Kill qsnap at several points of the restore: while the old QEMU
    # ends, just after the new one is started, and while it loads.
    for stage in ("early", "launched", "loading"):
        old = vm.qemu_pid()
        proc = start_qsnap("restore", vm.dir, "big")
        if stage == "early":
            time.sleep(0.05)
        elif stage == "launched":
            wait_for(lambda: new_qemu(vm, old), "a new QEMU", proc=proc)
        else:
            wait_for(lambda: qemu_reads(new_qemu(vm, old), "vmstate"), "QEMU to load", proc=proc)
        proc.send_signal(signal.SIGKILL)
        finish(proc)
        check(vm.snapshots() and sorted(s["name"] for s in vm.snapshots()) == ["big", "small"],
              f"after killing the restore ({stage}): {vm.snapshots()}")
        # The next command cleans up and works.
        vm.restore("big")
        check(view(vm) == expected["big"], f"restore after a killed restore ({stage}) is wrong")
        check(len(vm_processes(vm)) == 1, f"QEMUs after ({stage}): {vm_processes(vm)}")
    assert_consistent(vm, expected)


def new_qemu(vm, old):
    """The pid of a QEMU that is not old, from run/qemu.pid."""
    try:
        with open(vm.path("run", "qemu.pid")) as f:
            pid = int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid and pid != old and process_running(pid) else None


def qemu_reads(pid, name):
    """pid has a file called name open."""
    if not pid:
        return False
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("/" + name):
                return True
    except OSError:
        pass
    return False


def test_qemu_killed_during_restore(t):
    vm = t.vm(memory="512M")
    vm.boot()
    expected = {"small": mark(vm, "small")}
    vm.save("small")
    fill_ram(vm)
    expected["big"] = mark(vm, "big")
    vm.save("big")
    for attempt in range(5):
        old = vm.qemu_pid()
        proc = start_qsnap("restore", vm.dir, "big")
        killed = None
        if wait_for(lambda: qemu_reads(new_qemu(vm, old), "vmstate"), "QEMU to load", proc=proc):
            killed = new_qemu(vm, old)
            if killed:
                os.kill(killed, signal.SIGKILL)
        rc, out, err = finish(proc)
        if rc == 0:
            # The load won the race: try again.
            continue
        check(killed, f"restore failed without a kill: {err}")
        check("restoring 'big' failed" in err and "stopped" in err, f"unclear error: {err}")
        break
    else:
        raise Fail("could not kill QEMU during a restore in 5 attempts")
    check(not process_running(killed), "the killed QEMU lives")
    st = vm.status()
    check(st["state"] == "stopped", f"status after QEMU died in a restore: {st['state']}")
    assert_consistent(vm, expected)


def test_qemu_stops_during_compressed_save(t):
    """A QEMU that stops writing its migration pipe (SIGSTOP during a
    compressed save): the save ends soon after --timeout with an error that
    says QEMU stopped answering and was killed, the VM is stopped as the
    error says, nothing partial remains, and the earlier snapshot restores."""
    vm = t.vm(memory="512M")
    vm.boot()
    expected = {"early": mark(vm, "early")}
    vm.save("early")
    fill_ram(vm)
    pid = vm.qemu_pid()
    timeout = 20
    t0 = time.time()
    proc = start_qsnap("save", vm.dir, "doomed", "--compress=19", "--timeout", timeout)
    try:
        check(wait_for(lambda: partial_written(vm, "vmstate.zst"), "the save to compress",
                       proc=proc), "the save ended before QEMU could be stopped")
        os.kill(pid, signal.SIGSTOP)
        rc, out, err = finish(proc, timeout=timeout + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if process_running(pid):
            os.kill(pid, signal.SIGCONT)
    took = time.time() - t0
    check(rc == 1, f"the save exited {rc}: {out}{err}")
    # The migration's wait ends at the timeout; the undo gives QEMU at most
    # 10 s more (it is usually killed at once: it has stopped answering).
    check(took < timeout + 15, f"the save took {took:.0f} s with --timeout {timeout}: {err}")
    check("did not finish within 20 s" in err and "killed" in err and "the VM is stopped" in err
          and "nothing was saved" in err, f"unclear error: {err}")
    check(not process_running(pid), "the stopped QEMU still exists")
    st = vm.status()
    check(st["state"] == "stopped", f"status after the killed save: {st['state']}")
    assert_consistent(vm, expected)


def test_ctrl_c_cancels_save(t):
    """SIGINT (Ctrl-C) during qsnap save cancels it: qsnap says so and
    exits 1 within seconds, no snapshot and nothing partial is left, and
    the guest runs on as it was."""
    vm = t.vm(memory="512M")
    vm.boot()
    fill_ram(vm)
    now = mark(vm, "kept")
    pid = vm.qemu_pid()
    # Slow enough to interrupt; a cancel waits for the zstd jobs in flight,
    # which at level 19 took 50 s with the two QEMUs' runs side by side.
    proc = start_qsnap("save", vm.dir, "interrupted", "--compress=15", interactive=True)
    try:
        check(wait_for(lambda: partial_written(vm, "vmstate.zst"), "the save to write",
                       proc=proc), "the save ended before it could be interrupted")
        t0 = time.time()
        proc.send_signal(signal.SIGINT)
        rc, out, err = finish(proc, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    check(time.time() - t0 < 60, f"the cancelled save took {time.time() - t0:.0f} s to end")
    check(rc == 1 and "cancelled" in err and "nothing was saved" in err,
          f"qsnap save after SIGINT exited {rc}: {err}")
    check(vm.qemu_pid() == pid and vm.status()["state"] == "running",
          f"the VM after the cancelled save: {vm.status()}")
    check(view(vm) == now, "the guest changed in the cancelled save")
    assert_consistent(vm, {})


def partial_written(vm, name):
    files = glob.glob(vm.path("snapshots", ".partial-*", name))
    return any(os.path.getsize(f) > 0 for f in files if os.path.exists(f))


def test_leftovers_of_a_killed_command(t):
    """What qsnap leaves when it is killed between making something and
    recording it in state.json: a QEMU it started, a layer qemu-img made, a
    snapshot directory renamed into place. The next command removes them
    (the kills above hit these windows only by chance, so they are made
    here by hand)."""
    vm = t.vm()
    vm.boot()
    expected = {"a": mark(vm, "a")}
    vm.save("a")
    orphan = vm.qemu_pid()
    st = vm.state()
    del st["qemu"]
    with open(vm.path("state.json"), "w") as f:
        json.dump(st, f)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", vm.path("layers", "vda-999.qcow2"),
                    "1M"], check=True)
    os.makedirs(vm.path("snapshots", "ghost"))
    with open(vm.path("snapshots", "ghost", "vmstate"), "wb") as f:
        f.write(b"QEVM")
    vm.serial.close()
    vm.serial = None
    try:
        vm.boot()
    finally:
        # qsnap stop cannot end a QEMU that state.json does not know.
        if process_running(orphan):
            os.kill(orphan, signal.SIGKILL)
            time.sleep(0.5)
            check(False, "the orphan QEMU still ran after the next command")
    check(vm.qemu_pid() != orphan, "the new QEMU is the orphan")
    check(not os.path.exists(vm.path("layers", "vda-999.qcow2")), "the stray layer is left")
    check(not os.path.exists(vm.path("snapshots", "ghost")), "the stray snapshot is left")
    assert_consistent(vm, expected)


def test_restore_onto_a_damaged_layer_leaves_the_vm_running(t):
    """A restore makes its new layers before it ends the running QEMU: when
    the snapshot's frozen layer is damaged (which the checks of the machine
    state do not read), qemu-img's refusal comes while the VM still runs as
    it was, and no layer of the failed restore is left."""
    vm = t.vm()
    vm.boot()
    expected = {"S": mark(vm, "S")}
    vm.save("S")
    now = mark(vm, "now")
    layer = vm.path(snap_layer_of(vm, "S"))
    with open(layer, "r+b") as f:
        header = f.read(4)
        f.seek(0)
        f.write(b"\0\0\0\0")
    p = qsnap("restore", vm.dir, "S", ok=False)
    # (qemu-img's own words follow, over more than one line.)
    check(p.returncode == 1 and "cannot create layer" in p.stderr and "failed; the VM is stopped" not in p.stderr,
          f"restore onto a damaged layer: {p.returncode} {p.stderr!r}")
    check(vm.status()["state"] == "running", f"state after it: {vm.status()['state']}")
    check(view(vm) == now, f"the running guest changed: {view(vm)}, was {now}")
    with open(layer, "r+b") as f:
        f.write(header)
    assert_consistent(vm, expected)


def test_restore_that_fails_after_qemu_ended_says_so(t):
    """A restore whose checks pass ends the running QEMU before the new one
    loads the machine state; when that fails (here: the state is damaged
    past its magic number, which the checks of a full snapshot do not
    read), the error says the VM is now stopped, and it is."""
    vm = t.vm()
    vm.boot()
    expected = {"S": mark(vm, "S")}
    vm.save("S")
    vmstate = vm.path(next(s for s in vm.state()["snapshots"] if s["name"] == "S")["dir"],
                      "vmstate")
    with open(vmstate, "r+b") as f:
        f.seek(8)
        saved = f.read(8)
        f.seek(8)
        f.write(b"\xff" * 8)
    p = qsnap("restore", vm.dir, "S", ok=False)
    check(p.returncode == 1 and "restoring 'S' failed; the VM is stopped" in p.stderr,
          f"restore of a damaged machine state: {p.returncode} {p.stderr!r}")
    check(vm.status()["state"] == "stopped", f"state after it: {vm.status()['state']}")
    with open(vmstate, "r+b") as f:
        f.seek(8)
        f.write(saved)
    vm.serial.close()
    vm.serial = None
    assert_consistent(vm, expected)


def snap_layer_of(vm, name, drive="vda"):
    return next(s for s in vm.state()["snapshots"] if s["name"] == name)["drives"][drive]


def stage_of(parent, pattern):
    return glob.glob(os.path.join(parent, pattern))


def wait_stage(parent, pattern, proc, nbytes=1 << 20):
    """Until a staging entry of pattern holds nbytes (the command is midway)."""
    def written():
        total = 0
        for top in stage_of(parent, pattern):
            for root, _, files in os.walk(top):
                for f in files:
                    try:
                        total += os.path.getsize(os.path.join(root, f))
                    except OSError:
                        pass
            if os.path.isfile(top):
                total += os.path.getsize(top)
        return total >= nbytes
    return wait_for(written, f"{pattern} to fill", proc=proc)


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_staging_of_killed_commands_is_swept(t):
    """An export and an import SIGKILLed midway leave their staging entries
    (.NAME.qsnap-partial-PID, .NAME.qsnap-import-PID, which can hold
    gigabytes); the next export to that output and import into that name
    remove them. A pull into an existing VM stages in VMDIR/.qsnap-pull-PID:
    the next command that takes the VM's lock removes one whose process is
    gone (made here by hand; a live one stays)."""
    vm = t.vm(memory="512M")
    vm.boot()
    fill_ram(vm)
    vm.save("S")
    tar = os.path.join(t.dir, "s.tar")
    proc = start_qsnap("export", vm.dir, "S", tar)
    check(wait_stage(t.dir, ".s.tar.qsnap-*", proc, 8 << 20),
          "the export ended before it could be interrupted")
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    check(stage_of(t.dir, ".s.tar.qsnap-*"), "the killed export left nothing to sweep")
    qsnap("export", vm.dir, "S", tar)
    check(not stage_of(t.dir, ".s.tar.qsnap-*"),
          f"export left {stage_of(t.dir, '.s.tar.qsnap-*')}")

    new = os.path.join(t.dir, "imported")
    proc = start_qsnap("import", new, tar)
    check(wait_stage(t.dir, ".imported.qsnap-import-*", proc, 8 << 20),
          "the import ended before it could be interrupted")
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    check(stage_of(t.dir, ".imported.qsnap-import-*"), "the killed import left nothing to sweep")
    qsnap("import", new, tar)
    check(not stage_of(t.dir, ".imported.qsnap-import-*"),
          f"import left {stage_of(t.dir, '.imported.qsnap-import-*')}")

    gone, alive = dead_pid(), os.getpid()
    for pid in (gone, alive):
        os.makedirs(vm.path(f".qsnap-pull-{pid}", "layers"))
        with open(vm.path(f".qsnap-pull-{pid}", "layers", "vda-7.qcow2"), "wb") as f:
            f.write(b"x" * 4096)
    qsnap("list", vm.dir)  # reads without the lock: sweeps nothing
    check(os.path.exists(vm.path(f".qsnap-pull-{gone}")), "list (no lock) swept a stage")
    vm.save("T")
    check(not os.path.exists(vm.path(f".qsnap-pull-{gone}")),
          "the stage of a pull whose process is gone is left")
    check(os.path.exists(vm.path(f".qsnap-pull-{alive}")),
          "the stage of a live process was removed")


# ---- a full disk -----------------------------------------------------------


def test_disk_full_during_save(t):
    mnt = os.path.join(t.dir, "vm")
    os.makedirs(mnt)
    # Room for one snapshot of a freshly booted guest, not for a second one
    # with BIG_MIB more of RAM in use.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=180M,mode=0755", "tmpfs", mnt],
                   check=True)
    try:
        vm = t.vm(memory="512M")
        vm.boot()
        expected = {"early": mark(vm, "early")}
        vm.save("early")
        fill_ram(vm)
        now = view(vm)
        pid = vm.qemu_pid()
        p = qsnap("save", vm.dir, "toobig", ok=False)
        check(p.returncode == 1, f"save on a full disk: exit {p.returncode}: {p.stderr}")
        check("No space left on device" in p.stderr and "nothing was saved" in p.stderr,
              f"unclear error: {p.stderr}")
        check(vm.qemu_pid() == pid and vm.status()["state"] == "running", "the VM stopped")
        check(view(vm) == now, "the guest changed")
        check(not glob.glob(vm.path("snapshots", ".partial-*")), "partial files kept")
        free = os.statvfs(mnt)
        check(free.f_bavail * free.f_frsize > 50 << 20, "the failed save's files fill the disk")
        # The same with RAM going into a file of its own, written by qsnap:
        # QEMU sees only a broken pipe, and the error says why.
        qsnap("config", vm.dir, "--save-path", "ram-file")
        p = qsnap("save", vm.dir, "toobig", ok=False)
        check(p.returncode == 1 and "cannot write the RAM file: No space left on device"
              in p.stderr and "nothing was saved" in p.stderr, f"ram-file: {p.stderr}")
        check(vm.qemu_pid() == pid and view(vm) == now, "ram-file: the VM changed")
        check(not glob.glob(vm.path("snapshots", ".partial-*")), "ram-file: partial files kept")
        qsnap("config", vm.dir, "--save-path", "auto")
        # The VM goes on: once there is room (the guest's freed pages are
        # not zero, so make the disk bigger), a change and a save work.
        subprocess.run(["mount", "-o", "remount,size=800M", mnt], check=True)
        expected["later"] = mark(vm, "later")
        vm.save("later")
        assert_consistent(vm, expected)
    finally:
        for vm in t.vms:
            vm.stop()
        subprocess.run(["umount", "-l", mnt])


# ---- damaged state files ----------------------------------------------------


def test_damaged_state_json(t):
    vm = t.vm()
    vm.boot()
    expected = {"a": mark(vm, "a")}
    vm.save("a")
    now = view(vm)
    pid = vm.qemu_pid()
    for fname in ("state.json", "vm.json"):
        path = vm.path(fname)
        with open(path, "rb") as f:
            good = f.read()
        damages = {
            "empty": b"",
            "truncated": good[: len(good) // 2],
            "not JSON": b"{this is not json\n",
            "not an object": b"[1, 2]\n",
        }
        if fname == "state.json":
            st = json.loads(good)
            damages["unknown version"] = json.dumps({**st, "version": 99}).encode()
            esc = json.loads(good)
            esc["layers"][0]["path"] = "layers/../../outside.qcow2"
            damages["path outside"] = json.dumps(esc).encode()
        else:
            damages["bad memory"] = json.dumps({**json.loads(good), "memory": "lots"}).encode()
        for what, data in damages.items():
            with open(path, "wb") as f:
                f.write(data)
            for cmd in (["status"], ["list"], ["save", "b"], ["restore", "a"], ["stop"],
                        ["start"], ["delete", "a"], ["qmp", "query-status"]):
                p = qsnap(cmd[0], vm.dir, *cmd[1:], ok=False)
                check(p.returncode == 1, f"{fname} {what}: qsnap {cmd[0]} exited {p.returncode}")
                check(path in p.stderr and one_line(p.stderr),
                      f"{fname} {what}: qsnap {cmd[0]} does not name {path} in one line: "
                      f"{p.stderr!r}")
                with open(path, "rb") as f:
                    check(f.read() == data, f"{fname} {what}: qsnap {cmd[0]} changed the file")
        with open(path, "wb") as f:
            f.write(good)
    check(vm.qemu_pid() == pid and view(vm) == now, "the running VM was touched")
    assert_consistent(vm, expected)


def test_state_json_that_loops_or_names_anyone(t):
    """Entries that are each well formed but do not fit together: a backing
    cycle (every walk of that chain would loop and grow without end), a
    backing that names no layer, and a QEMU known only by a pid (start time
    0) that is an unrelated live process. Every command says which field of
    which file, leaves the file as it is, and never signals that process."""
    vm = t.vm()
    vm.boot()
    vm.save("a")
    vm.save("b")
    vm.stop()
    path = vm.path("state.json")
    with open(path, "rb") as f:
        good = f.read()
    st = json.loads(good)
    layers = st["layers"]
    check(len(layers) >= 3 and all(ly["drive"] == "vda" for ly in layers),
          f"expected a chain of three layers: {layers}")
    bottom = next(i for i, ly in enumerate(layers) if "backing" not in ly)
    top = st["active"]["vda"]
    cycle = json.loads(good)
    cycle["layers"][bottom]["backing"] = top
    dangling = json.loads(good)
    dangling["layers"][bottom]["backing"] = "layers/vda-99.qcow2"
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        anyone = {**json.loads(good), "qemu": {"pid": bystander.pid, "start_time": 0}}
        damages = {
            "backing cycle": (cycle, f"bad 'layers[{bottom}].backing'", "form a cycle"),
            "backing of no layer": (dangling, f"bad 'layers[{bottom}].backing'",
                                    "layers/vda-99.qcow2"),
            "pid without start time": (anyone, "bad 'qemu.start_time'", str(bystander.pid)),
        }
        for what, (data, field, detail) in damages.items():
            text = json.dumps(data).encode()
            with open(path, "wb") as f:
                f.write(text)
            for cmd in (["status"], ["list"], ["stop", "--timeout", "1"], ["start"],
                        ["save", "c"], ["restore", "a"], ["delete", "a"], ["verify", "a"],
                        ["compact"]):
                p = qsnap(cmd[0], vm.dir, *cmd[1:], ok=False, timeout=30)
                check(p.returncode == 1, f"{what}: qsnap {cmd[0]} exited {p.returncode}")
                check(path in p.stderr and field in p.stderr and detail in p.stderr
                      and one_line(p.stderr),
                      f"{what}: qsnap {cmd[0]} does not say {field} ({detail}) of {path}: "
                      f"{p.stderr!r}")
                with open(path, "rb") as f:
                    check(f.read() == text, f"{what}: qsnap {cmd[0]} changed the file")
                check(bystander.poll() is None and process_running(bystander.pid),
                      f"{what}: qsnap {cmd[0]} ended the unrelated process {bystander.pid}")
    finally:
        bystander.kill()
        bystander.wait()
    with open(path, "wb") as f:
        f.write(good)
    vm.boot()
    check(sorted(s["name"] for s in vm.snapshots()) == ["a", "b"], "snapshots lost")


def test_long_chain_save_killed(t):
    """A chain of 40 layers (--max-chain 100), a save SIGKILLed while it
    writes: the next command finds which layer QEMU writes to (a flat block
    query: the nested one is deeper than the QMP parser goes past about 25
    layers) and recovers."""
    vm = t.vm(memory="512M")
    qsnap("config", vm.dir, "--max-chain", "100")
    vm.boot()
    # One snapshot replaced 40 times: the chain grows, the disk does not.
    for i in range(40):
        vm.save("s", "--replace")
    st = vm.state()
    check(len(st["layers"]) >= 40, f"{len(st['layers'])} layers after 40 saves")
    fill_ram(vm)
    expected = {"s": mark(vm, "s")}
    vm.save("s", "--replace")
    now = view(vm)
    pid = vm.qemu_pid()
    proc = start_qsnap("save", vm.dir, "doomed")
    check(wait_for(lambda: partial_vmstate_written(vm), "the save to write", proc=proc),
          "the save ended before it could be interrupted")
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    check("pending" in vm.state(), "state.json does not record the interrupted save")
    p = vm.save("after")
    check("saved after" in p.stdout, p.stdout)
    check(vm.qemu_pid() == pid, "QEMU was replaced")
    check(vm.status()["state"] == "running", f"state {vm.status()['state']}")
    check(view(vm) == now, "the guest changed while the save was undone")
    expected["after"] = now
    assert_consistent(vm, expected)


# ---- two commands at once ----------------------------------------------------


def test_two_commands_at_once(t):
    vm = t.vm(memory="512M")
    vm.boot()
    fill_ram(vm)
    now = mark(vm, "both")
    first = start_qsnap("save", vm.dir, "first")
    check(wait_for(lambda: glob.glob(vm.path("snapshots", ".partial-*")), "the save to start",
                   proc=first), "the first save ended before the test could race it")
    # No waiting: fails at once, clearly.
    p = qsnap("save", vm.dir, "nowait", "--lock-timeout", "0", ok=False)
    check(p.returncode == 1 and "busy" in p.stderr and "--lock-timeout" in p.stderr
          and one_line(p.stderr), f"--lock-timeout 0: {p.stderr!r}")
    # Waiting: runs after the first.
    second = start_qsnap("save", vm.dir, "second")
    # Reading never waits for the lock.
    t0 = time.time()
    st = vm.status()
    check(time.time() - t0 < 10, "status waited for the save")
    check(st["state"] == "running" and st.get("qemu_status") in ("busy", "paused",
                                                                   "finish-migrate",
                                                                   "postmigrate", "running"),
          f"status during a save: {st}")
    rc, out, err = finish(first)
    check(rc == 0, f"the first save failed: {err}")
    rc, out, err = finish(second)
    check(rc == 0, f"the waiting save failed: {err}")
    names = [s["name"] for s in vm.snapshots()]
    check(names == ["first", "second"], f"snapshots: {names}")
    check(not any(s["name"] == "nowait" for s in vm.snapshots()), "nowait was saved")
    assert_consistent(vm, {"first": now, "second": now})
