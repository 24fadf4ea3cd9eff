"""Snapshots from elsewhere are data (README "Trust and security"): what an
archive or a registry artifact may carry into a VM directory, and what is
dropped unless the user gives --trust-config. Real archives (qsnap export,
rewritten by the test) and a real docker-registry that the test writes
hostile artifacts into with plain HTTP requests."""

import ctypes
import hashlib
import io
import json
import os
import tarfile
import urllib.request

from harness import QEMU_ARGS, VM, check, qsnap
from test_registry import config_of, leftovers, one_line, pulled_vm, registry

_xxh = ctypes.CDLL("libxxhash.so.0")


class _XXH128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


_xxh.XXH3_128bits.restype = _XXH128
_xxh.XXH3_128bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def xxh3(data):
    """qsnap's checksum of data: "xxh3-128:" and the canonical hex."""
    h = _xxh.XXH3_128bits(data, len(data))
    return f"xxh3-128:{h.high64:016x}{h.low64:016x}"


def member_data(tf, m):
    """A member's whole data; a sparse one's holes as zeros, put together
    here: tarfile reads a 256 MiB sparse file in minutes."""
    if not m.sparse:
        return tf.extractfile(m).read()
    data = bytearray(m.size)
    pos = m.offset_data
    for off, size in m.sparse:
        tf.fileobj.seek(pos)
        data[off:off + size] = tf.fileobj.read(size)
        pos += size
    return bytes(data)


def read_members(tf):
    """An export's members and their whole data (holes as zeros), to be
    written back: files with holes are GNU sparse entries, whose pax headers
    would describe data that is no longer sparse, so they are dropped."""
    members = []
    for m in tf.getmembers():
        data = member_data(tf, m) if m.isfile() else None
        m.pax_headers = {k: v for k, v in m.pax_headers.items()
                         if not k.startswith("GNU.sparse.")}
        m.sparse = None
        members.append((m, data))
    return members


def rewrite_export(src, dst, change):
    """A copy of export src with vm.json changed by change(dict), its size
    and checksum in qsnap-export.json made to match: an archive that is
    whole, only hostile."""
    with tarfile.open(src) as tf:
        members = read_members(tf)
    files = dict((m.name, data) for m, data in members)
    vm = json.loads(files["vm.json"])
    change(vm)
    new_vm = json.dumps(vm, indent=2).encode()
    manifest = json.loads(files["qsnap-export.json"])
    for f in manifest["files"]:
        if f["path"] == "vm.json":
            f["size"], f["checksum"] = len(new_vm), xxh3(new_vm)
    files["vm.json"] = new_vm
    files["qsnap-export.json"] = json.dumps(manifest, indent=2).encode()
    with tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tf:
        for m, _ in members:
            data = files[m.name]
            m.size = len(data)
            tf.addfile(m, io.BytesIO(data))


def exported(t, name="vm"):
    """A saved, stopped test VM exported to NAME.tar."""
    vm = t.vm(name=name)
    vm.boot()
    vm.sh("X=saved")
    vm.save("S")
    vm.stop()
    tar = os.path.join(t.dir, f"{name}.tar")
    qsnap("export", vm.dir, "S", tar)
    return vm, tar


def hostile(t, vmjson):
    """What an attacker adds to a vm.json: a chardev that writes a host
    file when QEMU starts, another QEMU, a RAM folder, an odd machine."""
    marker = os.path.join(t.dir, "pwned")
    vmjson["extra_args"] = ["-chardev", f"file,id=pwn,path={marker}"]
    vmjson["qemu"] = os.path.join(t.dir, "evil-qemu")
    vmjson["ram_dir"] = os.path.join(t.dir, "evil-ram")
    vmjson["machine"] = "microvm"
    # Save settings tuned for another host.
    vmjson["multifd_channels"] = 64
    vmjson["precopy"] = "off"
    return marker


def test_import_drops_what_runs(t):
    vm, tar = exported(t)
    bad = os.path.join(t.dir, "hostile.tar")
    marker = []
    rewrite_export(tar, bad, lambda v: marker.append(hostile(t, v)))
    with open(os.path.join(t.dir, "evil-qemu"), "w") as f:
        f.write("#!/bin/sh\nexit 1\n")
    os.chmod(os.path.join(t.dir, "evil-qemu"), 0o755)

    # Untrusted: imported, the four dropped, one line saying so.
    new = os.path.join(t.dir, "imported")
    p = qsnap("import", "--quiet", new, bad, *QEMU_ARGS)
    lines = p.stderr.splitlines()
    check(len(lines) == 1 and lines[0].startswith("qsnap: dropped from vm.json in")
          and "extra_args [-chardev" in lines[0] and "evil-qemu" in lines[0]
          and "evil-ram" in lines[0] and "machine microvm" in lines[0]
          and "--trust-config" in lines[0], f"import's notice: {p.stderr}")
    d = json.load(open(os.path.join(new, "vm.json")))
    check(d["extra_args"] == [] and "ram_dir" not in d and "machine" not in d
          and "multifd_channels" not in d and "precopy" not in d
          and "multifd_channels 64" in lines[0]
          and d.get("qemu") == (QEMU_ARGS[1] if QEMU_ARGS else None), f"vm.json: {d}")
    # It restores with this host's QEMU, and the chardev never ran.
    v2 = pulled_vm(t, new)
    v2.restore("S")
    check(v2.sh('echo "$X"') == "saved", "the imported guest differs")
    cmdline = open(f"/proc/{v2.qemu_pid()}/cmdline", "rb").read().split(b"\0")
    check(not any(b"pwn" in a for a in cmdline), f"QEMU ran with {cmdline}")
    check(not os.path.exists(marker[0]), "the archive's chardev wrote a host file")
    v2.stop()

    # Trusted: kept, and the line says what was taken.
    new2 = os.path.join(t.dir, "trusted")
    p = qsnap("import", "--quiet", "--trust-config", new2, bad)
    check(p.stderr.count("\n") == 1 and "taken from vm.json in" in p.stderr
          and "(--trust-config)" in p.stderr and "extra_args [-chardev" in p.stderr,
          f"trusted import's notice: {p.stderr}")
    d = json.load(open(os.path.join(new2, "vm.json")))
    check(d["extra_args"][0] == "-chardev" and d["qemu"].endswith("evil-qemu")
          and d["ram_dir"].endswith("evil-ram") and d["machine"] == "microvm"
          and d["multifd_channels"] == 64 and d["precopy"] == "off",
          f"trusted vm.json: {d}")


def test_import_refuses_paths_outside(t):
    vm, tar = exported(t)
    cases = {
        "drive": (lambda v: v["drives"][0].update(path="/etc/shadow"), "drive 'vda' is /etc/shadow"),
        "kernel": (lambda v: v.update(kernel="/boot/../etc/passwd"), "outside boot/"),
        "memory": (lambda v: v.update(memory=1 << 50), "at most 1 TiB"),
        "machine": (lambda v: v.update(machine="pc,accel=kvm"), None),
    }
    for name, (change, word) in cases.items():
        bad = os.path.join(t.dir, f"{name}.tar")
        rewrite_export(tar, bad, change)
        new = os.path.join(t.dir, "new")
        if word is None:
            # An odd machine is dropped, not refused.
            p = qsnap("import", "--quiet", new, bad, *QEMU_ARGS)
            check("machine pc,accel=kvm" in p.stderr
                  and "machine" not in json.load(open(os.path.join(new, "vm.json"))),
                  f"{name}: {p.stderr}")
            continue
        for trust in ((), ("--trust-config",)):
            p = qsnap("import", "--quiet", *trust, new, bad, ok=False)
            check(one_line(p) and word in p.stderr and "nothing was imported" in p.stderr,
                  f"{name} {trust}: {p.stderr}")
            check(leftovers(t.dir, "new") == [], f"{name}: left {leftovers(t.dir, 'new')}")


def _http(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, dict(r.headers), r.read()


def put_blob(reg, repo, data):
    """A blob into the registry with plain HTTP: POST, then a monolithic PUT."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _, h, _ = _http("POST", f"http://{reg.host}/v2/{repo}/blobs/uploads/", b"")
    loc = h["Location"]
    if loc.startswith("/"):
        loc = f"http://{reg.host}{loc}"
    sep = "&" if "?" in loc else "?"
    _http("PUT", f"{loc}{sep}digest={digest}", data,
          {"Content-Type": "application/octet-stream"})
    return digest


def put_hostile(reg, repo, tag, from_tag, change, extra_layers=()):
    """The artifact at from_tag with its config changed by change(config),
    under tag: what a registry (or whoever can push there) can serve. The
    manifest lists the blobs the new config names, and extra_layers."""
    m, cfg = config_of(reg, repo, from_tag)
    change(cfg)
    data = json.dumps(cfg).encode()
    m["layers"] = [x for x in m["layers"] if x["digest"] in data.decode()] + list(extra_layers)
    m["config"]["digest"], m["config"]["size"] = put_blob(reg, repo, data), len(data)
    body = json.dumps(m).encode()
    _http("PUT", f"http://{reg.host}/v2/{repo}/manifests/{tag}", body,
          {"Content-Type": m["mediaType"]})
    return "sha256:" + hashlib.sha256(body).hexdigest()


def qemu_cmdline(vm):
    return open(f"/proc/{vm.qemu_pid()}/cmdline", "rb").read().split(b"\0")


def test_pull_drops_extra_args(t):
    vm = t.vm()
    vm.boot()
    vm.sh("X=saved")
    vm.save("S")
    vm.stop()
    with registry(t) as reg:
        qsnap("push", "--insecure", "--quiet", vm.dir, "S", reg.ref("qsnap/vm"))
        marker = []
        put_hostile(reg, "qsnap/vm", "evil", "S",
                    lambda c: marker.append(hostile(t, c["vm"])))
        marker = marker[0]

        new = os.path.join(t.dir, "pulled")
        p = qsnap("pull", "--insecure", "--quiet", reg.ref("qsnap/vm", "evil"), new, *QEMU_ARGS)
        check(p.stderr.count("\n") == 1 and "dropped from the vm.json of" in p.stderr
              and "extra_args [-chardev" in p.stderr and "--trust-config" in p.stderr,
              f"pull's notice: {p.stderr}")
        v2 = pulled_vm(t, new)
        v2.restore("S")
        check(v2.sh('echo "$X"') == "saved", "the pulled guest differs")
        cmd = qemu_cmdline(v2)
        check(not any(b"pwn" in a for a in cmd), f"QEMU ran with the artifact's args: {cmd}")
        check(not os.path.exists(marker), "the artifact's chardev wrote a host file")
        v2.stop()

        # Trusted (its QEMU made this host's, as a trusting user would
        # have it): the arguments reach QEMU and the chardev writes.
        put_hostile(reg, "qsnap/vm", "trusted", "S",
                    lambda c: c["vm"].update(extra_args=["-chardev", f"file,id=pwn,path={marker}"]))
        new2 = os.path.join(t.dir, "trusted")
        p = qsnap("pull", "--insecure", "--quiet", "--trust-config", reg.ref("qsnap/vm", "trusted"),
                  new2, *QEMU_ARGS)
        check("taken from the vm.json of" in p.stderr and "(--trust-config)" in p.stderr,
              f"trusted pull's notice: {p.stderr}")
        v3 = pulled_vm(t, new2)
        v3.restore("S")
        cmd = qemu_cmdline(v3)
        check(f"file,id=pwn,path={marker}".encode() in cmd, f"trusted QEMU argv: {cmd}")
        check(os.path.exists(marker), "the trusted chardev did not open its file")
        v3.stop()
