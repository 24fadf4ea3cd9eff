"""The library's floors, checked on its object files.

libqsnap's files live in floors (src/lib/base, qemu, vmdir, registry, ops,
in that order). A file may use what its own floor or a floor below defines,
never a floor above, and no files use each other in a cycle, however long.
This reads the symbols each object file defines and uses (nm) from the
static library and checks both.

Usage: python3 tests/layers.py build/src/lib/libqsnap-internal.a
Exit 0 when the floors hold; otherwise the offending uses, one per line.
"""

import collections
import os
import subprocess
import sys

FLOORS = ["base", "qemu", "vmdir", "registry", "ops"]


def read_objects(lib):
    """{file: (defined symbols, used symbols)} from `nm -A` of the archive."""
    out = subprocess.run(["nm", "-A", lib], capture_output=True, text=True, check=True).stdout
    defs, uses = {}, collections.defaultdict(set)
    files = set()
    for line in out.splitlines():
        parts = line.split()
        member = parts[0].split(":")[1]
        # meson names objects after their source: base_alloc.c.o
        name = os.path.basename(member)[: -len(".c.o")]
        files.add(name)
        kind, sym = parts[-2], parts[-1]
        if kind == "U":
            uses[name].add(sym)
        elif kind.isupper():
            defs[sym] = name
    return files, defs, uses


def floor_of(name):
    floor = name.split("_", 1)[0]
    if floor not in FLOORS:
        raise SystemExit(f"{name}: an object file outside the floors {FLOORS}")
    return FLOORS.index(floor)


def cycles(edges, nodes):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found


def check(lib):
    files, defs, uses = read_objects(lib)
    edges = collections.defaultdict(set)
    problems = []
    for f in sorted(files):
        for sym in sorted(uses[f]):
            g = defs.get(sym)
            if not g or g == f:
                continue
            edges[f].add(g)
            if floor_of(g) > floor_of(f):
                problems.append(f"{f} uses {sym} of {g}, a floor above it")
    for comp in cycles(edges, files):
        problems.append("a call cycle: " + " -> ".join(comp))
    return files, problems


if __name__ == "__main__":
    files, problems = check(sys.argv[1])
    for p in problems:
        print(p)
    if not problems:
        print(f"{len(files)} files in {len(FLOORS)} floors: every use goes down or sideways, no cycle")
    sys.exit(1 if problems else 0)
