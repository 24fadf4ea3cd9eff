"""The guest's serial console, to drive from a test: send lines, wait for
patterns, run shell commands. It survives restores: when QEMU is replaced
(restore, stop and start) the console connects to the new one."""

import re
import select
import socket
import time
from typing import Optional, Pattern, Tuple, Union

from . import _capi
from ._call import arg, call


class Console:
    """A connection to VMDIR/run/serial.sock (qsnap_console_connect).

    Use it from one thread; close it, or use it as a context manager."""

    def __init__(self, vmdir, connect_timeout: float = 30):
        self._dir = vmdir
        self._connect_timeout = connect_timeout
        self._sock: Optional[socket.socket] = None
        self._buf = b""
        self._n = 0
        self._connect()

    def _connect(self) -> None:
        if self._sock:
            self._sock.close()
        fd = call(_capi.console_connect, arg(self._dir), int(self._connect_timeout * 1000))
        self._sock = socket.socket(fileno=fd)
        self._buf = b""

    def _alive(self) -> bool:
        """False when the QEMU behind the socket has ended (EOF waiting)."""
        while select.select([self._sock], [], [], 0)[0]:
            data = self._sock.recv(65536)
            if not data:
                return False
            self._buf += data
        return True

    def close(self) -> None:
        if self._sock:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "Console":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def sendline(self, line: Union[str, bytes]) -> None:
        """Type line and Enter into the guest (connecting again first if
        its QEMU was replaced)."""
        if not self._sock or not self._alive():
            self._connect()
        data = line.encode() if isinstance(line, str) else line
        self._sock.sendall(data + b"\n")

    def expect(self, pattern: Union[str, bytes, Pattern], timeout: float = 30) -> "re.Match":
        """Wait until the guest's output matches pattern (a regular
        expression); returns the match, and drops the output up to its end.
        TimeoutError after timeout seconds. When QEMU is replaced meanwhile,
        waits on in the new one's output."""
        if isinstance(pattern, str):
            pattern = pattern.encode()
        rx = re.compile(pattern, re.S) if isinstance(pattern, bytes) else pattern
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self._buf)
            if m:
                self._buf = self._buf[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the guest printed no {rx.pattern!r} in {timeout} s; "
                                   f"its last output: {self._buf[-300:]!r}")
            if not select.select([self._sock], [], [], left)[0]:
                continue
            data = self._sock.recv(65536)
            if data:
                self._buf += data
            else:
                self._connect()

    def run(self, command: str, timeout: float = 60) -> Tuple[str, int]:
        """Run command in the guest's shell; its output (without the last
        newline) and exit status."""
        self._n += 1
        n = self._n
        # The markers are split by quotes so that the typed line's echo
        # never matches, only the command's own output does.
        self.sendline(f'echo "@@{n}""B"; {command}; echo "@@{n}""E $?"')
        m = self.expect(rb"@@%dB\r?\n(.*?)@@%dE (\d+)\r?\n" % (n, n), timeout)
        out = m.group(1).decode(errors="replace").replace("\r\n", "\n")
        return out[:-1] if out.endswith("\n") else out, int(m.group(2))
