"""Bounds before allocation, and archives and artifacts that lie: sizes
and counts from a registry's manifest and config, a tar header and
qsnap-export.json are held to the definition before a file is made, and
tar entries that are not plain files of an export are refused. Real
archives (qsnap export, rewritten) and a real docker-registry that the
test writes hostile artifacts into."""

import json
import os
import subprocess
import tarfile
import time

from harness import QEMU_ARGS, check, qsnap
from test_origin import Proxy
from test_registry import leftovers, one_line, registry
from test_trust import exported, put_blob, put_hostile, read_members


def read_tar(path):
    with tarfile.open(path) as tf:
        return read_members(tf)


def write_tar(path, members, tail=b""):
    with open(path, "wb") as f:
        for m, data in members:
            f.write(m.tobuf(tarfile.PAX_FORMAT))
            if data is not None:
                f.write(data + b"\0" * (-len(data) % 512))
        f.write(tail)


def import_refused(t, tar, word, *args):
    new = os.path.join(t.dir, "new")
    before = sorted(os.listdir(t.dir))
    p = qsnap("import", "--quiet", new, tar, *QEMU_ARGS, *args, ok=False)
    check(one_line(p) and word in p.stderr and "nothing was imported" in p.stderr,
          f"{os.path.basename(tar)}: {p.stderr}")
    check(sorted(os.listdir(t.dir)) == before, f"{os.path.basename(tar)} left "
          f"{set(os.listdir(t.dir)) - set(before)}")


def test_import_hostile_archives(t):
    vm, tar = exported(t)
    members = read_tar(tar)
    names = [m.name for m, _ in members]
    check(names.index("vm.json") < names.index("snapshot/vmstate"), f"export order: {names}")

    # A machine state whose tar header and manifest say 1 TiB (the data
    # is not there): refused on the sizes, before any of it is written.
    huge = 1 << 40
    manifest = json.loads(members[0][1])
    for f in manifest["files"]:
        if f["path"] == "snapshot/vmstate":
            f["size"] = huge
    mdata = json.dumps(manifest).encode()
    members[0][0].size = len(mdata)
    cut = []
    for m, data in members:
        if m.name == "snapshot/vmstate":
            m.size = huge
            cut.append((m, None))
            break
        cut.append((m, mdata if m.name == "qsnap-export.json" else data))
    bad = os.path.join(t.dir, "huge.tar")
    write_tar(bad, cut, tail=b"\0" * 4096)
    import_refused(t, bad, "too many for a guest of 256 MiB")

    # A manifest that lists a file the archive lacks, or another size.
    for name, change, word in (
            ("lacks", lambda m: m["files"].append(dict(m["files"][0], path="images/vdb.qcow2")),
             "has no images/vdb.qcow2, which its manifest lists"),
            ("size", lambda m: next(f for f in m["files"] if f["path"] == "vm.json").update(size=7),
             "vm.json has")):
        members = read_tar(tar)
        manifest = json.loads(members[0][1])
        change(manifest)
        mdata = json.dumps(manifest).encode()
        members[0][0].size = len(mdata)
        members[0] = (members[0][0], mdata)
        bad = os.path.join(t.dir, f"{name}.tar")
        write_tar(bad, members, tail=b"\0" * 1024)
        import_refused(t, bad, word)

    # The machine state before vm.json.
    members = read_tar(tar)
    order = [x for x in members if x[0].name != "vm.json"]
    i = [m.name for m, _ in order].index("snapshot/vmstate")
    order.insert(i + 1, next(x for x in members if x[0].name == "vm.json"))
    bad = os.path.join(t.dir, "order.tar")
    write_tar(bad, order, tail=b"\0" * 1024)
    import_refused(t, bad, "before a vm.json")

    # Entries that are not plain files of an export, after a good manifest.
    outside = os.path.join(t.dir, "escaped")
    evil = {
        "dotdot": tarfile.TarInfo("../escaped"),
        "absolute": tarfile.TarInfo(outside),
        "symlink": tarfile.TarInfo("images/vda.qcow2"),
        "hardlink": tarfile.TarInfo("boot/kernel"),
        "device": tarfile.TarInfo("images/vdb.raw"),
        "fifo": tarfile.TarInfo("boot/initrd"),
    }
    evil["symlink"].type, evil["symlink"].linkname = tarfile.SYMTYPE, "/etc/shadow"
    evil["hardlink"].type, evil["hardlink"].linkname = tarfile.LNKTYPE, "/etc/shadow"
    evil["device"].type, evil["device"].devmajor, evil["device"].devminor = tarfile.BLKTYPE, 8, 0
    evil["fifo"].type = tarfile.FIFOTYPE
    for name, info in evil.items():
        data = b"x" * 10 if info.type == tarfile.REGTYPE else None
        if data:
            info.size = len(data)
        bad = os.path.join(t.dir, f"{name}.tar")
        write_tar(bad, [members[0], (info, data)] + members[1:], tail=b"\0" * 1024)
        word = "not a plain file" if info.type != tarfile.REGTYPE else "does not list"
        import_refused(t, bad, word)
        check(not os.path.exists(outside), f"{name}: a file outside the target was written")


def test_pull_hostile_sizes(t):
    vm = t.vm()
    qsnap("start", vm.dir)
    vm.save("S")
    vm.stop()
    cs = 32 << 20
    with registry(t) as reg:
        qsnap("push", "--insecure", "--quiet", vm.dir, "S", reg.ref("qsnap/vm"))

        def refused(tag, word):
            new = os.path.join(t.dir, "new")
            t0 = time.time()
            p = qsnap("pull", "--insecure", "--quiet", reg.ref("qsnap/vm", tag), new, *QEMU_ARGS,
                      ok=False)
            check(one_line(p) and word in p.stderr and "nothing was created" in p.stderr,
                  f"{tag}: {p.stderr}")
            check(leftovers(t.dir, "new") == [], f"{tag}: left {leftovers(t.dir, 'new')}")
            check(time.time() - t0 < 30, f"{tag}: took {time.time() - t0:.0f} s")

        # A 1 TiB machine state of zero chunks (nothing to download).
        def huge_state(c):
            n = (1 << 40) // cs
            c["machine_state"].update(size=1 << 40, chunks=[None] * n)
        put_hostile(reg, "qsnap/vm", "huge", "S", huge_state)
        refused("huge", "a machine state of 1099511627776 bytes for a guest of 256 MiB")

        # Shared RAM of another size than vm.json's memory.
        def ram(c):
            c["snapshot"]["mode"] = "shared"
            c["ram"] = {"file": "ram", "size": 1 << 40, "chunk_size": cs,
                        "chunks": [None] * ((1 << 40) // cs)}
        put_hostile(reg, "qsnap/vm", "ram", "S", ram)
        refused("ram", "its RAM has 1099511627776 bytes, its vm.json says 268435456")

        # vm.json's memory not the snapshot's.
        put_hostile(reg, "qsnap/vm", "memory", "S",
                    lambda c: c["vm"].update(memory=512 << 20))
        refused("memory", "taken with 268435456 bytes of RAM, its vm.json says 536870912")

        # Chunk lists that do not add up; another chunk size.
        put_hostile(reg, "qsnap/vm", "chunks", "S",
                    lambda c: c["machine_state"]["chunks"].append(None))
        refused("chunks", "damaged (machine_state)")
        put_hostile(reg, "qsnap/vm", "chunksize", "S",
                    lambda c: c["machine_state"].update(chunk_size=1 << 30))
        refused("chunksize", "damaged (machine_state)")

        # A manifest with a blob that the config does not name.
        extra = put_blob(reg, "qsnap/vm", os.urandom(1000))
        put_hostile(reg, "qsnap/vm", "extra", "S", lambda c: None, extra_layers=[
            {"mediaType": "application/vnd.qsnap.disk.raw", "digest": extra, "size": 1000}])
        refused("extra", f"lists blob {extra}, which its config does not name")

        # A 100 MiB manifest, from a front (the registry would not take it):
        # refused after 4 MiB.
        big = b'{"schemaVersion":2,"pad":"' + b"x" * (100 << 20) + b'"}'

        def answer(method, path):
            if "/manifests/" in path:
                return 200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, big
            return None
        front = Proxy(reg.host, answer=answer)
        try:
            p = qsnap("pull", "--insecure", "--quiet", f"{front.host}/qsnap/vm:S",
                      os.path.join(t.dir, "big"), ok=False)
            check(one_line(p) and "too large" in p.stderr, f"100 MiB manifest: {p.stderr}")
            check(leftovers(t.dir, "big") == [], f"left {leftovers(t.dir, 'big')}")
        finally:
            front.stop()


def test_pull_layer_naming_host_files(t):
    """A layer whose qcow2 header names a data file on this host, or a base
    image with a backing file: refused, and the named file untouched."""
    vm = t.vm()
    qsnap("start", vm.dir)
    vm.save("S")
    vm.stop()
    victim = os.path.join(t.dir, "victim")
    with open(victim, "wb") as f:
        f.write(b"precious" * 1000)
    evil_layer = os.path.join(t.dir, "evil-layer.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={os.path.join(t.dir, 'scratch.raw')}", evil_layer, "64M"], check=True)
    # The header names the victim (made with a scratch file, then amended
    # without touching either).
    subprocess.run(["qemu-img", "amend", "-q", "-f", "qcow2", "-o", f"data_file={victim}",
                    evil_layer], check=True)
    evil_base = os.path.join(t.dir, "evil-base.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", victim, "-F", "raw",
                    evil_base, "64M"], check=True)
    before = open(victim, "rb").read()
    with registry(t) as reg:
        qsnap("push", "--insecure", "--quiet", vm.dir, "S", reg.ref("qsnap/vm"))
        for tag, path, where, word in (
                ("layer", evil_layer, "layers", "names a data file: a pulled layer may not"),
                ("base", evil_base, "base", "names a backing or data file")):
            data = open(path, "rb").read()
            digest = put_blob(reg, "qsnap/vm", data)

            def change(c):
                item = {"digest": digest, "size": len(data)}
                if where == "base":
                    c["drives"][0]["base"] = item
                else:
                    c["drives"][0]["layers"][0] = item
            put_hostile(reg, "qsnap/vm", tag, "S", change, extra_layers=[
                {"mediaType": "application/vnd.qsnap.disk.qcow2", "digest": digest,
                 "size": len(data)}])
            new = os.path.join(t.dir, "new")
            p = qsnap("pull", "--insecure", "--quiet", reg.ref("qsnap/vm", tag), new, *QEMU_ARGS,
                      ok=False)
            check(one_line(p) and word in p.stderr and "nothing was created" in p.stderr,
                  f"{tag}: {p.stderr}")
            check(leftovers(t.dir, "new") == [], f"{tag}: left {leftovers(t.dir, 'new')}")
            check(open(victim, "rb").read() == before, f"{tag}: the named host file changed")
