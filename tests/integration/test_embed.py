"""libqsnap as another program sees it: `meson install` into a scratch
DESTDIR, the shared library's name and exports, and a C program built
against that installed copy through pkg-config that creates, starts, saves
and restores a VM (tests/embed/embed.c)."""

import glob
import json
import os
import re
import subprocess

from harness import ACCEL, BUILD, GUEST, ROOT, check, qemu_img, qsnap


class Stopper:
    """A VM directory the embedding program made: stopped after the test."""

    def __init__(self, d):
        self.dir = d

    def stop(self):
        if os.path.exists(os.path.join(self.dir, "state.json")):
            qsnap("stop", self.dir, ok=False)


def install(t):
    """meson install into t.dir/dest; returns (destdir, the pkg-config env)."""
    dest = os.path.join(t.dir, "dest")
    p = subprocess.run(["meson", "install", "-C", BUILD, "--destdir", dest, "--no-rebuild",
                        "--quiet"], capture_output=True, text=True)
    check(p.returncode == 0, f"meson install failed:\n{p.stdout}{p.stderr}")
    pcs = glob.glob(os.path.join(dest, "**", "pkgconfig", "qsnap.pc"), recursive=True)
    check(len(pcs) == 1, f"meson install wrote no qsnap.pc (or several): {pcs}")
    env = {**os.environ, "PKG_CONFIG_PATH": os.path.dirname(pcs[0]),
           "PKG_CONFIG_SYSROOT_DIR": dest}
    return dest, env


def installed_helpers(dest):
    """qsnap's helper programs that meson install put into libexecdir/qsnap."""
    found = sorted(glob.glob(os.path.join(dest, "**", "libexec", "qsnap", "qsnap-*"),
                             recursive=True))
    names = [os.path.basename(f) for f in found]
    check(names == ["qsnap-console", "qsnap-saver"],
          f"meson install put these helpers into a libexec/qsnap: {found}")
    for f in found:
        check(os.access(f, os.X_OK), f"{f} is not executable")
    return found


def pkg_config(env, *args):
    p = subprocess.run(["pkg-config", *args, "qsnap"], env=env, capture_output=True, text=True)
    check(p.returncode == 0, f"pkg-config {' '.join(args)} qsnap: {p.stderr.strip()}")
    return p.stdout.strip()


def installed_dir(env, dest, var):
    """A directory the .pc file names, inside dest (PKG_CONFIG_SYSROOT_DIR
    puts dest in front)."""
    d = pkg_config(env, f"--variable={var}")
    check(d.startswith(dest + "/"), f"pkg-config's {var} {d} is not inside {dest}")
    return d


def test_install_shared_library(t):
    dest, env = install(t)
    libdir = installed_dir(env, dest, "libdir")
    includedir = installed_dir(env, dest, "includedir")
    check(os.path.isfile(os.path.join(includedir, "qsnap.h")), f"no qsnap.h in {includedir}")
    so = os.path.join(libdir, "libqsnap.so")
    check(os.path.islink(so) and os.path.exists(so), f"no libqsnap.so link in {libdir}")
    dyn = subprocess.run(["readelf", "-d", so], capture_output=True, text=True).stdout
    m = re.search(r"\(SONAME\)\s+Library soname: \[(.*)\]", dyn)
    check(m and m.group(1) == "libqsnap.so.1", f"SONAME: {m and m.group(1)}")
    check(os.path.exists(os.path.join(libdir, "libqsnap.so.1")), "no libqsnap.so.1")
    check(os.path.realpath(so).endswith(".so.1.0.0"), f"not versioned: {os.path.realpath(so)}")
    # libcurl is loaded when a registry is first opened (registry_curl.c):
    # a command without one starts without it and what it brings.
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", dyn)
    check(needed and not any(n.startswith("libcurl") for n in needed),
          f"libqsnap.so links libcurl: {needed}")
    # Every export carries the version node QSNAP_1 (libqsnap.map).
    vers = subprocess.run(["objdump", "-T", so], capture_output=True, text=True).stdout
    unversioned = [line for line in vers.splitlines() if " qsnap_" in line and "QSNAP_1" not in line]
    check(not unversioned, f"exports without the QSNAP_1 version: {unversioned[:5]}")
    # Functions added after 1.0 carry their own node, later ones QSNAP_1.
    later = [line for line in vers.splitlines() if " qsnap_vm_cancel" in line]
    check(later and all("QSNAP_1.1" in line for line in later),
          f"qsnap_vm_cancel is not in QSNAP_1.1: {later}")
    # Only qsnap_* is exported (and the version node of libqsnap.map).
    nm = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True, text=True)
    check(nm.returncode == 0, nm.stderr)
    syms = [line.split()[-1] for line in nm.stdout.splitlines() if line.strip()]
    foreign = [s for s in syms if not s.startswith("qsnap_") and s not in ("QSNAP_1", "QSNAP_1.1")]
    check(not foreign, f"libqsnap.so exports more than qsnap_*: {foreign[:20]}")
    # Every function qsnap.h declares is exported, and nothing else.
    with open(os.path.join(ROOT, "include", "qsnap.h")) as f:
        declared = set(re.findall(r"\b(qsnap_[a-z_]+)\(", f.read()))
    exported = {s.split("@")[0] for s in syms if s.startswith("qsnap_")}
    check(declared == exported, f"qsnap.h and the exports differ: only declared "
          f"{sorted(declared - exported)}, only exported {sorted(exported - declared)}")
    installed_helpers(dest)
    # The installed CLI runs on the installed library.
    qsnap_bin = glob.glob(os.path.join(dest, "**", "bin", "qsnap"), recursive=True)
    check(len(qsnap_bin) == 1, f"meson install put no qsnap in a bin/: {qsnap_bin}")
    p = subprocess.run([qsnap_bin[0], "--version"], capture_output=True, text=True,
                       env={**os.environ, "LD_LIBRARY_PATH": libdir, "LD_DEBUG": "libs"})
    check(p.returncode == 0 and p.stdout.startswith("qsnap "), f"installed qsnap: {p.stderr}")
    check("libqsnap.so" in p.stderr and "libcurl" not in p.stderr,
          "qsnap --version loads libcurl (or the loader's trace is missing): "
          + ", ".join(sorted(set(re.findall(r"calling init: (\S+)", p.stderr)))))


def build_embed(t, source, extra=()):
    """Build tests/embed/SOURCE against the installed copy; returns (exe, env
    to run it with)."""
    dest, env = install(t)
    libdir = installed_dir(env, dest, "libdir")
    flags = pkg_config(env, "--cflags", "--libs").split()
    exe = os.path.join(t.dir, os.path.splitext(source)[0])
    # A ThreadSanitizer build of the library (tests/run.py): the program
    # too, so that the runtime sees every thread from the start.
    if os.environ.get("QSNAP_SANITIZE") == "thread":
        extra = [*extra, "-fsanitize=thread", "-g"]
    p = subprocess.run(["cc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", *extra, "-o", exe,
                        os.path.join(ROOT, "tests", "embed", source), *flags],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"{source} does not build against the installed qsnap.h and "
          f"libqsnap.so ({' '.join(flags)}):\n{p.stderr}")
    run_env = {**os.environ, "LD_LIBRARY_PATH": libdir}
    ldd = subprocess.run(["ldd", exe], env=run_env, capture_output=True, text=True).stdout
    m = re.search(r"libqsnap\.so\.1 => (\S+)", ldd)
    check(m and m.group(1).startswith(dest), f"{exe} does not load the installed copy: {ldd}")
    return exe, run_env


def test_embed_program(t):
    exe, run_env = build_embed(t, "embed.c")
    base = os.path.join(t.dir, "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "64M")
    vmdir = os.path.join(t.dir, "vm")
    t.vms.append(Stopper(vmdir))
    p = subprocess.run([exe, vmdir, base, os.path.join(GUEST, "vmlinuz"),
                        os.path.join(GUEST, "initramfs.img"), ACCEL],
                       env=run_env, capture_output=True, text=True, timeout=900)
    check(p.returncode == 0 and "embed: all checks passed" in p.stdout,
          f"embed exited {p.returncode}:\n{p.stdout}{p.stderr}")
    # What the program made is an ordinary VM directory for the CLI.
    snaps = [s["name"] for s in json.loads(qsnap("list", "--json", vmdir).stdout)]
    check(snaps == ["one", "two"], f"qsnap list after the embedding program: {snaps}")


def header_variant(includedir, out, change):
    """A copy of the installed qsnap.h in out/, with change applied to the
    bodies of qsnap_compact_stats and qsnap_verify_opts."""
    with open(os.path.join(includedir, "qsnap.h")) as f:
        text = f.read()
    for name in ("qsnap_compact_stats", "qsnap_verify_opts"):
        m = re.search(r"typedef struct " + name + r" \{\n(.*?)\n\} " + name + ";", text, re.S)
        check(m, f"no struct {name} in qsnap.h")
        text = text[:m.start(1)] + change(m.group(1)) + text[m.end(1):]
    os.makedirs(out)
    with open(os.path.join(out, "qsnap.h"), "w") as f:
        f.write(text)
    return out


def drop_last_field(body):
    lines = body.split("\n")
    last = max(i for i, line in enumerate(lines) if ";" in line)
    return "\n".join(lines[:last] + lines[last + 1:])


def test_growth(t):
    """A program built against an older qsnap.h (a struct without its last
    field) and one built against a newer one (a field more) both run on
    this library: it reads and writes only what the caller's size covers
    (tests/embed/growth.c)."""
    dest, env = install(t)
    libdir = installed_dir(env, dest, "libdir")
    includedir = installed_dir(env, dest, "includedir")
    flags = pkg_config(env, "--cflags", "--libs").split()
    base = os.path.join(t.dir, "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "64M")
    variants = {
        "same": (includedir, []),
        "older": (header_variant(includedir, os.path.join(t.dir, "older"), drop_last_field), []),
        "newer": (header_variant(includedir, os.path.join(t.dir, "newer"),
                                 lambda body: body + "\n\tint future;"), ["-DGROWTH_NEWER"]),
    }
    for name, (inc, defs) in variants.items():
        exe = os.path.join(t.dir, "growth-" + name)
        p = subprocess.run(["cc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", *defs, "-I", inc,
                            "-o", exe, os.path.join(ROOT, "tests", "embed", "growth.c"), *flags],
                           capture_output=True, text=True)
        check(p.returncode == 0, f"growth.c ({name} header) does not build:\n{p.stderr}")
        p = subprocess.run([exe, os.path.join(t.dir, "vm-" + name), base,
                            os.path.join(GUEST, "vmlinuz")],
                           env={**os.environ, "LD_LIBRARY_PATH": libdir},
                           capture_output=True, text=True, timeout=120)
        check(p.returncode == 0 and "growth: all checks passed" in p.stdout,
              f"growth ({name} header) exited {p.returncode}:\n{p.stdout}{p.stderr}")


def test_embed_hostile_signals(t):
    """A caller that ignores SIGCHLD and SIGHUP and blocks SIGTERM and
    SIGINT (tests/embed/embed_signals.c): every call works, qemu-img's
    failure is an error in its own words, QEMU and the console relay start
    without the caller's signal state, QEMU ends on stop."""
    exe, run_env = build_embed(t, "embed_signals.c")
    base = os.path.join(t.dir, "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "64M")
    # A qcow2 header of a version no qemu-img reads.
    bad = os.path.join(t.dir, "bad.qcow2")
    with open(bad, "wb") as f:
        f.write(b"QFI\xfb\x00\x00\x00\x63" + bytes(504))
    out = os.path.join(t.dir, "published.qcow2")
    vmdir = os.path.join(t.dir, "vm")
    t.vms.append(Stopper(vmdir))
    p = subprocess.run([exe, vmdir, base, os.path.join(GUEST, "vmlinuz"),
                        os.path.join(GUEST, "initramfs.img"), ACCEL, out, bad],
                       env=run_env, capture_output=True, text=True, timeout=900)
    check(p.returncode == 0 and "embed_signals: all checks passed" in p.stdout,
          f"embed_signals exited {p.returncode}:\n{p.stdout}{p.stderr}")
    # The installed library runs the helper programs installed with it.
    helpers = os.path.dirname(installed_helpers(os.path.join(t.dir, "dest"))[0])
    exes = dict(re.findall(r"^exe of (.*): (.*)$", p.stdout, re.M))
    check(exes.get("the console relay") == os.path.join(helpers, "qsnap-console"),
          f"the console relay runs {exes.get('the console relay')}, not the helper in {helpers}")
    if "the background save" in exes:
        check(exes["the background save"] == os.path.join(helpers, "qsnap-saver"),
              f"the background save runs {exes['the background save']}, not the helper "
              f"in {helpers}")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", out],
                                     capture_output=True, text=True, check=True).stdout)
    check(info["format"] == "qcow2" and "backing-filename" not in info,
          f"the published image: {info}")
    snaps = [s["name"] for s in json.loads(qsnap("list", "--json", vmdir).stdout)]
    check(snaps == ["one", "two"], f"qsnap list after the embedding program: {snaps}")


def test_embed_threads(t):
    """Four threads of one program, each with its own VM, start, save,
    restore and stop at the same time, one of them saving in the background
    (tests/embed/embed_threads.c): every call works."""
    exe, run_env = build_embed(t, "embed_threads.c", ["-pthread"])
    base = os.path.join(t.dir, "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "64M")
    for i in range(4):
        t.vms.append(Stopper(os.path.join(t.dir, f"vm{i}")))
    p = subprocess.run([exe, t.dir, base, os.path.join(GUEST, "vmlinuz"),
                        os.path.join(GUEST, "initramfs.img"), ACCEL],
                       env=run_env, capture_output=True, text=True, timeout=1200)
    check("WARNING: ThreadSanitizer" not in p.stderr, f"embed_threads: {p.stderr}")
    check(p.returncode == 0 and "embed_threads: all checks passed" in p.stdout,
          f"embed_threads exited {p.returncode}:\n{p.stdout}{p.stderr}")
    for i in range(4):
        snaps = [s["name"] for s in json.loads(qsnap("list", "--json",
                                                     os.path.join(t.dir, f"vm{i}")).stdout)]
        check(snaps == ["a", "b"], f"vm{i}: snapshots {snaps}")


def test_embed_cancel(t):
    """qsnap_vm_cancel from another thread (tests/embed/embed_cancel.c): a
    save and a restore cancelled while they work return -ECANCELED within
    seconds, the save leaving no snapshot and the guest running as it was,
    the restore the VM stopped with its snapshots intact; a cancellation
    made before a call ends only that call."""
    exe, run_env = build_embed(t, "embed_cancel.c", ["-pthread"])
    base = os.path.join(t.dir, "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "64M")
    vmdir = os.path.join(t.dir, "vm")
    t.vms.append(Stopper(vmdir))
    p = subprocess.run([exe, vmdir, base, os.path.join(GUEST, "vmlinuz"),
                        os.path.join(GUEST, "initramfs.img"), ACCEL],
                       env=run_env, capture_output=True, text=True, timeout=900)
    check("WARNING: ThreadSanitizer" not in p.stderr, f"embed_cancel: {p.stderr}")
    check(p.returncode == 0 and "embed_cancel: all checks passed" in p.stdout,
          f"embed_cancel exited {p.returncode}:\n{p.stdout}{p.stderr}")
    snaps = [s["name"] for s in json.loads(qsnap("list", "--json", vmdir).stdout)]
    check(snaps == ["a", "b"], f"qsnap list after the cancelled calls: {snaps}")
