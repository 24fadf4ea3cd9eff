"""The binding's tests run on the build tree: python/ on sys.path and
libqsnap.so.1 of build/ (QSNAP_LIBRARY), the test guest of build/guest,
as tests/run.py sets them up (or by hand:
QSNAP_LIBRARY=build/src/lib/libqsnap.so.1 PYTHONPATH=python python3 -m pytest tests/python)."""

import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("QSNAP_BUILD", os.path.join(ROOT, "build"))
GUEST = os.environ.get("QSNAP_GUEST", os.path.join(BUILD, "guest"))
ACCEL = os.environ.get("QSNAP_TEST_ACCEL", "tcg")
QEMU = os.environ.get("QSNAP_TEST_QEMU") or None

sys.path.insert(0, os.path.join(ROOT, "python"))
os.environ["QSNAP_LIBRARY"] = os.path.abspath(
    os.environ.get("QSNAP_LIBRARY") or os.path.join(BUILD, "src", "lib", "libqsnap.so.1"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import qsnap  # noqa: E402
from harness import Serial  # noqa: E402  the guest's shell on run/serial.sock


@pytest.fixture
def base(tmp_path):
    """An empty 64 MiB qcow2 base image (the guest formats it)."""
    path = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path


def create(tmp_path, base, name="vm", **kw):
    kw.setdefault("memory", "256M")
    return qsnap.VM.create(tmp_path / name, drives={"vda": base},
                           kernel=os.path.join(GUEST, "vmlinuz"),
                           initrd=os.path.join(GUEST, "initramfs.img"),
                           append="console=ttyS0 quiet", accel=ACCEL, qemu=QEMU, **kw)


@pytest.fixture
def vm(tmp_path, base):
    """A VM of the test guest, not started; stopped and closed after."""
    v = create(tmp_path, base)
    yield v
    if v._vm:
        v.stop()
        v.close()


def boot(v, timeout=180):
    """Start v and wait for the guest's shell; returns a Serial on it."""
    v.start()
    log = os.path.join(v.path, "run", "serial.log")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(log) and b"READY" in open(log, "rb").read():
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the guest printed no READY in {timeout} s")
    return console(v)


def console(v):
    s = Serial(os.path.join(v.path, "run", "serial.sock"))
    s.sh("true")
    return s


def pytest_terminal_summary(terminalreporter):
    import test_plugin
    for line in getattr(test_plugin, "REPORT", []):
        terminalreporter.write_line(line)
