"""Chain upkeep: compact merges unneeded layers and flattens long live chains."""

from harness import check, qsnap


def chain_len(vm):
    return vm.status()["drives"][0]["chain_length"]


def saves(vm, names):
    for n in names:
        vm.sh(f"echo {n} > /mnt/{n}; echo {n} > /mnt/last; sync; X={n}")
        vm.save(n)


def check_snapshot(vm, name, present):
    vm.restore(name)
    check(vm.sh('echo "$X"') == name and vm.sh("cat /mnt/last") == name, f"{name} restored wrong")
    for p in present:
        check(vm.sh(f"cat /mnt/{p}") == p, f"{name}: /mnt/{p} lost")


def test_compact_running_and_stopped(t):
    vm = t.vm()
    vm.boot()
    qsnap("config", vm.dir, "--max-chain", "50")
    names = ["s1", "s2", "s3", "s4", "s5", "s6"]
    saves(vm, names)
    before = chain_len(vm)
    for n in ["s2", "s3", "s4"]:
        qsnap("delete", vm.dir, n)
    out = qsnap("compact", vm.dir, "--max-chain", "50").stdout
    check("3 layers merged" in out, out)
    check(chain_len(vm) == before - 3, f"chain {before} -> {chain_len(vm)}")
    # Every remaining snapshot is exactly what it was.
    check_snapshot(vm, "s5", names[:5])
    check_snapshot(vm, "s1", names[:1])
    check_snapshot(vm, "s6", names)
    # The limit is exact: a chain as long as the limit stays, one image
    # longer is flattened (while the guest runs).
    n = chain_len(vm)
    out = qsnap("compact", vm.dir, "--max-chain", str(n)).stdout
    check("0 chains flattened" in out and chain_len(vm) == n, f"{out} / {chain_len(vm)}")
    out = qsnap("compact", vm.dir, "--max-chain", str(n - 1)).stdout
    check("1 chains flattened" in out and chain_len(vm) == 2, f"{out} / {chain_len(vm)}")
    check(vm.sh("cat /mnt/last") == "s6", "the running guest's disk changed")
    check_snapshot(vm, "s5", names[:5])
    # Stopped: the same through qemu-img; a cold boot sees the data.
    vm.sh("sync")
    vm.stop()
    qsnap("compact", vm.dir, "--max-chain", "2")
    check(chain_len(vm) == 2, f"stopped chain {chain_len(vm)}")
    vm.boot()
    check(vm.sh("cat /mnt/last") == "s5", "cold boot after compact")
    check_snapshot(vm, "s1", names[:1])


def test_saves_compact_past_the_limit(t):
    vm = t.vm()
    vm.boot()
    qsnap("config", vm.dir, "--max-chain", "4")
    names = [f"a{i}" for i in range(6)]
    for i, n in enumerate(names):
        saves(vm, [n])
        check(chain_len(vm) <= 4, f"after {i + 1} saves the chain is {chain_len(vm)}, past the limit")
    for n in ["a0", "a3", "a5"]:
        check_snapshot(vm, n, names[: int(n[1:]) + 1])
