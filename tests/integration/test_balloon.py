"""A snapshot's RAM file is never written after its save.

A lazily restored guest maps its snapshot's RAM file copy-on-write; when
the guest gives memory back through a balloon (free page reporting, or
inflation by QMP), QEMU punches holes into the file behind the mapping
unless it opened the file read-only (readonly=on,rom=off, QEMU 8.2+). A
QEMU without that restores such a VM eagerly. verify and eager restores
check the RAM file's checksum."""

import json
import os
import re
import subprocess
import time

from harness import QEMU, check, file_digest, qsnap

MEMORY = 512 << 20
BIG_MIB = 160


def qemu_opens_ram_readonly():
    """What the QEMU under test says about itself: does memory-backend-file
    have rom (readonly=on,rom=off)?"""
    out = subprocess.run([QEMU or "qemu-system-x86_64", "-object", "memory-backend-file,help"],
                         capture_output=True, text=True).stdout
    return re.search(r"^\s*rom=", out, re.M) is not None


def balloon_vm(t):
    return t.vm(memory="512M", extra_init=[
        "--ram-mode", "shared", "--", "-device", "virtio-balloon-pci,free-page-reporting=on"])


def ram_file(vm, snap):
    path = vm.path("snapshots", snap, "ram")
    st = os.stat(path)
    return {"size": st.st_size, "allocated": st.st_blocks * 512, "sha256": file_digest(path)}


def fill(vm):
    """Random data in the guest's tmpfs; returns its md5 as the guest sees it."""
    vm.sh(f"dd if=/dev/urandom of=/tmp/big bs=1M count={BIG_MIB} 2>/dev/null", timeout=120)
    return vm.sh("md5sum /tmp/big | cut -d' ' -f1")


def qmp(vm, cmd, args=None):
    p = qsnap("qmp", vm.dir, cmd, *([json.dumps(args)] if args else []))
    return json.loads(p.stdout) if p.stdout.strip() else None


def balloon_to(vm, target, timeout=60):
    """Ask the guest's balloon driver for target bytes of RAM; wait until it
    got there."""
    qmp(vm, "balloon", {"value": target})
    deadline = time.time() + timeout
    while time.time() < deadline:
        if abs(qmp(vm, "query-balloon")["actual"] - target) < (8 << 20):
            return
        time.sleep(0.5)
    raise AssertionError(f"the balloon did not reach {target >> 20} MiB in {timeout}s: "
                         f"{qmp(vm, 'query-balloon')}")


def check_mapping(vm, p, what):
    """The restore kept the RAM file out of QEMU's reach: opened read-only
    where QEMU can, else restored eagerly and said so."""
    cmdline = open(f"/proc/{vm.qemu_pid()}/cmdline", "rb").read().decode().split("\0")
    backend = next(a for a in cmdline if a.startswith("memory-backend-file"))
    if qemu_opens_ram_readonly():
        check(vm.status()["ram_lazy"], f"{what}: not lazy: {vm.status()}")
        check("readonly=on,rom=off" in backend, f"{what}: RAM not opened read-only: {backend}")
    else:
        check(not vm.status()["ram_lazy"], f"{what}: mapped lazily with a balloon: {backend}")
        check("share=on" in backend, f"{what}: not an eager copy: {backend}")
        check("restored 'full' eagerly" in p.stderr and "balloon" in p.stderr,
              f"{what}: no note that the restore was eager: {p.stderr!r}")


def give_memory_back(vm):
    """Free the data (free page reporting hands it to QEMU within seconds),
    then inflate the balloon to half of RAM and deflate it again."""
    vm.sh("rm /tmp/big; sync; echo 3 > /proc/sys/vm/drop_caches")
    time.sleep(8)
    balloon_to(vm, MEMORY // 2)
    balloon_to(vm, MEMORY)


def test_balloon_cannot_touch_a_lazily_mapped_snapshot(t):
    vm = balloon_vm(t)
    vm.boot()
    check(vm.sh("ls /sys/bus/virtio/drivers/virtio_balloon | grep -c virtio") == "1",
          "the guest has no virtio-balloon device")
    want = fill(vm)
    vm.save("full")
    saved = ram_file(vm, "full")
    check(saved["allocated"] > BIG_MIB << 20, f"the RAM file holds too little: {saved}")

    p = vm.restore("full", "--lazy")
    check_mapping(vm, p, "restore --lazy")
    check(vm.sh("md5sum /tmp/big | cut -d' ' -f1") == want, "lazy restore: data differs")
    give_memory_back(vm)
    check(ram_file(vm, "full") == saved,
          f"restore --lazy: the snapshot's RAM file changed: {saved} -> {ram_file(vm, 'full')}")

    vm.stop()
    p = qsnap("start", vm.dir, "--from", "full", "--lazy")
    vm.connect()
    check_mapping(vm, p, "start --from --lazy")
    give_memory_back(vm)
    check(ram_file(vm, "full") == saved,
          f"start --from: the snapshot's RAM file changed: {saved} -> {ram_file(vm, 'full')}")

    qsnap("verify", vm.dir, "full")
    vm.restore("full")
    check(vm.sh("md5sum /tmp/big | cut -d' ' -f1") == want, "eager restore: data differs")


def damage_check(vm, what):
    """verify names the damaged RAM file; an eager restore refuses it and the
    running VM goes on as it was."""
    ram = vm.path("snapshots", "full", "ram")
    p = qsnap("verify", vm.dir, "full", ok=False)
    check(p.returncode == 1, f"{what}: verify exit {p.returncode}: {p.stdout}{p.stderr}")
    check(ram in p.stdout and "snapshot 'full'" in p.stdout and "damaged" in p.stdout,
          f"{what}: verify does not name the file and the snapshot: {p.stdout!r}")
    pid = vm.qemu_pid()
    vm.sh("X=still-here")
    p = qsnap("restore", vm.dir, "full", ok=False)
    check(p.returncode == 1 and "does not match the checksum" in p.stderr and ram in p.stderr,
          f"{what}: restore of a damaged RAM file: exit {p.returncode}: {p.stderr!r}")
    check(vm.qemu_pid() == pid and vm.status()["state"] == "running",
          f"{what}: the running VM was touched: {vm.status()}")
    check(vm.sh('echo "$X"') == "still-here", f"{what}: the guest is not where it was")


def test_damaged_ram_file_is_refused(t):
    vm = t.vm(extra_init=["--ram-mode", "shared"])
    vm.boot()
    vm.sh("dd if=/dev/urandom of=/tmp/ram.bin bs=1M count=16 2>/dev/null")
    vm.save("full")
    qsnap("verify", vm.dir, "full")
    ram = vm.path("snapshots", "full", "ram")
    good = open(ram, "rb").read()
    # The first page that holds data, one byte flipped.
    off = next(i for i in range(0, len(good), 4096) if good[i:i + 4096].count(0) < 4096)
    off += good[off:off + 4096].index(next(b for b in good[off:off + 4096] if b))
    with open(ram, "r+b") as f:
        f.seek(off)
        f.write(bytes([good[off] ^ 0x01]))
    damage_check(vm, "one byte flipped")

    # Mended, then a hole punched where data was.
    with open(ram, "r+b") as f:
        f.seek(off)
        f.write(good[off:off + 1])
    qsnap("verify", vm.dir, "full")
    subprocess.run(["fallocate", "--punch-hole", "--offset", str(off & ~4095), "--length", "4096",
                    ram], check=True)
    check(os.stat(ram).st_size == len(good), "punching a hole changed the size")
    damage_check(vm, "a hole punched")

    # A snapshot saved before RAM checksums existed: noted, not damage.
    with open(ram, "r+b") as f:
        f.write(good)
    for path in (vm.path("state.json"), vm.path("snapshots", "full", "meta.json")):
        with open(path) as f:
            doc = json.load(f)
        snap = next(s for s in doc["snapshots"] if s["name"] == "full") if "snapshots" in doc else doc
        check("ram_checksum" in snap, f"{path} records no RAM checksum")
        del snap["ram_checksum"]
        with open(path, "w") as f:
            json.dump(doc, f)
    p = qsnap("verify", vm.dir, "full")
    check("RAM not checksummed" in p.stdout and ram in p.stdout,
          f"verify of a snapshot without a RAM checksum: {p.stdout!r}")
    p = qsnap("verify", "--json", vm.dir, "full")
    rep = json.loads(p.stdout)
    check(rep["ok"] and rep["notes"] and "RAM not checksummed" in rep["notes"][0]["note"],
          f"verify --json: {rep}")
