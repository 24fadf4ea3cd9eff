"""import qsnap against the test guest: every call, the exceptions and their
errno, progress callbacks (also one that raises), the GIL released during
a long call, and the package as meson installs it."""

import errno
import glob
import os
import subprocess
import sys
import threading
import time

import pytest

import qsnap
from conftest import BUILD, ROOT, boot, console, create


def test_version():
    assert qsnap.version() == "1.0.0"


def test_errors_carry_errno_and_sentence(vm, tmp_path, base):
    with pytest.raises(qsnap.NotFound) as e:
        vm.restore("nope")
    assert e.value.errno == errno.ENOENT
    assert "snapshot 'nope' not found" in e.value.message and str(e.value) == e.value.message
    with pytest.raises(qsnap.Exists) as e:
        create(tmp_path, base)  # the same directory again
    assert e.value.errno == errno.EEXIST and "not empty" in str(e.value)
    with pytest.raises(qsnap.Invalid) as e:
        create(tmp_path, base, name="vm2", memory="lots")
    assert e.value.errno == errno.EINVAL and "lots" in str(e.value)
    assert not (tmp_path / "vm2").exists()
    with pytest.raises(qsnap.Invalid):
        vm.save("../escape")
    # The lock: a second handle does not wait with lock_timeout=0.
    with pytest.raises(qsnap.Busy) as e:
        qsnap.VM.open(vm.path, lock_timeout=0)
    assert e.value.errno == errno.EBUSY and "busy" in str(e.value)
    # Read-only handles take no lock.
    with qsnap.VM.open(vm.path, readonly=True) as ro:
        assert ro.status().state == "stopped"
    assert isinstance(e.value, qsnap.Error)


def test_definition_and_status(vm, base):
    assert vm.definition("memory") == str(256 << 20)
    assert vm.definition("drive").startswith(f"vda={base}")
    assert vm.definition("cpu") is None
    st = vm.status()
    assert st.state == "stopped" and st.pid == 0 and st.snapshots == 0
    assert [d.id for d in st.drives] == ["vda"]
    assert st.drives[0].chain[0] == str(base) and len(st.drives[0].chain) == 2
    with pytest.raises(qsnap.Invalid):
        vm.definition("colour")


def test_save_restore_round_trip(vm):
    seen = []
    sh = boot(vm)
    sh.sh("X=saved-$RANDOM; echo disk > /mnt/f; sync")
    x = sh.sh("echo $X")
    stats = vm.save("one", progress=seen.append)
    assert stats.bytes > 0 and stats.total > 0 and stats.mode == "stream"
    # Precopy where QEMU sees every guest write meanwhile: under KVM, or
    # on QEMU >= 9.0 (under TCG an older one loses some).
    sound = vm.qmp("query-kvm")["enabled"] or vm.qmp("query-version")["qemu"]["major"] >= 9
    assert stats.path in ("stream", "mapped-ram") and stats.precopy is sound
    assert "cut" in [p[0] for p in stats.phases]
    assert any(p.phase == "save" and p.finished for p in seen)
    assert all(isinstance(p, qsnap.Progress) for p in seen)
    sh.sh("X=changed; rm /mnt/f; sync")
    seen.clear()
    vm.restore("one", progress=seen.append)
    assert any(p.phase == "restore" for p in seen)
    sh = console(vm)
    assert sh.sh("echo $X") == x and sh.sh("cat /mnt/f") == "disk"
    live = vm.save("two", live=True, compress=3)
    assert live.live
    snaps = vm.snapshots()
    assert [s.name for s in snaps] == ["one", "two"]
    assert snaps[1].parent == "one" and snaps[1].compressed and snaps[1].current
    assert snaps[0].was_running and snaps[0].size > 0 and snaps[0].mode == "stream"
    st = vm.status()
    assert st.state == "running" and st.current == "two" and st.pid > 0
    assert vm.qmp("query-status")["status"] == "running"
    with pytest.raises(qsnap.Exists):
        vm.save("one")
    vm.save("one", replace=True)
    vm.delete("two")
    assert [s.name for s in vm.snapshots()] == ["one"]
    assert snaps[0].ram_deltas == 0 and snaps[0].ram_after is None
    with pytest.raises(qsnap.Invalid, match="no older deltas"):
        vm.fold("one")
    vm.stop()
    assert vm.status().state == "stopped"
    vm.start(snapshot="one")
    assert console(vm).sh("echo $X") == x


def test_progress_callback_that_raises(vm):
    boot(vm)
    calls = []

    def fail(p):
        calls.append(p)
        raise RuntimeError("stop reporting")

    with pytest.raises(RuntimeError, match="stop reporting"):
        vm.save("s", progress=fail)
    # Called once, not again after it raised; the save itself ran to its
    # end (an exception in a callback does not cancel; VM.cancel() does).
    assert len(calls) == 1
    assert [s.name for s in vm.snapshots()] == ["s"]


def test_gil_released_during_a_call(vm):
    boot(vm)
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(1)
            done.wait(0.01)

    t = threading.Thread(target=tick)
    vm.save("warm")
    t.start()
    n0 = len(ticks)
    vm.restore("warm")  # seconds in the library
    done.set()
    t.join()
    assert len(ticks) - n0 > 5, "no other Python thread ran during qsnap_vm_restore"


def cancel_once_working(vm):
    """A progress callback, and a thread that cancels vm from outside once
    the call reported bytes done. The callback waits until the other thread
    has cancelled, so that the call cannot end first (a restore from the
    page cache can take less time than a thread switch under load)."""
    working, cancelled = threading.Event(), threading.Event()

    def progress(p):
        if p.done > 0 and not working.is_set():
            working.set()
            cancelled.wait(60)

    def cancel():
        if working.wait(300):
            vm.cancel()
            cancelled.set()

    t = threading.Thread(target=cancel)
    t.start()
    return progress, t


def test_cancel_from_another_thread(vm):
    sh = boot(vm)
    sh.sh("X=kept-$RANDOM; dd if=/dev/urandom of=/tmp/big bs=1M count=100 2>/dev/null",
          timeout=300)
    x = sh.sh("echo $X")
    vm.save("a")
    # A save: no snapshot, the guest runs on as it was.
    progress, t = cancel_once_working(vm)
    t0 = time.monotonic()
    with pytest.raises(qsnap.Cancelled) as e:
        vm.save("b", compress=19, progress=progress)
    t.join()
    assert e.value.errno == errno.ECANCELED and "cancelled" in str(e.value)
    assert "nothing was saved" in str(e.value)
    assert time.monotonic() - t0 < 120
    assert [s.name for s in vm.snapshots()] == ["a"]
    assert vm.status().state == "running"
    assert console(vm).sh("echo $X") == x
    # A restore: the VM is stopped, its snapshot intact.
    sh.sh("X=changed")
    progress, t = cancel_once_working(vm)
    with pytest.raises(qsnap.Cancelled):
        vm.restore("a", progress=progress)
    t.join()
    assert vm.status().state == "stopped"
    vm.restore("a")
    assert console(vm).sh("echo $X") == x
    # A cancellation while nothing runs ends the next call, and only it.
    vm.cancel()
    with pytest.raises(qsnap.Cancelled):
        vm.save("c")
    assert [s.name for s in vm.snapshots()] == ["a"]
    vm.save("c")
    vm.stop()
    vm.close()
    vm.cancel()  # a closed VM: nothing to cancel


def test_closed_handle(vm):
    path = vm.path
    vm.close()
    with pytest.raises(ValueError):
        vm.status()
    with qsnap.VM.open(path) as again:
        assert again.path == path
    assert again._vm is None


def test_meson_install_puts_the_package_in_pythons_path(tmp_path):
    dest = tmp_path / "dest"
    subprocess.run(["meson", "install", "-C", BUILD, "--destdir", str(dest), "--no-rebuild",
                    "--quiet"], check=True, capture_output=True)
    inits = glob.glob(str(dest / "**" / "qsnap" / "__init__.py"), recursive=True)
    assert len(inits) == 1, inits
    pkgdir = os.path.dirname(os.path.dirname(inits[0]))
    # The directory is in Debian's python3's sys.path once DESTDIR is gone.
    path = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('\\n'.join(sys.path))"],
                          capture_output=True, text=True).stdout.split()
    assert pkgdir[len(str(dest)):] in path
    libs = glob.glob(str(dest / "**" / "libqsnap.so.1"), recursive=True)
    assert len(libs) == 1
    env = {k: v for k, v in os.environ.items() if k not in ("QSNAP_LIBRARY", "PYTHONPATH")}
    env.update(PYTHONPATH=pkgdir, LD_LIBRARY_PATH=os.path.dirname(libs[0]))
    p = subprocess.run(["/usr/bin/python3", "-c", "import qsnap; print(qsnap.version(), "
                        "qsnap.__file__)"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("1.0.0 " + pkgdir)
    # pytest finds the installed plugin by itself, and -p naming it too
    # loads it once.
    for extra in ([], ["-p", "qsnap.pytest_plugin"]):
        p = subprocess.run(["/usr/bin/python3", "-m", "pytest", "-p", "no:cacheprovider"] + extra
                           + ["--help"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "--qsnap-vm" in p.stdout, p.stdout


LOOP = """
import sys, qsnap
base, kernel, initrd, accel, qemu, d = sys.argv[1:]
for i in range(2):
    with qsnap.VM.create(f"{d}/vm{i}", drives={"vda": base}, memory="256M", kernel=kernel,
                         initrd=initrd, accel=accel, qemu=qemu or None) as vm:
        vm.status(), vm.snapshots(), vm.definition("drive")
        try:
            vm.restore("nope")
        except qsnap.NotFound:
            pass
        vm.start()
        vm.save("a", progress=lambda p: None)
        vm.restore("a")
        vm.snapshots(), vm.status(), vm.qmp("query-status")
        vm.stop()
"""


def test_no_leaks_under_valgrind(tmp_path, base):
    """What the library hands out, the binding frees: a create, start,
    save, restore, list, status, stop loop in Python under valgrind leaves
    no block definitely lost and no invalid access."""
    from conftest import ACCEL, GUEST, QEMU
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    env = {**os.environ, "PYTHONMALLOC": "malloc",
           "PYTHONPATH": os.path.join(ROOT, "python")}
    p = subprocess.run(["valgrind", "--leak-check=full", "--show-leak-kinds=definite",
                        "--errors-for-leak-kinds=definite", "--error-exitcode=9",
                        sys.executable, str(script), str(base),
                        os.path.join(GUEST, "vmlinuz"), os.path.join(GUEST, "initramfs.img"),
                        ACCEL, QEMU or "", str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-6000:]
    assert "definitely lost: 0 bytes" in p.stderr


def test_console_run_expect_and_restores(vm):
    boot(vm)
    with vm.console() as con:
        assert con.run("echo hello") == ("hello", 0)
        assert con.run("false")[1] == 1
        assert con.run("printf 'a\\nb\\n'") == ("a\nb", 0)
        con.run("Y=before")
        vm.save("s")
        con.run("Y=after")
        vm.restore("s")
        # The restore replaced QEMU: the console follows without being told.
        assert con.run("echo $Y") == ("before", 0)
        con.sendline("echo mark-$((6*7))")
        # Up to the end of the line: the digits may arrive in two reads.
        assert con.expect(r"mark-(\d+)\r?\n").group(1) == b"42"
        with pytest.raises(TimeoutError):
            con.expect("never printed", timeout=0.5)
