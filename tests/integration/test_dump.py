"""Memory dumps of a running VM, and loading one back for inspection."""

import os

from harness import check, file_digest, qsnap
from test_snapshots import fill_guest, guest_view


def test_dump_running_guest_goes_on(t):
    vm = t.vm()
    vm.boot()
    saved = fill_guest(vm, "dump", mib=8)
    out = os.path.join(t.dir, "mem.zst")
    p = qsnap("dump-memory", vm.dir, out)
    check("dumped" in p.stdout, p.stdout)
    with open(out, "rb") as f:
        check(f.read(4) == b"\x28\xb5\x2f\xfd", "the dump is not zstd")
    check(not os.path.exists(out + ".partial"), "partial file left")
    # The guest went on running, as it was.
    check(vm.status()["state"] == "running", "the VM does not run after the dump")
    check(guest_view(vm) == saved, "the dump changed the guest")
    vm.sh("X=later")
    # Loaded for inspection: paused, and (once continued) the guest at the dump.
    vm.stop()
    p = qsnap("start", vm.dir, "--from-dump", out)
    check(vm.status()["state"] == "paused", "the dump did not load paused")
    p = qsnap("save", vm.dir, "x", ok=False)
    check(p.returncode != 0 and "inspection" in p.stderr, p.stderr)
    qsnap("qmp", vm.dir, "cont")
    vm.connect()
    check(guest_view(vm) == saved, "the loaded dump is not the guest at the dump")


def test_dump_ram_matches(t):
    vm = t.vm()
    vm.boot()
    fill_guest(vm, "ram", mib=16)
    qsnap("qmp", vm.dir, "stop")
    out = os.path.join(t.dir, "mem.zst")
    qsnap("dump-memory", vm.dir, out)
    size = 256 << 20
    qsnap("qmp", vm.dir, "pmemsave", f'{{"val": 0, "size": {size}, "filename": "orig.ram"}}')
    vm.stop()
    qsnap("start", vm.dir, "--from-dump", out)
    qsnap("qmp", vm.dir, "pmemsave", f'{{"val": 0, "size": {size}, "filename": "loaded.ram"}}')
    check(file_digest(vm.path("orig.ram")) == file_digest(vm.path("loaded.ram")),
          "the RAM loaded from the dump differs from the guest's RAM at the dump")


def test_dump_elf_and_errors(t):
    vm = t.vm()
    vm.boot()
    out = os.path.join(t.dir, "core.elf")
    qsnap("dump-memory", vm.dir, out, "--format", "elf", "--no-compress")
    with open(out, "rb") as f:
        check(f.read(4) == b"\x7fELF", "not an ELF core")
    check(os.path.getsize(out) >= 256 << 20, "the core is smaller than guest RAM")
    check(vm.sh("echo alive") == "alive", "the guest stopped after the ELF dump")
    p = qsnap("dump-memory", vm.dir, os.path.join(t.dir, "no/such/dir/x"), ok=False)
    check(p.returncode != 0 and "no/such/dir" in p.stderr, p.stderr)
    vm.stop()
    p = qsnap("start", vm.dir, "--from-dump", out, ok=False)
    check(p.returncode != 0 and "ELF" in p.stderr, p.stderr)


def test_dump_after_lazy_restore(t):
    """RAM mapped copy-on-write from a snapshot cannot be write-protected for
    a live dump: the dump pauses the guest instead, and the guest goes on."""
    vm = t.vm(extra_init=["--ram-mode", "shared"])
    vm.boot()
    fill_guest(vm, "a", mib=4)
    vm.save("A")
    vm.restore("A", "--lazy")
    saved = fill_guest(vm, "b", mib=4)
    out = os.path.join(t.dir, "mem.zst")
    p = qsnap("dump-memory", vm.dir, out)
    check("dumped" in p.stdout, p.stdout)
    check(vm.status()["state"] == "running", "the VM does not run after the dump")
    check(guest_view(vm) == saved, "the dump changed the guest")
    vm.stop()
    qsnap("start", vm.dir, "--from-dump", out)
    qsnap("qmp", vm.dir, "cont")
    vm.connect()
    check(guest_view(vm) == saved, "the loaded dump is not the guest at the dump")
