"""Shared-RAM mode: RAM out of the migration stream, eager and lazy restore."""

import glob
import json
import os
import subprocess

from harness import check, file_digest, qsnap
from test_snapshots import fill_guest, guest_view


def shared_vm(t, **kw):
    return t.vm(extra_init=["--ram-mode", "shared", *kw.pop("extra_init", [])], **kw)


def test_shared_save_leaves_ram_out_of_the_stream(t):
    vm = shared_vm(t)
    vm.boot()
    saved = fill_guest(vm, "s", mib=32)
    vm.save("A")
    snap = vm.snapshots()[0]
    check(snap["mode"] == "shared", f"mode {snap['mode']}")
    vmstate = os.path.getsize(vm.path("snapshots", "A", "vmstate"))
    ram = vm.path("snapshots", "A", "ram")
    # Device state only in the stream; RAM in its own sparse file.
    check(vmstate < 8 << 20, f"the stream holds RAM: {vmstate} bytes")
    check(os.path.getsize(ram) == 256 << 20, "the RAM file is not the guest's RAM size")
    used = os.stat(ram).st_blocks * 512
    check(32 << 20 < used < 200 << 20, f"RAM file holds {used} bytes: holes not kept")
    # The copy staged in the RAM directory while the guest was paused is gone.
    ramdir = os.path.dirname(vm.status()["ram_file"])
    check(os.listdir(ramdir) == ["ram"], f"left in the RAM directory: {os.listdir(ramdir)}")
    qsnap("verify", vm.dir, "A")
    vm.sh("X=changed; rm /tmp/ram.bin")
    vm.restore("A")
    check(guest_view(vm) == saved, "eager restore gave another state")
    st = vm.status()
    check(st["ram_mode"] == "shared" and not st["ram_lazy"], f"status {st}")


def test_shared_tree_eager_and_lazy(t):
    vm = shared_vm(t)
    vm.boot()
    a = fill_guest(vm, "a", mib=4)
    vm.sh("echo a > /mnt/who; sync")
    vm.save("A")
    b = fill_guest(vm, "b", mib=4)
    vm.sh("echo b > /mnt/who; sync")
    vm.save("B")
    vm.restore("A", "--lazy")
    check(vm.status()["ram_lazy"], "status does not say the RAM is mapped lazily")
    check(guest_view(vm) == a and vm.sh("cat /mnt/who") == "a", "lazy A wrong")
    # A save after a lazy restore (RAM goes in the stream) and its restore.
    c = fill_guest(vm, "c", mib=4)
    vm.sh("echo c > /mnt/who; sync")
    vm.save("C")
    check({s["name"]: s["mode"] for s in vm.snapshots()}["C"] == "stream",
          "the save after a lazy restore claims to be shared")
    vm.restore("B", "--lazy")
    check(guest_view(vm) == b and vm.sh("cat /mnt/who") == "b", "lazy B wrong")
    vm.restore("C")
    check(guest_view(vm) == c and vm.sh("cat /mnt/who") == "c", "C (stream, into shared) wrong")
    check(not vm.status()["ram_lazy"], "eager restore left RAM lazy")
    # From the eagerly restored C, saves are shared (fast) again.
    d = fill_guest(vm, "d", mib=4)
    vm.save("D")
    check({s["name"]: s["mode"] for s in vm.snapshots()}["D"] == "shared", "D not shared")
    vm.restore("A")
    check(guest_view(vm) == a, "eager A wrong")
    vm.restore("D", "--lazy")
    check(guest_view(vm) == d, "lazy D wrong")


def test_lazy_restore_never_writes_the_snapshot(t):
    vm = shared_vm(t)
    vm.boot()
    fill_guest(vm, "l", mib=16)
    vm.save("L")
    ram = vm.path("snapshots", "L", "ram")
    before = file_digest(ram)
    views = []
    for _ in range(2):
        vm.restore("L", "--lazy")
        views.append(guest_view(vm))
        # Scribble over the guest's memory: private copies, never the file.
        vm.sh("dd if=/dev/urandom of=/tmp/ram.bin bs=1M count=16 2>/dev/null; X=scribbled")
    check(views[0] == views[1], "two lazy restores of one snapshot differ")
    check(file_digest(ram) == before, "the snapshot's RAM file was modified")


def test_shared_and_stream_snapshots_cross_modes(t):
    vm = t.vm()  # stream mode
    vm.boot()
    s = fill_guest(vm, "stream", mib=4)
    vm.save("S")
    vm.stop()
    qsnap("config", vm.dir, "--ram-mode", "shared")
    vm.boot()
    h = fill_guest(vm, "shared", mib=4)
    vm.save("H")
    vm.restore("S")
    check(guest_view(vm) == s, "stream snapshot into a shared-mode VM")
    vm.stop()
    qsnap("config", vm.dir, "--ram-mode", "stream")
    p = qsnap("start", vm.dir, "--from", "H")
    vm.connect()
    check(guest_view(vm) == h, "shared snapshot into a stream-mode VM")
    p = qsnap("config", vm.dir, "--ram-mode", "shared", ok=False)
    check(p.returncode != 0 and "running" in p.stderr, "config changed a running VM")


def test_memory_size_change_is_refused(t):
    vm = shared_vm(t)
    vm.boot()
    vm.save("A")
    vm.stop()
    with open(vm.path("vm.json")) as f:
        d = json.load(f)
    d["memory"] = 512 << 20
    with open(vm.path("vm.json"), "w") as f:
        json.dump(d, f)
    p = qsnap("restore", vm.dir, "A", ok=False)
    check(p.returncode != 0 and "256 MiB" in p.stderr and "512 MiB" in p.stderr, p.stderr)
    check(vm.status()["state"] == "stopped", "a QEMU was started anyway")


def test_foreign_shared_memory_is_refused(t):
    img = os.path.join(t.dir, "d.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "16M"], check=True)
    p = qsnap("init", os.path.join(t.dir, "vm"), "--drive", f"d={img}", "--ram-mode", "shared",
              "--", "-object", "memory-backend-memfd,id=m1,size=64M,share=on", ok=False)
    check(p.returncode != 0 and "memory-backend-memfd" in p.stderr, p.stderr)
    check(not os.path.exists(os.path.join(t.dir, "vm")), "init left a directory")


def test_no_space_for_the_snapshot(t):
    """The VM directory on a small filesystem: the RAM copy cannot fit."""
    small = os.path.join(t.dir, "small")
    os.mkdir(small)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160M", "tmpfs", small], check=True)
    try:
        vm = shared_vm(t, name="small/vm")
        vm.boot()
        vm.save("first")
        vm.sh("dd if=/dev/urandom of=/tmp/big bs=1M count=80 2>/dev/null")
        p = qsnap("save", vm.dir, "toobig", ok=False)
        check(p.returncode != 0 and "free" in p.stderr, f"no clear error: {p.stderr}")
        check([s["name"] for s in vm.snapshots()] == ["first"], "a partial snapshot is listed")
        check(not glob.glob(vm.path("snapshots", ".partial-*")), "partial files left")
        check(vm.status()["state"] == "running", "the VM is not running after the failed save")
        check(vm.sh("echo alive") == "alive", "the guest does not answer")
        vm.stop()
    finally:
        subprocess.run(["umount", "-l", small])


def test_no_space_in_the_ram_directory(t):
    ramdir = os.path.join(t.dir, "ramdir")
    os.mkdir(ramdir)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", ramdir], check=True)
    try:
        vm = t.vm()
        vm.boot()
        fill_guest(vm, "r", mib=100)
        vm.save("R")
        vm.stop()
        qsnap("config", vm.dir, "--ram-mode", "shared", "--ram-dir", ramdir)
        p = qsnap("start", vm.dir, "--from", "R", ok=False)
        # The guest's RAM cannot fit in the RAM directory: refused up front.
        check(p.returncode != 0 and "free" in p.stderr and ramdir in p.stderr, p.stderr)
        check(vm.status()["state"] == "stopped", "state after the failed restore")
        check(os.listdir(ramdir) == [], f"RAM files left behind: {os.listdir(ramdir)}")
    finally:
        subprocess.run(["umount", "-l", ramdir])
