"""The foundation: init, start, the serial console, status, stop, qmp, errors."""

import json
import os
import re
import subprocess

from harness import check, process_running, qemu_img, qsnap

COMMANDS = ["init", "start", "stop", "status", "save", "restore", "list", "delete", "qmp"]


def test_boot_serial_status_stop(t):
    vm = t.vm()
    sh = vm.boot()
    # A command typed on the serial socket answers.
    check(sh.sh("echo $((6 * 7))") == "42", "the guest's shell did not compute")
    check("/mnt" in sh.sh("grep vda /proc/mounts"), "the disk is not mounted")
    st = vm.status()
    check(st["state"] == "running" and st["pid"] > 0, f"status says {st}")
    check(process_running(st["pid"]), "no such QEMU process")
    chain = st["drives"][0]["chain"]
    check(len(chain) == 2 and chain[1].startswith("layers/"), f"chain {chain}")
    pid = st["pid"]
    vm.stop()
    st = vm.status()
    check(st["state"] == "stopped" and st["pid"] is None, f"after stop: {st}")
    check(not process_running(pid), "QEMU is still there after stop")


def test_serial_log_kept_across_restarts(t):
    vm = t.vm()
    vm.boot()
    vm.sh("echo first-run-marker")
    vm.stop()
    vm.boot()
    with open(vm.path("run", "serial.log"), "rb") as f:
        log = f.read()
    check(log.count(b"READY") == 2, "serial.log does not hold both boots")
    check(b"first-run-marker" in log, "the first run's output is gone from serial.log")


def test_base_image_never_written(t):
    vm = t.vm()
    base = vm.state()["layers"][0]
    base_path = json.load(open(vm.path("vm.json")))["drives"][0]["path"]
    before = open(base_path, "rb").read()
    vm.boot()
    vm.sh("dd if=/dev/urandom of=/mnt/data bs=64k count=16 2>/dev/null; sync")
    vm.stop()
    check(open(base_path, "rb").read() == before, "the base image was written")
    check(os.path.getsize(vm.path(base["path"])) > 1 << 20, "the layer did not take the writes")


def test_qemu_that_exits_at_once(t):
    vm = t.vm(extra_init=["--", "-device", "no-such-device-xyz"])
    p = qsnap("start", vm.dir, ok=False)
    check(p.returncode != 0, "start succeeded")
    # QEMU's own message, through the tail of qemu.log.
    check("no-such-device-xyz" in p.stderr, f"QEMU's message missing: {p.stderr}")
    check(vm.status()["state"] == "stopped", "status is not stopped")


def test_missing_qemu_binary(t):
    vm = t.vm(extra_init=["--qemu", "qemu-system-nonexistent"])
    p = qsnap("start", vm.dir, ok=False)
    check(p.returncode != 0 and "qemu-system-x86" in p.stderr,
          f"no hint to install the package: {p.stderr}")


def test_init_errors_write_nothing(t):
    img = os.path.join(t.dir, "ok.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "16M")
    raw = os.path.join(t.dir, "raw.img")
    with open(raw, "wb") as f:
        f.truncate(1 << 20)
    notimg = os.path.join(t.dir, "text.qcow2")
    with open(notimg, "w") as f:
        f.write("hello\n")
    cases = [
        (["--drive", f"d={t.dir}/missing.qcow2"], "does not exist"),
        (["--drive", f"a/b={img}"], "drive id"),
        (["--drive", f"..={img}"], "drive id"),
        (["--drive", f"d={img}", "--bogus"], "unknown option"),
        (["--drive", f"d={img}", "--memory", "4X"], "invalid size"),
        (["--drive", f"d={raw},format=qcow2"], "raw, not qcow2"),
        (["--drive", f"d={img},if=floppy"], "unknown interface"),
        ([], "nothing to boot"),
    ]
    for args, want in cases:
        d = os.path.join(t.dir, "vm")
        p = qsnap("init", d, *args, ok=False)
        check(p.returncode != 0, f"init {args} succeeded")
        check(want in p.stderr, f"init {args}: expected '{want}' in: {p.stderr!r}")
        check(len(p.stderr.strip().splitlines()) == 1, f"not a one-line error: {p.stderr!r}")
        check(not os.path.exists(d), f"init {args} left {d} behind")
    # A file that is not an image is refused as raw format given as qcow2.
    p = qsnap("init", os.path.join(t.dir, "vm"), "--drive", f"d={notimg},format=qcow2", ok=False)
    check(p.returncode != 0, "a text file was accepted as a qcow2 image")


def test_help(t):
    p = qsnap("--help")
    for c in COMMANDS:
        check(c in p.stdout, f"qsnap --help does not list {c}")
        h = qsnap(c, "--help")
        check(h.stdout.startswith(f"Usage: qsnap {c}"), f"qsnap {c} --help: {h.stdout[:80]!r}")
    p = qsnap("frobnicate", ok=False)
    check(p.returncode == 2 and "unknown command" in p.stderr, "unknown command accepted")
    p = qsnap("status", ok=False)
    check(p.returncode == 2 and "VMDIR" in p.stderr, "missing VMDIR not reported")


def help_options(cmd):
    """The options in qsnap CMD --help: those of its usage line and those
    its option list describes, as two sets of long names."""
    text = qsnap(cmd, "--help").stdout
    usage, _, rest = text.partition("\n\n")
    in_usage = set(re.findall(r"\[(--[a-z-]+)", usage))
    listed = set(re.findall(r"^  (?:-[a-zA-Z], )?(--[a-z-]+)", rest, re.M))
    return in_usage, listed


def test_usage_lines_match_parsers(t):
    listing = qsnap("--help").stdout.split("Commands:\n")[1].split("\n\n")[0]
    cmds = re.findall(r"^  ([a-z-]+) ", listing, re.M)
    check(len(cmds) >= 16, f"qsnap --help lists {cmds}")
    for c in cmds:
        in_usage, listed = help_options(c)
        check(in_usage == listed, f"qsnap {c} --help: usage line {sorted(in_usage)} but "
              f"options described {sorted(listed)}")
        # Every option help names is one the command's parser takes.
        for opt in listed:
            p = qsnap(c, f"{opt}=1", "--help", ok=False)
            check("unknown option" not in p.stderr, f"qsnap {c} --help names {opt}, which "
                  f"qsnap {c} does not take: {p.stderr.strip()}")
    # The two that had drifted.
    check("--compress" in help_options("save")[0], "save's usage line lacks --compress")
    check("--lazy" in help_options("restore")[0], "restore's usage line lacks --lazy")


def test_qmp_passthrough(t):
    vm = t.vm()
    vm.boot()
    out = json.loads(qsnap("qmp", vm.dir, "query-status").stdout)
    check(out["status"] == "running", f"query-status: {out}")
    out = json.loads(qsnap("qmp", vm.dir, "query-block").stdout)
    check(any(b.get("qdev", "").find("vda") >= 0 for b in out), "query-block has no vda")
    p = qsnap("qmp", vm.dir, "query-status", "{not json", ok=False)
    check(p.returncode != 0 and "JSON object" in p.stderr, p.stderr)
    p = qsnap("qmp", vm.dir, "no-such-command", ok=False)
    check(p.returncode != 0 and "no-such-command" in p.stderr, p.stderr)
    # The VM is unharmed by the failed commands.
    check(vm.sh("echo alive") == "alive", "guest stopped answering")


def test_not_a_vm_directory(t):
    p = qsnap("status", t.dir, ok=False)
    check(p.returncode != 0 and "not a qsnap VM directory" in p.stderr, p.stderr)
    p = qsnap("start", os.path.join(t.dir, "nope"), ok=False)
    check(p.returncode != 0 and "nope" in p.stderr, p.stderr)
