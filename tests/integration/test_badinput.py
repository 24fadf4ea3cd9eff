"""Bad input: every mistake a user can type gets a one-line error that names
the thing and says what to do, exit code 2 for usage and 1 for the rest,
and changes nothing on disk (test_foundation has the first few cases)."""

import os
import subprocess

from harness import ACCEL, GUEST, check, qemu_img, qsnap

COMMANDS = ["init", "start", "stop", "status", "save", "restore", "list", "delete", "qmp"]
KERNEL = os.path.join(GUEST, "vmlinuz")


def tree(top):
    """Every path under top with its size and mode: what must not change."""
    out = {}
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_size if not os.path.isdir(p) else 0)
    return out


def expect_error(args, want, code=None, env=None):
    """qsnap args fails with one line on stderr holding every string in want."""
    p = qsnap(*args, ok=False, env=env)
    what = f"qsnap {' '.join(map(repr, map(str, args)))}"
    check(p.returncode != 0, f"{what} succeeded")
    if code is not None:
        check(p.returncode == code, f"{what} exited {p.returncode}, not {code}: {p.stderr!r}")
    check(len(p.stderr.strip().splitlines()) == 1, f"{what}: not a one-line error: {p.stderr!r}")
    for w in [want] if isinstance(want, str) else want:
        check(w in p.stderr, f"{what}: expected {w!r} in {p.stderr!r}")
    return p


def make_vm(t):
    """A VM directory (not started) with one snapshot-less drive."""
    base = os.path.join(t.dir, "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "16M")
    vm = os.path.join(t.dir, "vm")
    qsnap("init", vm, "--drive", f"vda={base}", "--kernel", KERNEL, "--accel", ACCEL)
    qsnap("stop", vm)  # makes the lock file, which any later command would
    return vm, base


def test_unknown_options_and_bad_values(t):
    vm, base = make_vm(t)
    before = tree(t.dir)
    for c in COMMANDS:
        expect_error([c, "--bogus", vm], [f"unknown option '--bogus'", f"qsnap {c} --help"], 2)
        expect_error([c, "-Z", vm], ["-Z", f"qsnap {c} --help"], 2)
    # An option without its value, a value where none is taken.
    expect_error(["save", vm, "x", "--timeout"], "option '--timeout' needs a value", 2)
    expect_error(["restore", vm, "x", "--lock-timeout"], "'--lock-timeout' needs a value", 2)
    expect_error(["start", vm, "--from"], "'--from' needs a value", 2)
    expect_error(["save", vm, "x", "--replace=yes"], "'--replace' takes no value", 2)
    # Numbers.
    for opt in ("--timeout", "--lock-timeout"):
        for bad in ("abc", "-1", "1.5", "", "99999999999999999999", "4294967296"):
            expect_error(["save", vm, "x", opt, bad], [opt, f"'{bad}'", "whole number"], 2)
    for bad in ("abc", "-2", "1e3"):
        expect_error(["init", os.path.join(t.dir, "n"), "--drive", f"d={base}", "--smp", bad],
                     ["--smp", bad], 2)
    expect_error(["init", os.path.join(t.dir, "n"), "--drive", f"d={base}", "--smp", "0"],
                 "--smp must be at least 1", 2)
    expect_error(["init", os.path.join(t.dir, "n"), "--drive", f"d={base}", "--smp", "5000"],
                 "--smp must be between 1 and 1024", 1)
    # Wrong number of arguments.
    expect_error(["save", vm], "expected VMDIR NAME", 2)
    expect_error(["restore", vm, "a", "b"], "expected VMDIR NAME", 2)
    expect_error(["qmp", vm], "expected VMDIR COMMAND", 2)
    check(tree(t.dir) == before, "a rejected command changed files")


def test_malformed_sizes(t):
    base = os.path.join(t.dir, "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "16M")
    d = os.path.join(t.dir, "vm")
    for bad in ("", "4X", "G", "-1", "1.5G", "4 G", "4GB2", "0x100M", "99999999999999999999",
                "18014398509481984K", "4Gi"):
        expect_error(["init", d, "--drive", f"d={base}", "--memory", bad],
                     ["--memory", f"invalid size '{bad}'", "e.g. 512M"], 2)
    for small, want in (("0", "at least 16M"), ("1K", "at least 16M"),
                        ("16777217", "whole number of MiB")):
        expect_error(["init", d, "--drive", f"d={base}", "--memory", small], ["--memory", want], 1)
    for good in ("64M", "64MiB", "64MB", "67108864", "1g"):
        qsnap("init", d, "--drive", f"d={base}", "--memory", good, "--kernel", KERNEL)
        subprocess.run(["rm", "-rf", d], check=True)
    check(not os.path.exists(d), "a rejected init left its directory")


def test_bad_drive_ids_and_specs(t):
    base = os.path.join(t.dir, "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "16M")
    d = os.path.join(t.dir, "vm")
    before = tree(t.dir)
    for bad in ("a/b", "..", ".", "a b", "", " a", "a.b", "1abc", "-a", "a,b", "x" * 32, "../../etc",
                "a\tb", "ä"):
        expect_error(["init", d, "--drive", f"{bad}={base}"],
                     [f"drive id '{bad}' is not valid", "use a letter"], 2)
    for spec, want in ((base, "expected ID=PATH"), ("d=", "no image path"),
                       ("d=,if=virtio", "no image path"), (f"d={base},if=floppy", "unknown interface"),
                       (f"d={base},format=vmdk", "unknown format 'vmdk'"),
                       (f"d={base},format=qcow2,cache=none", "unknown option 'cache=none'")):
        expect_error(["init", d, "--drive", spec], ["drive", want], 2)
    expect_error(["init", d, "--drive", f"d={base}", "--drive", f"d={base}"],
                 "drive id 'd' is given twice", 2)
    check(tree(t.dir) == before, "a rejected init changed files")


def test_bad_base_images(t):
    d = os.path.join(t.dir, "vm")
    raw = os.path.join(t.dir, "disk.raw")
    with open(raw, "wb") as f:
        f.truncate(1 << 20)
    text = os.path.join(t.dir, "notes.txt")
    with open(text, "w") as f:
        f.write("not a disk image\n")
    corrupt = os.path.join(t.dir, "corrupt.qcow2")
    with open(corrupt, "wb") as f:
        f.write(b"QFI\xfb\0\0\0\3" + b"\0" * 100)
    vmdk = os.path.join(t.dir, "disk.vmdk")
    qemu_img("create", "-q", "-f", "vmdk", vmdk, "1M")
    folder = os.path.join(t.dir, "folder")
    os.mkdir(folder)
    missing = os.path.join(t.dir, "missing.qcow2")
    before = tree(t.dir)
    cases = [
        (f"d={missing}", [missing, "does not exist"]),
        (f"d={folder}", [folder, "not a file or block device"]),
        (f"d={raw},format=qcow2", [raw, "is raw, not qcow2", "fix format="]),
        (f"d={text},format=qcow2", [text, "is raw, not qcow2"]),
        (f"d={corrupt}", [corrupt, "not a readable disk image"]),
        (f"d={vmdk}", [vmdk, "vmdk", "qemu-img convert"]),
    ]
    for spec, want in cases:
        expect_error(["init", d, "--drive", spec, "--kernel", KERNEL], want, 1)
    expect_error(["init", d, "--kernel", os.path.join(t.dir, "vmlinuz-missing")],
                 ["--kernel", "vmlinuz-missing", "cannot be read"], 1)
    expect_error(["init", d, "--kernel", KERNEL, "--initrd", missing],
                 ["--initrd", missing, "cannot be read"], 1)
    expect_error(["init", d, "--drive", f"d={raw}", "--initrd", KERNEL], "need --kernel", 1)
    expect_error(["init", text, "--kernel", KERNEL], [text, "not a directory"], 1)
    check(tree(t.dir) == before, "a rejected init changed files")
    # A raw image is taken as raw (format found by qemu-img), and qcow2 as said.
    qsnap("init", d, "--drive", f"d={raw}", "--kernel", KERNEL)


def test_missing_programs(t):
    vm, base = make_vm(t)
    # QEMU named by an absolute path that does not exist, and qemu-img that
    # is not on PATH.
    vm2 = os.path.join(t.dir, "vm2")
    qsnap("init", vm2, "--drive", f"vda={base}", "--kernel", KERNEL,
          "--qemu", "/nonexistent/qemu-system-x86_64")
    expect_error(["start", vm2], ["/nonexistent/qemu-system-x86_64", "not found",
                                  "qemu-system-x86"], 1)
    check(qsnap("status", "--json", vm2).stdout.count('"stopped"') == 1, "status not stopped")
    env = {**os.environ, "PATH": "/nonexistent"}
    expect_error(["init", os.path.join(t.dir, "vm3"), "--drive", f"d={base}", "--kernel", KERNEL],
                 ["qemu-img not found", "qemu-utils"], 1, env=env)
    check(not os.path.exists(os.path.join(t.dir, "vm3")), "init without qemu-img left files")


def test_bad_snapshot_names(t):
    """A snapshot name never becomes a path outside snapshots/: every
    command refuses the bad ones before touching anything."""
    vm, base = make_vm(t)
    before = tree(t.dir)
    bad = ["a/b", "..", ".", "../../escape", "/abs", "", "a b", ".hidden", "x" * 65, "a\tb",
           "a\\b", "*", "a;touch ${HOME}x"]
    for name in bad:
        expect_error(["save", vm, name], [f"snapshot name '{name}' is not valid",
                                          "use letters, digits"], 2)
        expect_error(["restore", vm, name], [f"'{name}'", "not found", "no snapshots yet"], 1)
        expect_error(["delete", vm, name], [f"'{name}'", "not found"], 1)
        expect_error(["start", vm, "--from", name], [f"'{name}'", "not found"], 1)
    check(tree(t.dir) == before, "a bad snapshot name changed files")
    check(not os.path.exists(os.path.join(t.dir, "escape")), "a name escaped the VM directory")
