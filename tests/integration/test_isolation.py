"""Permissions and isolation: who may reach a VM's sockets, VM directories of
other users, and what QEMU and qemu-img get from qsnap (no shell, a minimal
environment, no file descriptors of ours)."""

import json
import os
import pwd
import stat
import shutil
import subprocess

from harness import QEMU, QEMU_IMG, check, process_running, qsnap

# What qsnap passes to every program it starts (qemu/spawn.c, base/program.c).
QEMU_ENV = ["PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C"]
QEMU_IMG_ENV = ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL=C"]


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def fds(pid):
    """fd number -> what it points to."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            pass
    return out


def check_qemu_fds(vm, pid):
    """QEMU holds only stdio, its own sockets, eventfds and files, and the
    VM's images and logs: nothing that qsnap had open (the lock, a pipe,
    state.json, a snapshot's machine state)."""
    st = vm.state()
    layers = {vm.path(ly["path"]) for ly in st["layers"]}
    with open(vm.path("vm.json")) as f:
        bases = {d["path"] for d in json.load(f)["drives"]}
    own = {vm.path("run", n) for n in ("qemu.log", "qemu.pid", "serial.log")}
    got = fds(pid)
    check(got.get(0) == "/dev/null", f"QEMU's stdin: {got.get(0)}")
    check(got.get(1) == vm.path("run", "qemu.log") == got.get(2), f"QEMU's stdout/err: {got}")
    for fd, target in sorted(got.items()):
        if target.startswith(("socket:", "anon_inode:")):
            continue
        check(target in layers | bases | own | {"/dev/null"},
              f"QEMU has fd {fd} -> {target}, which is not its own")


def test_run_dir_and_sockets_owner_only(t):
    vm = t.vm()
    # A VM directory unpacked with loose modes gets run/ tightened again.
    os.chmod(vm.path("run"), 0o755)
    old = os.umask(0o000)
    try:
        vm.boot()
    finally:
        os.umask(old)
    uid = os.getuid()
    check(mode(vm.path("run")) == 0o700, f"run/ is {oct(mode(vm.path('run')))}")
    for name in ("qmp.sock", "serial.sock", "serial.log", "qemu.log", "qemu.pid"):
        p = vm.path("run", name)
        st = os.lstat(p)
        check(st.st_uid == uid, f"run/{name} belongs to uid {st.st_uid}")
        check(stat.S_IMODE(st.st_mode) & 0o077 == 0,
              f"run/{name} is {oct(stat.S_IMODE(st.st_mode))}: group or others have access")
    check(stat.S_ISSOCK(os.lstat(vm.path("run", "qmp.sock")).st_mode), "qmp.sock is no socket")
    check(mode(vm.path("lock")) == 0o600, f"lock is {oct(mode(vm.path('lock')))}")


def test_vm_dir_of_another_user_is_refused(t):
    vm = t.vm()
    nobody = pwd.getpwnam("nobody")
    os.chown(vm.dir, nobody.pw_uid, nobody.pw_gid)
    try:
        for cmd in (["status"], ["list"], ["start"], ["stop"], ["save", "x"], ["restore", "x"],
                    ["delete", "x"], ["qmp", "query-status"]):
            p = qsnap(cmd[0], vm.dir, *cmd[1:], ok=False)
            check(p.returncode == 1, f"qsnap {cmd[0]} on nobody's VM exited {p.returncode}")
            check("belongs to another user" in p.stderr and f"uid {nobody.pw_uid}" in p.stderr
                  and len(p.stderr.strip().splitlines()) == 1, f"qsnap {cmd[0]}: {p.stderr!r}")
        check(not os.path.exists(vm.path("run", "qemu.pid")), "a QEMU was started")
    finally:
        os.chown(vm.dir, os.getuid(), os.getgid())


def test_qemu_gets_no_shell_env_or_fds(t):
    # Shell syntax in a user string reaches QEMU as it is: no shell between.
    marks = [os.path.join(t.dir, f"pwned{i}") for i in range(3)]
    append = (f"console=ttyS0 quiet qsnapx=$(touch${{IFS}}{marks[0]}) `touch {marks[1]}`"
              f" ;touch {marks[2]}; |&")
    vm = t.vm(extra_init=["--append", append])
    vm.boot()
    pid = vm.qemu_pid()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")[:-1]
    check(append.encode() in argv, f"-append was changed on the way: {argv}")
    check(os.path.basename(argv[0].decode()).startswith("qemu-system"), f"argv[0] {argv[0]}")
    for m in marks:
        check(not os.path.exists(m), f"a shell ran the user's string: {m} exists")
    with open(f"/proc/{pid}/comm") as f:
        check(f.read().strip().startswith("qemu-system"), "QEMU is not its own process")
    with open(f"/proc/{pid}/status") as f:
        ppid = int([ln.split()[1] for ln in f if ln.startswith("PPid:")][0])
    with open(f"/proc/{ppid}/comm") as f:
        parent = f.read().strip()
    check(parent not in ("sh", "bash", "dash", "qsnap"), f"QEMU's parent is {parent}")
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = f.read().decode().split("\0")[:-1]
    check(env == QEMU_ENV, f"QEMU's environment: {env}")
    check_qemu_fds(vm, pid)
    # The same after a save and after a restore, which pass QEMU the
    # snapshot's file over QMP.
    vm.save("s")
    check_qemu_fds(vm, pid)
    vm.restore("s")
    check(vm.qemu_pid() != pid, "the restore kept the QEMU")
    check_qemu_fds(vm, vm.qemu_pid())
    check(vm.sh("echo ok") == "ok", "the guest does not answer")


def test_qemu_img_gets_no_env_or_fds(t):
    """qemu-img, run while qsnap holds the VM's lock, sees only stdio and
    the minimal environment; it is the one beside the VM's QEMU binary, not
    the one on PATH."""
    bindir = os.path.join(t.dir, "bin")
    logdir = os.path.join(t.dir, "log")
    os.makedirs(bindir)
    os.makedirs(logdir)
    qemu = QEMU or shutil.which("qemu-system-x86_64")
    os.symlink(qemu, os.path.join(bindir, "qemu-system-x86_64"))
    real = QEMU_IMG if QEMU else shutil.which("qemu-img")
    wrapper = os.path.join(bindir, "qemu-img")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\n"
                f"cat /proc/$$/environ > {logdir}/env.$$\n"
                # What a program it runs inherits (the shell's own saved
                # fds are close-on-exec): ls's own listing.
                f"ls -l /proc/self/fd > {logdir}/fd.$$\n"
                f'exec {real} "$@"\n')
    os.chmod(wrapper, 0o755)
    vm = t.vm(extra_init=["--qemu", os.path.join(bindir, "qemu-system-x86_64")])
    vm.boot()
    env = {**os.environ, "QSNAP_SECRET": "must-not-leak"}
    qsnap("save", vm.dir, "s", env=env)
    runs = sorted(n for n in os.listdir(logdir) if n.startswith("env."))
    check(runs, "the wrapper did not run: qsnap did not take the qemu-img beside the VM's QEMU")
    for r in runs:
        with open(os.path.join(logdir, r), "rb") as f:
            got = f.read().decode().split("\0")[:-1]
        check(got == QEMU_IMG_ENV, f"qemu-img's environment: {got}")
        with open(os.path.join(logdir, "fd." + r[4:])) as f:
            listing = f.read()
        for line in listing.splitlines()[1:]:
            parts = line.split()
            fd, target = int(parts[-3]), parts[-1]
            if fd <= 2:
                check(fd > 0 or target == "/dev/null", f"qemu-img's stdin: {target}")
                continue
            # Only ls's handle on the directory it lists.
            check(target.startswith("/proc/"), f"qemu-img got fd {fd} -> {target}")
    check(process_running(vm.qemu_pid()), "the VM died")
