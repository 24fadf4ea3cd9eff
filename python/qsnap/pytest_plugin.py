"""A fresh VM for every test: pytest -p qsnap.pytest_plugin --qsnap-vm DIR.

The session boots the VM in DIR (a VM directory made by qsnap init or
qsnap.VM.create) once, waits until its serial console runs a shell
command, and saves it as the snapshot "ready". Before each test that uses
the qsnap_vm fixture (or qsnap_console) the VM is restored to it, lazily
where its RAM mode allows (a fraction of a second), so every test starts
from the same machine. When a test fails, the VM's state is saved as a
snapshot named after it before the next restore (kept for debugging and
listed in the summary). Options, on the command line or in pytest.ini:

    --qsnap-vm DIR         qsnap_vm = DIR          the VM directory
    --qsnap-snapshot NAME  qsnap_snapshot = NAME   the snapshot (default ready)
    --qsnap-keep-failures, --qsnap-no-keep-failures
                           qsnap_keep_failures = true|false (default true)
    --qsnap-qemu PATH      qsnap_qemu = PATH       the QEMU binary (default:
                           the VM's own, qsnap init --qemu); set on the VM
                           when the session starts it (as qsnap config --qemu)

Markers: qsnap_no_restore (the test goes on from where the one before it
left the VM: a chain of dependent steps), qsnap_crash (the test crashes the
guest on purpose: no failure snapshot; the next test restores as always).
"""

import re
import time

import pytest

from .console import Console
from .errors import Error
from .vm import VM


def pytest_addoption(parser):
    g = parser.getgroup("qsnap", "a fresh qsnap VM for every test")
    g.addoption("--qsnap-vm", help="the VM directory the tests run in")
    g.addoption("--qsnap-snapshot", help="the snapshot every test starts from (ready)")
    g.addoption("--qsnap-keep-failures", action="store_true", default=None,
                help="save a failed test's VM as a snapshot named after it (the default)")
    g.addoption("--qsnap-no-keep-failures", dest="qsnap_keep_failures",
                action="store_false", help="do not keep failed tests' VMs")
    g.addoption("--qsnap-qemu", help="the QEMU binary the VM runs on (default: the VM's own)")
    parser.addini("qsnap_vm", "the VM directory the tests run in")
    parser.addini("qsnap_qemu", "the QEMU binary the VM runs on")
    parser.addini("qsnap_snapshot", "the snapshot every test starts from", default="ready")
    parser.addini("qsnap_keep_failures", "keep failed tests' VMs as snapshots", type="bool",
                  default=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "qsnap_no_restore: go on from where the test before "
                            "left the VM")
    config.addinivalue_line("markers", "qsnap_crash: crashes the guest on purpose; no "
                            "failure snapshot")
    config._qsnap = {"failures": [], "restores": [], "boot": None}


def _opt(config, name):
    v = config.getoption("qsnap_" + name)
    return config.getini("qsnap_" + name) if v is None else v


def _wait_for_shell(con: Console, timeout: float) -> None:
    """Until the guest's console runs a command (its shell is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            con.run("true", timeout=3)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def _snapshot_name(nodeid: str) -> str:
    name = "failed-" + re.sub(r"[^A-Za-z0-9._-]+", "-", nodeid.split("::")[-1]).strip("-.")
    return name[:64]


@pytest.fixture(scope="session")
def qsnap_session_vm(request):
    """The VM, booted once for the session with its snapshot saved."""
    config = request.config
    path = _opt(config, "vm")
    if not path:
        pytest.fail("qsnap: name the VM directory with --qsnap-vm or qsnap_vm in pytest.ini",
                    pytrace=False)
    snapshot = _opt(config, "snapshot") or "ready"
    vm = VM.open(path)
    t0 = time.monotonic()
    qemu = _opt(config, "qemu")
    if qemu and vm.status().state == "running" and vm.definition("qemu") != qemu:
        vm.stop()  # a running VM on another QEMU: started again on this one
    if vm.status().state in ("stopped", "crashed"):
        if qemu:
            vm.set_qemu(qemu)
        vm.start()
    with vm.console() as con:
        _wait_for_shell(con, 600)
    vm.save(snapshot, replace=True)
    config._qsnap["boot"] = time.monotonic() - t0
    config._qsnap["path"] = vm.path
    yield vm
    vm.stop()
    vm.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item._qsnap_failed = rep.failed


@pytest.fixture
def qsnap_vm(request, qsnap_session_vm):
    """The VM, restored to the session's snapshot before the test."""
    config = request.config
    vm = qsnap_session_vm
    snapshot = _opt(config, "snapshot") or "ready"
    if not request.node.get_closest_marker("qsnap_no_restore"):
        t0 = time.monotonic()
        vm.restore(snapshot, lazy=True)
        config._qsnap["restores"].append(time.monotonic() - t0)
    yield vm
    keep = _opt(config, "keep_failures")
    if (getattr(request.node, "_qsnap_failed", False) and keep not in (False, "false")
            and not request.node.get_closest_marker("qsnap_crash")):
        name = _snapshot_name(request.node.nodeid)
        try:
            vm.save(name, replace=True)
            config._qsnap["failures"].append((request.node.nodeid, name))
        except Error as e:
            config._qsnap["failures"].append((request.node.nodeid, f"not saved: {e}"))


@pytest.fixture
def qsnap_console(qsnap_vm):
    """The guest's serial console, on the freshly restored VM."""
    with qsnap_vm.console() as con:
        yield con


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    q = getattr(config, "_qsnap", None)
    if not q or q["boot"] is None:
        return
    tr = terminalreporter
    tr.section("qsnap")
    r = q["restores"]
    tr.write_line(f"boot and save: {q['boot']:.2f} s; {len(r)} restores, "
                  f"{(sum(r) / len(r) if r else 0):.3f} s each on average, "
                  f"{max(r) if r else 0:.3f} s the longest")
    for nodeid, name in q["failures"]:
        tr.write_line(f"failed {nodeid}: its VM is snapshot {name} "
                      f"(qsnap restore {q.get('path', 'VMDIR')} {name})")
