"""The pytest plugin tried as a new user would: a small suite written into a
temporary folder, run with pytest -p qsnap.pytest_plugin against a VM of
the test guest. One test deletes files and kills the guest's shell, one
panics the kernel, one fails on purpose; every test after them must see
the clean ready state; the failed test's snapshot must exist and restore
to the state it failed in."""

import os
import re
import shutil
import subprocess
import sys

from conftest import QEMU, ROOT, console, create

import qsnap

SUITE = r'''
import pytest


def check_clean(con):
    assert con.run("echo alive") == ("alive", 0)
    assert con.run("test -e /bin/ls")[1] == 0, "a file the first test deleted is missing"
    assert con.run("test -e /mnt/dirty")[1] == 1, "the first test's file is there"
    assert con.run("cat /tmp/failmark")[1] == 1, "the failing test's file is there"


def test_1_deletes_files_and_kills_the_shell(qsnap_console):
    con = qsnap_console
    assert con.run("rm -f /bin/ls && echo x > /mnt/dirty && sync")[1] == 0
    con.sendline("kill -9 $$")


def test_2_clean(qsnap_console):
    check_clean(qsnap_console)


@pytest.mark.qsnap_crash
def test_3_panics_the_kernel(qsnap_console):
    qsnap_console.sendline("echo c > /proc/sysrq-trigger")
    qsnap_console.expect("Kernel panic", timeout=60)


def test_4_clean(qsnap_console):
    check_clean(qsnap_console)


def test_5_fails_on_purpose(qsnap_console):
    assert qsnap_console.run("echo failed-state > /tmp/failmark")[1] == 0
    assert False, "on purpose"


def test_6_clean(qsnap_console):
    check_clean(qsnap_console)
'''

# What the plugin reported, for tests/run's output (conftest prints it).
REPORT = []


def test_plugin_as_a_new_user(tmp_path, base):
    vm = create(tmp_path, base, ram_mode="shared")
    vmdir = vm.path
    # The QEMU under test comes from the plugin's option, as a user would
    # give it: the VM is made with the default one.
    vm.set_qemu(None)
    vm.close()
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_guest.py").write_text(SUITE)
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "python")}
    qemu = QEMU or shutil.which("qemu-system-x86_64")
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "qsnap.pytest_plugin",
                        "-p", "no:cacheprovider", "--qsnap-vm", vmdir, "--qsnap-qemu", qemu,
                        str(suite)],
                       cwd=suite, env=env, capture_output=True, text=True, timeout=1800)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert re.search(r"\b1 failed, 5 passed\b", out), out
    assert "test_5_fails_on_purpose" in out and "on purpose" in out
    m = re.search(r"boot and save: .*", out)
    assert m, out
    REPORT.append("qsnap plugin: " + m.group(0))
    assert re.search(r"6 restores", m.group(0)), m.group(0)
    assert re.search(r"failed .*test_5_fails_on_purpose: its VM is snapshot "
                     r"failed-test_5_fails_on_purpose", out), out
    # The kept snapshot is the VM as the test left it.
    with qsnap.VM.open(vmdir) as v:
        check_qemu = v.definition("qemu")
        assert check_qemu == qemu, f"the VM runs on {check_qemu}, not the --qsnap-qemu {qemu}"
        names = [s.name for s in v.snapshots()]
        assert names == ["ready", "failed-test_5_fails_on_purpose"], names
        v.restore("failed-test_5_fails_on_purpose")
        with v.console() as con:
            assert con.run("cat /tmp/failmark") == ("failed-state", 0)
        v.stop()
