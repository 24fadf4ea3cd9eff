"""Publish, verify, export and import: a drive as one standalone image, the
files of snapshots checked, a snapshot moved to another VM directory."""

import glob
import json
import os
import shutil
import subprocess
import tarfile
import time

from harness import ACCEL, APPEND, GUEST, QEMU_ARGS, QSNAP, VM, check, qsnap
from test_snapshots import fill_guest, guest_view


def vm_on_base(t, name, base):
    """A VM whose drive vda is the image base (e.g. a published one)."""
    vm = VM.__new__(VM)
    vm.t, vm.dir, vm.serial = t, os.path.join(t.dir, name), None
    qsnap("init", vm.dir, "--drive", f"vda={base}", "--memory", "256M", "--accel", ACCEL,
          "--kernel", os.path.join(GUEST, "vmlinuz"),
          "--initrd", os.path.join(GUEST, "initramfs.img"), "--append", APPEND, *QEMU_ARGS)
    t.vms.append(vm)
    return vm


def img_check(path):
    p = subprocess.run(["qemu-img", "check", path], capture_output=True, text=True)
    check(p.returncode == 0, f"qemu-img check {path}: {p.stdout}{p.stderr}")


def img_info(path):
    return json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", path],
                                     capture_output=True, text=True, check=True).stdout)


def snap_layer(vm, name, drive="vda"):
    s = next(s for s in vm.state()["snapshots"] if s["name"] == name)
    return s["drives"][drive]


def publish_while_writing(t, compress):
    vm = t.vm()
    vm.boot()
    vm.sh("dd if=/dev/urandom of=/mnt/data bs=1M count=4 2>/dev/null; "
          "yes qsnap | head -c 8388608 > /mnt/text; sync")
    at_snapshot = vm.sh("md5sum /mnt/data | cut -d' ' -f1")
    vm.save("S")
    # The guest changes the disk after the snapshot and keeps writing while
    # the drive is published.
    vm.sh("dd if=/dev/urandom of=/mnt/data bs=1M count=4 2>/dev/null; sync")
    vm.sh("(while true; do dd if=/dev/urandom of=/mnt/busy bs=64k count=16 2>/dev/null; "
          "sync; done) >/dev/null 2>&1 & true")
    now = vm.sh("md5sum /mnt/data | cut -d' ' -f1")
    check(now != at_snapshot, "the change after the snapshot changed nothing")

    p = qsnap("publish", vm.dir, "vda", os.path.join(t.dir, "x.qcow2"), ok=False)
    check(p.returncode == 1 and "running" in p.stderr and "--at" in p.stderr,
          f"publishing a running VM without --at: {p.returncode} {p.stderr}")

    out = os.path.join(t.dir, "published.qcow2")
    args = ["--compress"] if compress else []
    p = qsnap("publish", vm.dir, "vda", out, "--at", "S", *args)
    check("published vda at S" in p.stdout, p.stdout)
    check(os.path.exists(out) and not glob.glob(os.path.join(t.dir, ".published*")),
          f"output or temporary files: {os.listdir(t.dir)}")
    img_check(out)
    info = img_info(out)
    check("backing-filename" not in info, f"the published image has a backing file: {info}")
    # Exactly the snapshot's disk: the frozen layer with its chain.
    p = subprocess.run(["qemu-img", "compare", "-U", out, vm.path(snap_layer(vm, "S"))],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"published image differs from the snapshot: {p.stdout}{p.stderr}")
    # The VM ran on all the time.
    check(vm.sh("echo alive") == "alive" and vm.status()["state"] == "running",
          "the VM did not keep running")
    # Publishing onto an existing file needs --replace.
    p = qsnap("publish", vm.dir, "vda", out, "--at", "S", ok=False)
    check(p.returncode == 1 and "--replace" in p.stderr, p.stderr)
    vm.stop()

    # A new VM with the published image as its base sees the snapshot's disk.
    vm2 = vm_on_base(t, "vm2", out)
    vm2.boot()
    check(vm2.sh("md5sum /mnt/data | cut -d' ' -f1") == at_snapshot,
          "the new VM does not see the data of the snapshot")
    check(vm2.sh("head -c 6 /mnt/text") == "qsnap", "the new VM's text file is wrong")
    return out, info


def test_publish_at_snapshot_while_running(t):
    publish_while_writing(t, compress=False)


def test_publish_compressed(t):
    out, info = publish_while_writing(t, compress=True)
    # 8 MiB of "qsnap\n" compresses well; uncompressed it takes 8 MiB.
    raw = os.path.join(t.dir, "plain.qcow2")
    qsnap("publish", os.path.join(t.dir, "vm"), "vda", raw, "--at", "S", "--quiet")
    plain = img_info(raw)["actual-size"]
    check(info["actual-size"] < plain - (4 << 20),
          f"compressed image not smaller: {info['actual-size']} vs {plain}")


def test_publish_stopped_vm_now(t):
    vm = t.vm()
    vm.boot()
    vm.sh("echo first > /mnt/f; sync")
    vm.save("S")
    vm.sh("echo second > /mnt/f; sync")
    vm.stop()
    out = os.path.join(t.dir, "now.raw")
    p = qsnap("publish", vm.dir, "vda", out, "--format", "raw", "--quiet")
    check(p.stdout == "" and p.stderr == "", f"--quiet printed: {p.stdout!r} {p.stderr!r}")
    check(img_info(out)["format"] == "raw", "not a raw image")
    active = vm.state()["active"]["vda"]
    p = subprocess.run(["qemu-img", "compare", out, vm.path(active)], capture_output=True,
                       text=True)
    check(p.returncode == 0, f"published image differs from the current disk: {p.stdout}")
    vm2 = vm_on_base(t, "vm2", out)
    vm2.boot()
    check(vm2.sh("cat /mnt/f") == "second", "the new VM does not see the current disk")
    # Usage errors name what to do.
    p = qsnap("publish", vm.dir, "nope", out + "2", ok=False)
    check(p.returncode == 1 and "'nope'" in p.stderr and "vda" in p.stderr, p.stderr)
    p = qsnap("publish", vm.dir, "vda", out + "2", "--at", "nope", ok=False)
    check(p.returncode == 1 and "not found" in p.stderr, p.stderr)
    p = qsnap("publish", vm.dir, "vda", out + "2", "--format", "raw", "--compress", ok=False)
    check(p.returncode == 2 and "qcow2" in p.stderr, p.stderr)
    check(not os.path.exists(out + "2"), "a failed publish left its output")


def test_verify_finds_damage(t):
    vm = t.vm()
    vm.boot()
    for name in ("A", "B", "C", "D"):
        fill_guest(vm, name.lower(), mib=2)
        vm.save(name)
    p = qsnap("verify", vm.dir)
    check("verified 4 snapshots" in p.stdout and "all intact" in p.stdout, p.stdout)
    ok = json.loads(qsnap("verify", vm.dir, "--json").stdout)
    check(ok["ok"] is True and ok["problems"] == [] and ok["snapshots"] == 4, f"{ok}")
    vm.stop()

    a = vm.path("snapshots", "A", "vmstate")
    with open(a, "r+b") as f:
        f.truncate(os.path.getsize(a) // 2)
    b = vm.path("snapshots", "B", "vmstate")
    with open(b, "r+b") as f:
        f.seek(os.path.getsize(b) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    # C's layer names another backing file than state.json records.
    c = vm.path(snap_layer(vm, "C"))
    subprocess.run(["qemu-img", "rebase", "-u", "-F", "qcow2",
                    "-b", os.path.basename(snap_layer(vm, "A")), c], check=True)
    d = vm.path(snap_layer(vm, "D"))
    os.unlink(d)

    expect = {
        "A": (a, "bytes"),
        "B": (b, "checksum"),
        "C": (c, "backing file"),
        "D": (d, "missing"),
    }
    for name, (path, word) in expect.items():
        p = qsnap("verify", vm.dir, name, ok=False)
        lines = p.stdout.strip().splitlines()
        check(p.returncode == 1, f"verify {name} exited {p.returncode}: {p.stdout}")
        check(len(lines) == 1 and lines[0].startswith(path + ":") and word in lines[0],
              f"verify {name}: expected one line about {path} ({word}):\n{p.stdout}")
        check("problem" in p.stderr, f"verify {name} stderr: {p.stderr}")
    rep = json.loads(qsnap("verify", vm.dir, "--json", ok=False).stdout)
    check(rep["ok"] is False and {q["file"] for q in rep["problems"]} == {a, b, c, d},
          f"verify --json: {rep['problems']}")
    p = qsnap("verify", vm.dir, "nope", ok=False)
    check(p.returncode == 1 and "not found" in p.stderr, p.stderr)


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xff]))


def leftovers(parent, name):
    return [f for f in os.listdir(parent) if f == name or f.startswith("." + name)]


def test_export_import_restore(t):
    vm = t.vm()
    vm.boot()
    saved = fill_guest(vm, "x", mib=4)
    vm.sh("echo on-disk > /mnt/file; sync")
    vm.save("S")
    vm.sh("X=later; echo later > /mnt/file; sync")
    tar = os.path.join(t.dir, "s.tar")
    # The VM keeps running while it is exported.
    p = qsnap("export", vm.dir, "S", tar)
    check("exported S" in p.stdout, p.stdout)
    check(vm.sh('echo "$X"') == "later", "the VM did not keep running")
    check(not [f for f in os.listdir(t.dir) if f.startswith(".s.tar")], "export left files")
    vm.stop()

    # Damaged archives are refused and leave nothing behind.
    with tarfile.open(tar) as tf:
        members = {m.name: m for m in tf.getmembers()}
    check(list(members)[0] == "qsnap-export.json", f"first entry: {list(members)[0]}")
    cases = {}
    vms = members["snapshot/vmstate"]
    bad = os.path.join(t.dir, "flipped.tar")
    shutil.copy(tar, bad)
    # A sparse entry (QEMU 10's mapped-ram file) stores only its data.
    stored = sum(n for _, n in vms.sparse) if vms.sparse else vms.size
    flip(bad, vms.offset_data + stored // 2)
    cases[bad] = "checksum"
    short = os.path.join(t.dir, "short.tar")
    shutil.copy(tar, short)
    with open(short, "r+b") as f:
        f.truncate(vms.offset_data + stored // 2)
    cases[short] = "damaged"
    foreign = os.path.join(t.dir, "foreign.tar")
    with tarfile.open(foreign, "w") as tf:
        tf.add(os.path.join(vm.dir, "vm.json"), arcname="vm.json")
    cases[foreign] = "not a qsnap export"
    garbage = os.path.join(t.dir, "garbage.tar")
    with open(garbage, "wb") as f:
        f.write(os.urandom(100000))
    cases[garbage] = "not a tar file"
    for path, word in cases.items():
        p = qsnap("import", os.path.join(t.dir, "imported"), path, ok=False)
        check(p.returncode == 1 and word in p.stderr and "nothing was imported" in p.stderr,
              f"import {os.path.basename(path)}: {p.returncode} {p.stderr}")
        check(leftovers(t.dir, "imported") == [],
              f"import of {os.path.basename(path)} left {leftovers(t.dir, 'imported')}")

    # The good archive, restored on a directory that needs nothing else: the
    # source VM and its base image are gone.
    shutil.rmtree(vm.dir)
    os.unlink(os.path.join(t.dir, "vm-vda-base.qcow2"))
    new = os.path.join(t.dir, "imported")
    p = qsnap("import", new, tar, *QEMU_ARGS)
    check("imported snapshot S" in p.stdout, p.stdout)
    with open(os.path.join(new, "vm.json")) as f:
        text = f.read()
    for path in json.loads(text)["drives"]:
        check(path["path"].startswith(new + "/"), f"drive outside the new VM: {path}")
    check(json.loads(text)["kernel"].startswith(new + "/"), "kernel outside the new VM")
    qsnap("verify", new)
    vm2 = VM.__new__(VM)
    vm2.t, vm2.dir, vm2.serial = t, new, None
    t.vms.append(vm2)
    vm2.restore("S")
    check(guest_view(vm2) == saved, f"imported guest differs: {guest_view(vm2)} != {saved}")
    check(vm2.sh("cat /mnt/file") == "on-disk", "imported disk differs")
    # Import never touches an existing VM.
    p = qsnap("import", new, tar, ok=False)
    check(p.returncode == 1 and "not empty" in p.stderr, p.stderr)


def test_publish_never_replaces_what_appeared_meanwhile(t):
    """OUTPUT did not exist when publish began and appears while it converts
    (another job, a user): without --replace it stays as it is and publish
    fails saying so (renameat2 RENAME_NOREPLACE, not lstat then rename)."""
    vm = t.vm(disk_size="256M")
    vm.boot()
    vm.sh("dd if=/dev/urandom of=/mnt/data bs=1M count=48 2>/dev/null; sync", timeout=120)
    vm.save("S")
    out = os.path.join(t.dir, "out.qcow2")
    proc = subprocess.Popen([QSNAP, "publish", vm.dir, "vda", out, "--at", "S", "--compress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not glob.glob(os.path.join(t.dir, ".out.qcow2.qsnap-partial-*")):
        check(proc.poll() is None, "publish ended before its temporary file was seen")
        check(time.time() < deadline, "publish made no temporary file")
        time.sleep(0.005)
    with open(out, "w") as f:
        f.write("someone else's\n")
    _, err = proc.communicate(timeout=600)
    check(proc.returncode == 1 and "appeared while it was being written" in err,
          f"publish over a file that appeared: {proc.returncode} {err}")
    with open(out) as f:
        check(f.read() == "someone else's\n", "publish replaced the file that appeared")
    check(not glob.glob(os.path.join(t.dir, ".out.qcow2.qsnap-*")),
          f"publish left {os.listdir(t.dir)}")
    # With --replace it is replaced, as asked.
    qsnap("publish", vm.dir, "vda", out, "--at", "S", "--replace")
    check(img_info(out)["format"] == "qcow2", "--replace did not replace")
