"""What qsnap learns from the QEMU it runs, and what QEMU says about it."""

import os
import re

from harness import QEMU, check, qsnap
from test_snapshots import fill_guest, guest_view


def qemu_log(vm):
    with open(vm.path("run", "qemu.log"), errors="replace") as f:
        return f.read()


def test_no_deprecation_warnings(t):
    """Every kind of save, restore and dump, and QEMU's log has no warning
    that qsnap uses something QEMU deprecated (QEMU 10 warns for fd: to a
    file, QEMU 9.1 removed the compress capability)."""
    vm = t.vm(extra_init=["--ram-mode", "shared"])
    vm.boot()
    saved = fill_guest(vm, "a", mib=4)
    vm.save("shared")
    vm.save("live", "--live")
    vm.save("zst", "--compress")
    qsnap("dump-memory", vm.dir, os.path.join(t.dir, "d.zst"))
    qsnap("dump-memory", vm.dir, os.path.join(t.dir, "d.raw"), "--no-compress")
    for s in ("shared", "live", "zst"):
        vm.restore(s)
        check(guest_view(vm) == saved, f"snapshot {s} restored wrong")
    vm.restore("shared", "--lazy")
    vm.save("stream")
    vm.restore("stream")
    check(guest_view(vm) == saved, "snapshot stream restored wrong")
    log = qemu_log(vm)
    bad = [l for l in log.splitlines() if re.search(r"deprecat|warning", l, re.I)]
    check(not bad, f"QEMU ({QEMU or 'the system QEMU'}) warned:\n" + "\n".join(bad))
