"""The guest's serial console (run/serial.sock) as test runners use it: one
connection kept for a whole run, long lines sent in one write, typing before,
during and after every operation; and clients that only type and watch
run/serial.log instead of reading the socket."""

import os
import socket
import subprocess
import time

from harness import QSNAP, Serial, check, qsnap


class Typist:
    """Lines typed on one console connection, each appending its own payload
    to a file in the guest, so that what arrived can be compared with what
    was sent: nothing lost, nothing out of order."""

    def __init__(self, serial, path="/tmp/typed"):
        self.serial = serial
        self.path = path
        self.sent = []

    def type(self, length):
        """One command line of about length bytes, sent in one write."""
        k = len(self.sent)
        payload = f"L{k:03d}-" + "abcdefghij" * (length // 10)
        self.serial.sock.sendall(f"echo {payload} >> {self.path}\n".encode())
        self.sent.append(payload)

    def check_all_arrived(self, what):
        got = self.serial.sh(f"cat {self.path}", timeout=120).split("\n")
        check(got == self.sent,
              f"{what}: the guest got {len(got)} of {len(self.sent)} typed lines "
              f"(first difference at line "
              f"{next((i for i, (a, b) in enumerate(zip(got, self.sent)) if a != b), min(len(got), len(self.sent)))})")


def type_across(vm, typist, args, what):
    """Type before, while `qsnap ARGS` runs, and after; then check that every
    line reached the guest's shell in order on the same connection."""
    typist.type(120)
    p = subprocess.Popen([QSNAP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    for n in (40, 200, 17, 300):
        typist.type(n)
        time.sleep(0.02)
    out, err = p.communicate(timeout=600)
    check(p.returncode == 0, f"{what} failed: {err.strip()}")
    for n in (500, 90):
        typist.type(n)
    typist.check_all_arrived(what)
    check(vm.sh("echo still-here") == "still-here", f"{what}: the console stopped answering")


def test_one_connection_across_stream_operations(t):
    vm = t.vm(memory="256M")
    serial = vm.boot()
    typist = Typist(serial)
    out = os.path.join(t.dir, "pub.qcow2")
    for what, args in [
        ("save", ["save", vm.dir, "s1"]),
        ("save --live", ["save", "--live", vm.dir, "s2"]),
        ("save --compress", ["save", "--compress", vm.dir, "s3"]),
        ("dump-memory", ["dump-memory", vm.dir, os.path.join(t.dir, "dump.zst")]),
        ("publish --at", ["publish", vm.dir, "vda", out, "--at", "s1"]),
        ("compact", ["compact", vm.dir, "--max-chain", "2"]),
    ]:
        type_across(vm, typist, args, what)
    check(vm.serial is serial, "the test reconnected")


def test_one_connection_across_shared_ram_saves(t):
    vm = t.vm(memory="256M", extra_init=["--ram-mode", "shared"])
    serial = vm.boot()
    typist = Typist(serial)
    type_across(vm, typist, ["save", vm.dir, "s1"], "shared-RAM save")
    type_across(vm, typist, ["save", "--live", vm.dir, "s2"], "shared-RAM save --live")


def test_client_that_only_types(t):
    """A runner that writes commands to serial.sock and waits for their output
    in serial.log, never reading the socket: the guest's console must not
    block on it (QEMU's own socket server stopped the guest's output after
    about 280 characters)."""
    vm = t.vm(memory="256M")
    vm.boot()
    vm.serial.close()
    vm.serial = None
    log = vm.path("run", "serial.log")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(vm.path("run", "serial.sock"))

    def run(cmd, k, timeout=60):
        since = os.path.getsize(log)
        sock.sendall(f'{cmd}; echo "done""{k}"\n'.encode())
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(log, "rb") as f:
                f.seek(since)
                if f"done{k}".encode() in f.read():
                    return
            time.sleep(0.05)
        with open(log, "rb") as f:
            tail = f.read()[-200:]
        raise AssertionError(f"line {k} got no answer in serial.log; it ends: {tail!r}")

    try:
        k = 0
        for save in range(3):
            for _ in range(8):
                run(f"echo line {k} {'x' * 60} > /dev/null", k)
                k += 1
            qsnap("save", vm.dir, f"s{save}")
        # Far more output than any socket buffer holds, unread.
        run("seq 1 30000", k)
        # A client that reads meanwhile still gets everything.
        reader = Serial(vm.path("run", "serial.sock"))
        check(reader.sh("echo other-client") == "other-client",
              "a second client gets no answer while the first one does not read")
        reader.close()
    finally:
        sock.close()


def test_console_after_restore(t):
    vm = t.vm(memory="256M")
    old = vm.boot()
    vm.sh("X=saved")
    vm.save("s1")
    vm.sh("X=changed")
    vm.restore("s1", reconnect=False)
    # The connection to the QEMU that the restore ended is closed ...
    old.sock.settimeout(30)
    try:
        while old.sock.recv(65536):
            pass
    except socket.timeout:
        raise AssertionError("the console connection to the ended QEMU stays open")
    old.close()
    # ... and a new one, made as soon as restore returns, takes long lines.
    serial = vm.connect()
    typist = Typist(serial)
    for n in (60, 150, 400, 800, 16, 300):
        typist.type(n)
    typist.check_all_arrived("after restore")
    check(vm.sh('echo "$X"') == "saved", "the restore did not bring back the saved shell")


def test_qsnap_console_across_restores(t):
    """`qsnap console --reconnect` as a runner's one console for a whole run:
    it goes on with the next QEMU after every restore."""
    vm = t.vm(memory="256M")
    vm.boot()
    vm.sh("X=saved")
    vm.save("s1")
    vm.serial.close()
    vm.serial = None
    con = subprocess.Popen([QSNAP, "console", "--reconnect", vm.dir], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        serial = Serial.__new__(Serial)
        serial.buf, serial.n = b"", 0

        class Pipe:
            """The console process's stdin and stdout as one socket-like end."""

            def sendall(self, data):
                con.stdin.write(data)
                con.stdin.flush()

            def settimeout(self, s):
                self.timeout = s

            def recv(self, n):
                import select
                r, _, _ = select.select([con.stdout], [], [], self.timeout)
                if not r:
                    raise socket.timeout()
                return os.read(con.stdout.fileno(), n)

        serial.sock = Pipe()
        for round in range(3):
            serial.sh(f"X=changed{round}")
            qsnap("restore", vm.dir, "s1")
            typist = Typist(serial, path=f"/tmp/typed{round}")
            for n in (300, 40, 700):
                typist.type(n)
            typist.check_all_arrived(f"qsnap console after restore {round + 1}")
            check(serial.sh('echo "$X"') == "saved",
                  f"restore {round + 1}: the console does not talk to the restored guest")
        check(con.poll() is None, "qsnap console ended")
    finally:
        con.stdin.close()
        con.wait(timeout=30)
    err = con.stderr.read().decode()
    check(err.count("connected again") == 3, f"qsnap console said: {err}")


def test_serial_log_stays_bounded(t):
    """A guest that prints without end fills at most serial.log and
    serial.log.1, each within the limit set with qsnap config; the console
    goes on answering."""
    vm = t.vm(memory="256M")
    p = qsnap("config", vm.dir, "--serial-log-max", "256K")
    check("serial-log-max: 256.0 KiB" in p.stdout, p.stdout)
    p = qsnap("config", vm.dir, "--serial-log-max", "1K", ok=False)
    check(p.returncode == 1 and "at least 64K" in p.stderr, p.stderr)
    limit = 256 << 10
    vm.boot()
    # Lines of their own, without end, behind the shell.
    vm.serial.sock.sendall(b"while :; do echo flood-flood-flood-flood-flood; done &\n")
    log, old = vm.path("run", "serial.log"), vm.path("run", "serial.log.1")
    last, rotations = 0, 0
    deadline = time.time() + 120
    while time.time() < deadline and rotations < 4:
        try:
            size = os.path.getsize(log)
        except FileNotFoundError:  # between the rotation's rename and the new file
            time.sleep(0.01)
            continue
        check(size <= limit, f"serial.log grew to {size} bytes, past {limit}")
        if os.path.exists(old):
            check(os.path.getsize(old) <= limit, f"serial.log.1 has {os.path.getsize(old)} bytes")
        if size < last:
            rotations += 1
        last = size
        time.sleep(0.05)
    check(rotations >= 4, f"serial.log rotated {rotations} times in 120 s")
    check(b"flood-flood" in open(old, "rb").read(), "serial.log.1 holds no guest output")
    check(sorted(f for f in os.listdir(vm.path("run")) if f.startswith("serial.log"))
          == ["serial.log", "serial.log.1"], f"run/: {os.listdir(vm.path('run'))}")
    # The console still works: stop the flood, then a command answers.
    vm.serial.sock.sendall(b"kill %1\n")
    time.sleep(1)
    check(vm.sh("echo still-here", timeout=120) == "still-here", "the console stopped answering")
