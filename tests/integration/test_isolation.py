"""Permissions and isolation: who may reach a VM's sockets, VM directories of
other users, and what QEMU, qemu-img and qsnap's helper programs (the
console relay, the background saver) get from qsnap: no shell, a fixed
environment, no file descriptors of ours, no signal state of the
caller's."""

import json
import os
import pwd
import signal
import stat
import shutil
import subprocess
import time

from harness import BUILD, QEMU, QEMU_IMG, QSNAP, check, process_running, qsnap
from test_snapshots import fill_guest

# What qsnap passes to every program it starts (qemu/spawn.c, base/program.c).
QEMU_ENV = ["PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C"]
QEMU_IMG_ENV = ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL=C"]
# qsnap's helper programs (src/helpers, installed in libexecdir/qsnap).
HELPERS = os.path.join(BUILD, "src", "helpers")
# What a caller has that must reach none of qsnap's processes: a secret in
# its environment, signals it blocks and ignores, a descriptor it leaves
# open across exec.
SECRET_ENV = {"QSNAP_REGISTRY_PASSWORD": "must-not-leak", "QSNAP_SECRET": "must-not-leak"}
CALLER_BLOCKS = {signal.SIGTERM, signal.SIGINT, signal.SIGWINCH}
CALLER_IGNORES = {signal.SIGHUP, signal.SIGUSR2, signal.SIGCHLD}


def bit(sig):
    return 1 << (int(sig) - 1)


def hostile_qsnap(t, *args):
    """qsnap ARGS run as a hostile caller would: a secret in its
    environment, CALLER_BLOCKS blocked, CALLER_IGNORES ignored, and a file
    of t.dir open without close-on-exec. Returns (the completed
    process, the path of that file)."""
    leaked = os.path.join(t.dir, "caller-fd")
    with open(leaked, "w"):
        pass
    fd = os.open(leaked, os.O_RDONLY)
    env = {k: v for k, v in os.environ.items()
           if k not in ("QSNAP_NO_PRECOPY", "QSNAP_MULTIFD_CHANNELS", "QSNAP_DIRECT_IO")}

    def caller_state():
        signal.pthread_sigmask(signal.SIG_BLOCK, CALLER_BLOCKS)
        for sig in CALLER_IGNORES:
            signal.signal(sig, signal.SIG_IGN)

    try:
        p = subprocess.run([QSNAP, *map(str, args)], env={**env, **SECRET_ENV}, pass_fds=(fd,),
                           preexec_fn=caller_state, capture_output=True, text=True, timeout=900)
    finally:
        os.close(fd)
    check(p.returncode == 0, f"qsnap {' '.join(map(str, args))} exited {p.returncode}:\n"
          f"{p.stderr.strip()}")
    return p, leaked


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def proc_environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return f.read().decode().split("\0")[:-1]


def check_signals(pid, who, may_ignore=(), may_block=()):
    """None of the caller's blocked or ignored signals reached pid; it
    blocks and ignores nothing but what it may (its own choice)."""
    st = proc_status(pid)
    blk, ign = int(st["SigBlk"], 16), int(st["SigIgn"], 16)
    allowed_blk = sum(bit(s) for s in may_block)
    allowed_ign = sum(bit(s) for s in may_ignore)
    check(blk & ~allowed_blk == 0, f"{who} (pid {pid}) blocks signals: SigBlk {blk:016x}")
    check(ign & ~allowed_ign == 0, f"{who} (pid {pid}) ignores signals: SigIgn {ign:016x}")


def check_helper(pid, name):
    """pid runs qsnap's helper program name, detached: in a session of its
    own."""
    exe = os.readlink(f"/proc/{pid}/exe")
    check(exe == os.path.realpath(os.path.join(HELPERS, name)),
          f"pid {pid} runs {exe}, not the helper {name}")
    with open(f"/proc/{pid}/stat") as f:
        session = int(f.read().rsplit(")", 1)[1].split()[3])
    # (Its parent made the session and ended: the helper can never get a
    # controlling terminal.)
    check(session != os.getsid(0) and not process_running(session),
          f"{name} (pid {pid}) is in session {session}, not one of its own")


def relay_pid(vm):
    """The console relay of vm: the qsnap-console that holds its serial.log."""
    want = vm.path("run", "serial.log")
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.readlink(f"/proc/{d}/fd/5") == want:
                    return int(d)
            except OSError:
                pass
    raise AssertionError(f"no process holds {want} at fd 5")


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
    # The RAM file QEMU maps (a snapshot's, after a restore that maps it).
    if st.get("qemu", {}).get("ram_file"):
        own.add(vm.path(st["qemu"]["ram_file"]))
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
    """qemu-img, run while qsnap holds the VM's lock, sees only stdio, the
    minimal environment and default signals, whatever the caller had; it is
    the one beside the VM's QEMU binary, not the one on PATH."""
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
                # The signal state first, by the shell's builtins alone:
                # while it waits for a command it started, the shell
                # blocks every signal for a moment.
                "while read -r l; do case $l in Sig*) echo \"$l\";; esac; done"
                f" < /proc/$$/status > {logdir}/sig.$$\n"
                f"cat /proc/$$/environ > {logdir}/env.$$\n"
                # What a program it runs inherits (the shell's own saved
                # fds are close-on-exec): ls's own listing.
                f"ls -l /proc/self/fd > {logdir}/fd.$$\n"
                f'exec {real} "$@"\n')
    os.chmod(wrapper, 0o755)
    vm = t.vm(extra_init=["--qemu", os.path.join(bindir, "qemu-system-x86_64")])
    vm.boot()
    hostile_qsnap(t, "save", vm.dir, "s")
    runs = sorted(n for n in os.listdir(logdir) if n.startswith("env."))
    check(runs, "the wrapper did not run: qsnap did not take the qemu-img beside the VM's QEMU")
    for r in runs:
        with open(os.path.join(logdir, r), "rb") as f:
            got = f.read().decode().split("\0")[:-1]
        check(got == QEMU_IMG_ENV, f"qemu-img's environment: {got}")
        with open(os.path.join(logdir, "sig." + r[4:])) as f:
            sig = dict(line.split(":\t") for line in f.read().splitlines())
        check(int(sig["SigBlk"], 16) == 0 and int(sig["SigIgn"], 16) == 0,
              f"qemu-img starts with the caller's signal state: {sig}")
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


def test_helpers_get_only_what_they_need(t):
    """The console relay and the background saver are qsnap's own programs
    (qsnap-console, qsnap-saver), not forks of the caller: started by a
    caller that blocks and ignores signals, has a secret in its environment
    and a descriptor open across exec, each runs the helper program with
    default signals (but SIGPIPE ignored by the relay, SIGHUP by the saver),
    the documented environment and exactly its documented descriptors;
    QEMU too gets none of that."""
    vm = t.vm()
    since = vm.log_size()
    _, leaked = hostile_qsnap(t, "start", vm.dir)
    vm.wait_ready(since)
    vm.connect()
    vm.sh("true")

    qemu = vm.qemu_pid()
    check_signals(qemu, "QEMU", may_ignore={signal.SIGPIPE},
                  may_block={signal.SIGBUS, signal.SIGUSR1, signal.SIGALRM, signal.SIGIO})
    check(proc_environ(qemu) == QEMU_ENV, f"QEMU's environment: {proc_environ(qemu)}")
    check(leaked not in fds(qemu).values(), "QEMU holds the caller's descriptor")

    relay = relay_pid(vm)
    check_helper(relay, "qsnap-console")
    check_signals(relay, "the console relay", may_ignore={signal.SIGPIPE})
    check(proc_environ(relay) == ["LC_ALL=C"],
          f"the console relay's environment: {proc_environ(relay)}")
    got = fds(relay)
    kinds = {fd: ("socket" if target.startswith("socket:") else target)
             for fd, target in got.items()}
    want = {0: "/dev/null", 1: "/dev/null", 2: "/dev/null", 3: "socket", 4: "socket",
            5: vm.path("run", "serial.log"), 6: vm.path("run")}
    # Past those, only its clients (the test's own connection).
    check({fd: k for fd, k in kinds.items() if fd < 7} == want and
          all(k == "socket" for fd, k in kinds.items() if fd >= 7),
          f"the console relay's descriptors: {got}")

    # The saver, while it saves: long enough to be looked at (RAM that
    # compresses slowly at level 15).
    fill_guest(vm, "helpers", mib=8)
    hostile_qsnap(t, "save", "--live", "--no-wait", "--compress=15", vm.dir, "B")
    bg = json.loads(qsnap("status", "--json", vm.dir).stdout)["background_save"]
    check(bg and bg["running"] and bg["pid"] > 0, f"no background save running: {bg}")
    saver = bg["pid"]
    check_helper(saver, "qsnap-saver")
    check_signals(saver, "the background saver", may_ignore={signal.SIGHUP})
    env = proc_environ(saver)
    check(env == [f"PATH={os.environ['PATH']}", "LC_ALL=C"],
          f"the background saver's environment: {env}")
    got = fds(saver)
    check({fd: got.get(fd) for fd in range(5)} ==
          {0: "/dev/null", 1: "/dev/null", 2: "/dev/null", 3: vm.path("lock"), 4: vm.dir},
          f"the background saver's descriptors 0-4: {got}")
    # The rest is what the save itself opened: QMP, pipes to QEMU and its
    # threads, files of the VM directory, and the directory itself while
    # it is synced after state.json was written.
    for fd, target in sorted(got.items()):
        if fd > 4:
            check(target.startswith(("socket:", "pipe:", "anon_inode:", vm.dir + "/"))
                  or target == vm.dir,
                  f"the background saver has fd {fd} -> {target}")
    check(process_running(saver), "the background save ended while it was looked at: "
          "it was too short to check")
    # It saves as before: another command waits for it.
    qsnap("stop", vm.dir)
    bg = json.loads(qsnap("status", "--json", vm.dir).stdout)["background_save"]
    check(bg["ok"] is True and bg["running"] is False, f"background result: {bg}")
    check([s["name"] for s in vm.snapshots()] == ["B"], f"snapshots: {vm.snapshots()}")
