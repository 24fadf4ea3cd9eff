"""Soak: many save/restore cycles on one VM. Every cycle checks the guest's
exact state; over the run, disk use of the VM directory and QEMU's memory
must not keep growing.

QSNAP_SOAK_CYCLES sets the number of cycles (default 10, for make check);
the long run is
    QSNAP_SOAK_CYCLES=100 tests/run test_soak
QSNAP_SOAK_MODES is the list of snapshot modes that the cycles go through
in turn (default "stream"); see save_args() for adding one.
"""

import os
import time

from harness import Fail, check, process_running

CYCLES = int(os.environ.get("QSNAP_SOAK_CYCLES", "10"))
MODES = [m for m in os.environ.get("QSNAP_SOAK_MODES", "stream").split(",") if m]
# Growth allowed per cycle once the VM has warmed up. Each save --replace
# plus restore leaves one more (small) layer in the live chain until qsnap
# merges long chains (DESIGN.md, chain upkeep): about 0.3 MiB here. A leak
# of anything real (a machine state, a RAM image) is tens of MiB per cycle.
DISK_PER_CYCLE = 2 << 20
WARMUP = 2


def save_args(mode):
    """The qsnap save options for a snapshot mode. The hook for alternating
    modes: when shared-RAM mode lands, return its option here (e.g.
    ["--mode", "shared"]) and run with QSNAP_SOAK_MODES=stream,shared."""
    if mode == "stream":
        return []
    raise Fail(f"soak: snapshot mode {mode!r} is not supported yet (QSNAP_SOAK_MODES)")


def mark(vm, tag, mib=4):
    vm.sh(f"X={tag}-$RANDOM$RANDOM")
    vm.sh(f"dd if=/dev/urandom of=/tmp/ram.bin bs=1M count={mib} 2>/dev/null")
    vm.sh(f"echo {tag} > /mnt/who; sync")
    return view(vm)


def view(vm):
    return {
        "x": vm.sh('echo "$X"'),
        "ram": vm.sh("md5sum /tmp/ram.bin | cut -d' ' -f1"),
        "disk": vm.sh("cat /mnt/who"),
    }


def disk_use(top):
    """Bytes allocated under top (sparse files count what they use)."""
    total = 0
    for d, dirs, files in os.walk(top):
        for n in files:
            try:
                total += os.lstat(os.path.join(d, n)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def qemus(vm):
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink(f"/proc/{p}/cwd") == os.path.realpath(vm.dir) and \
                        process_running(p):
                    n += 1
            except OSError:
                pass
    return n


def test_save_restore_cycles(t):
    check(CYCLES >= 1 and MODES, "QSNAP_SOAK_CYCLES must be at least 1 and QSNAP_SOAK_MODES set")
    vm = t.vm()
    vm.boot()
    base = mark(vm, "base")
    vm.save("base")
    du, mem, chain = [], [], []
    t0 = time.time()
    for i in range(CYCLES):
        mode = MODES[i % len(MODES)]
        want = mark(vm, f"c{i}")
        vm.save("lastgood", "--replace", *save_args(mode))
        # Break the guest: RAM, the shell, the disk.
        vm.sh("X=broken; dd if=/dev/urandom of=/tmp/ram.bin bs=1M count=2 2>/dev/null; "
              "echo broken > /mnt/who; sync")
        vm.restore("lastgood")
        got = view(vm)
        check(got == want, f"cycle {i} ({mode}): restored {got}, saved {want}")
        if i % 5 == 4:
            # Now and then back to the oldest snapshot, then on from there.
            vm.restore("base")
            check(view(vm) == base, f"cycle {i}: base restored wrong")
        names = sorted(s["name"] for s in vm.snapshots())
        check(names == ["base", "lastgood"], f"cycle {i}: snapshots {names}")
        check(qemus(vm) == 1, f"cycle {i}: {qemus(vm)} QEMUs for the VM")
        du.append(disk_use(vm.dir))
        mem.append(rss(vm.qemu_pid()))
        chain.append(vm.status()["drives"][0]["chain_length"])
    mib = 1 << 20
    print(f"     soak: {CYCLES} cycles in {time.time() - t0:.0f} s; VM directory "
          f"{du[0] / mib:.0f} -> {du[-1] / mib:.0f} MiB, QEMU RSS {mem[0] / mib:.0f} -> "
          f"{mem[-1] / mib:.0f} MiB (max {max(mem) / mib:.0f}), chain {chain[0]} -> {chain[-1]}",
          flush=True)
    ref = min(WARMUP, CYCLES - 1)
    for i in range(ref, CYCLES):
        allowed = du[ref] + (i - ref) * DISK_PER_CYCLE
        check(du[i] <= allowed, f"disk use grows: cycle {i}: {du[i] / mib:.1f} MiB, "
              f"cycle {ref}: {du[ref] / mib:.1f} MiB (all: {[round(d / mib) for d in du]})")
    # Every restore starts a new QEMU: its memory is the guest's, not a sum
    # over the cycles.
    first = max(mem[: max(1, CYCLES // 2)])
    check(max(mem) <= first * 1.25 + 32 * mib,
          f"QEMU's RSS grows: {[round(m / mib) for m in mem]} MiB")
