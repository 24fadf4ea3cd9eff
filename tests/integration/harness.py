"""Integration test harness: the real qsnap binary, a real QEMU, the test guest.

A test is a function named test_* taking a `T` (a scratch directory and
helpers). Tests talk to the guest's shell over its serial socket, as a user
or a test runner would.
"""

import hashlib
import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("QSNAP_BUILD", os.path.join(ROOT, "build"))
QSNAP = os.path.join(BUILD, "src", "cli", "qsnap")
# The guest is built once, in build/guest (make guest), also for the
# sanitizer builds (tests/run.py sets QSNAP_GUEST for them).
GUEST = os.environ.get("QSNAP_GUEST", os.path.join(BUILD, "guest"))
# The build machines have no working KVM; QSNAP_TEST_ACCEL=kvm:tcg on a host
# with KVM.
ACCEL = os.environ.get("QSNAP_TEST_ACCEL", "tcg")
APPEND = "console=ttyS0 quiet"
# The QEMU the tests run (tests/run.py runs them once with the system's
# QEMU and once with the one scripts/qemu10 installs); its qemu-img is the
# one beside it.
QEMU = os.environ.get("QSNAP_TEST_QEMU") or None
QEMU_ARGS = ["--qemu", QEMU] if QEMU else []
QEMU_IMG = os.path.join(os.path.dirname(QEMU), "qemu-img") if QEMU else "qemu-img"


class Fail(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def check_no_sanitizer_report(stderr, what="qsnap"):
    """A sanitizer build (tests/run.py) reports on stderr: always a failure,
    also where the test expects the command to fail."""
    for r in SANITIZER_REPORTS:
        check(r not in stderr, f"{what}: sanitizer report:\n{stderr.strip()}")


def qsnap(*args, ok=True, timeout=900, env=None):
    """Run the qsnap CLI; with ok=True a non-zero exit fails the test."""
    p = subprocess.run([QSNAP, *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env=env)
    check_no_sanitizer_report(p.stderr, f"qsnap {' '.join(map(str, args))}")
    if ok and p.returncode != 0:
        raise Fail(f"qsnap {' '.join(map(str, args))} exited {p.returncode}:\n"
                   f"{p.stderr.strip()}")
    return p


def qemu_img(*args):
    subprocess.run([QEMU_IMG, *map(str, args)], check=True, capture_output=True)


class Serial:
    """The guest's shell on run/serial.sock."""

    def __init__(self, path, timeout=30):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.time() > deadline:
                    raise Fail(f"cannot connect to {path}")
                time.sleep(0.05)
        self.buf = b""
        self.n = 0

    def close(self):
        self.sock.close()

    def read_until(self, pattern, timeout):
        rx = re.compile(pattern, re.S)
        deadline = time.time() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = deadline - time.time()
            if left <= 0:
                raise Fail(f"guest did not answer in {timeout}s; last output: "
                           f"{self.buf[-300:]!r}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise Fail(f"serial console closed; last output: {self.buf[-300:]!r}")
            self.buf += data

    def run(self, cmd, timeout=60):
        """Run a shell command in the guest; returns (output, exit code)."""
        self.n += 1
        n = self.n
        # The markers are split by quotes so that the echo of the typed line
        # never matches the pattern, only the command's own output does.
        line = f'echo "@@{n}""B"; {cmd}; echo "@@{n}""E $?"\n'
        check(len(line) < 1000, "command too long for the guest's tty")
        self.sock.sendall(line.encode())
        m = self.read_until(rb"@@%dB\r\n(.*?)@@%dE (\d+)\r\n" % (n, n), timeout)
        out = m.group(1).decode(errors="replace").replace("\r\n", "\n")
        return out, int(m.group(2))

    def sh(self, cmd, timeout=60):
        out, rc = self.run(cmd, timeout)
        if rc != 0:
            raise Fail(f"guest command failed ({rc}): {cmd}\n{out}")
        return out.strip()


class VM:
    """A VM directory driven through the CLI."""

    def __init__(self, t, name="vm", memory="256M", disks=("vda",), disk_size="64M",
                 extra_init=()):
        self.t = t
        self.dir = os.path.join(t.dir, name)
        self.serial = None
        drives = []
        for d in disks:
            base = os.path.join(t.dir, f"{name}-{d}-base.qcow2")
            qemu_img("create", "-q", "-f", "qcow2", base, disk_size)
            drives += ["--drive", f"{d}={base}"]
        qsnap("init", self.dir, *drives, "--memory", memory, "--accel", ACCEL,
              "--kernel", os.path.join(GUEST, "vmlinuz"),
              "--initrd", os.path.join(GUEST, "initramfs.img"),
              "--append", APPEND, *QEMU_ARGS, *extra_init)
        t.vms.append(self)

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def log_size(self):
        try:
            return os.path.getsize(self.path("run", "serial.log"))
        except FileNotFoundError:
            return 0

    def wait_ready(self, since, timeout=120):
        """Wait for the guest's READY line in serial.log after offset since."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with open(self.path("run", "serial.log"), "rb") as f:
                    f.seek(since)
                    if b"READY" in f.read():
                        return
            except FileNotFoundError:
                pass
            time.sleep(0.1)
        raise Fail(f"guest printed no READY in {timeout}s")

    def connect(self):
        if self.serial:
            self.serial.close()
        self.serial = Serial(self.path("run", "serial.sock"))
        return self.serial

    def boot(self, *args):
        """qsnap start, wait until the guest's shell is there."""
        since = self.log_size()
        qsnap("start", self.dir, *args)
        self.wait_ready(since)
        self.connect()
        # The shell prints its prompt after READY; settle on it.
        self.serial.sh("true")
        return self.serial

    def sh(self, cmd, timeout=60):
        return self.serial.sh(cmd, timeout)

    def save(self, name, *args):
        return qsnap("save", self.dir, name, *args)

    def precopy_by_default(self):
        """Does qsnap's auto save a running guest with precopy on this VM's
        QEMU? Only where QEMU sees every guest write while it migrates:
        under KVM, or QEMU >= 9.0 (under TCG an older one loses some)."""
        kvm = json.loads(qsnap("qmp", self.dir, "query-kvm").stdout)
        ver = json.loads(qsnap("qmp", self.dir, "query-version").stdout)
        return kvm["enabled"] or ver["qemu"]["major"] >= 9

    def restore(self, name, *args, reconnect=True):
        p = qsnap("restore", self.dir, name, *args)
        if reconnect:
            self.connect()
        return p

    def status(self):
        return json.loads(qsnap("status", "--json", self.dir).stdout)

    def snapshots(self):
        return json.loads(qsnap("list", "--json", self.dir).stdout)

    def state(self):
        with open(self.path("state.json")) as f:
            return json.load(f)

    def qemu_pid(self):
        return self.status()["pid"]

    def stop(self):
        if self.serial:
            self.serial.close()
            self.serial = None
        qsnap("stop", self.dir, ok=False)


def process_running(pid):
    """True while pid is a live process (a zombie waiting for its reaper is
    not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class T:
    """One test's scratch area; every VM made here is stopped afterwards."""

    def __init__(self, name):
        self.dir = tempfile.mkdtemp(prefix=f"qsnap-{name}-",
                                    dir=os.environ.get("QSNAP_TEST_TMP"))
        self.vms = []

    def vm(self, **kw):
        return VM(self, **kw)

    def cleanup(self, keep):
        for vm in self.vms:
            try:
                vm.stop()
            except Exception:
                pass
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


class Skip(Exception):
    """A test that cannot run here raises Skip(why): counted and named as
    skipped, never as passed."""


def load_modules(names):
    """Import the test modules by name; returns (modules, failures): a module
    that is missing or does not import is a failure named after it, never
    dropped."""
    mods, failures = [], []
    here = os.path.dirname(os.path.abspath(__file__))
    for name in names:
        if not os.path.exists(os.path.join(here, name + ".py")):
            failures.append((name, f"tests/integration/{name}.py is missing"))
            continue
        try:
            mods.append(importlib.import_module(name))
        except Exception:
            failures.append((name, traceback.format_exc()))
    return mods, failures


class Results:
    """What a run of integration tests came to; skipped holds "NAME (why)"."""

    def __init__(self):
        self.passed = self.failed = 0
        self.skipped = []

    def line(self):
        return f"{self.passed} passed, {self.failed} failed, {len(self.skipped)} skipped"


def _fail(name, detail, seconds=None):
    took = f" ({seconds:.1f}s)" if seconds is not None else ""
    print(f"FAIL {name}{took}\n{detail.strip()}".replace("\n", "\n     "), flush=True)


def run_tests(module_names, only=None):
    """Run every test_* function of the named modules; prints one line per
    test (ok, FAIL, skip) and returns Results. A module that cannot be
    loaded counts as one failure; each filter (only) that selects no test
    counts as one failure too, so that a misspelt name never passes."""
    res = Results()
    # QSNAP_TEST_SKIP: tests left out (names containing one of these); each
    # is counted and named as skipped.
    skip = [s for s in os.environ.get("QSNAP_TEST_SKIP", "").split(",") if s]
    # QSNAP_TEST_ALONE: "without" leaves out the modules that must run with
    # no other test run beside them (ALONE in the module: they change what
    # every VM of this user shares), "only" runs just those; tests/run.py
    # runs the two QEMUs' runs side by side, then these one after the other.
    alone = os.environ.get("QSNAP_TEST_ALONE")
    modules, failures = load_modules(module_names)
    # A module that cannot be loaded fails under any filter: what it would
    # have run is unknown.
    for name, detail in failures:
        _fail(name, "cannot load the test module: " + detail)
        res.failed += 1
    selected = dict.fromkeys(only or [], 0)
    for mod in modules:
        if alone and (alone == "only") != bool(getattr(mod, "ALONE", None)):
            continue
        for name in sorted(n for n in dir(mod) if n.startswith("test_")):
            full = f"{mod.__name__}.{name}"
            if only and not any(o in full for o in only):
                continue
            for o in selected:
                selected[o] += o in full
            hit = next((s for s in skip if s in full), None)
            if hit:
                res.skipped.append(f"{full} (QSNAP_TEST_SKIP: {hit})")
                print(f"skip {res.skipped[-1]}", flush=True)
                continue
            t = T(name)
            t0 = time.time()
            ok = False
            try:
                getattr(mod, name)(t)
                ok = True
            except Skip as e:
                ok = None
                res.skipped.append(f"{full} ({e})")
                print(f"skip {res.skipped[-1]}", flush=True)
            except Exception as e:
                detail = str(e) if isinstance(e, Fail) else traceback.format_exc()
                _fail(full, detail, time.time() - t0)
            finally:
                t.cleanup(keep=ok is False and os.environ.get("QSNAP_KEEP_FAILED"))
            if ok:
                res.passed += 1
                print(f"ok   {full} ({time.time() - t0:.1f}s)", flush=True)
            elif ok is False:
                res.failed += 1
    # Each filter must select something (a stale name in a list of them,
    # such as tests/run.py's, is not passed over), unless a module that did
    # not load could have held it.
    for o, n in selected.items():
        if n == 0 and not failures:
            _fail(o, "no integration test has a name containing this")
            res.failed += 1
    return res
