"""Snapshots through an OCI registry: push and pull against a real registry
(Debian's docker-registry, distribution 2.8) started on 127.0.0.1 with a
temporary storage folder, with and without htpasswd basic auth; skopeo as
an independent client."""

import contextlib
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

from harness import VM, Fail, check, qsnap
from test_snapshots import fill_guest, guest_view

REGISTRY = "/usr/bin/docker-registry"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """A docker-registry on 127.0.0.1 storing under dir; its access log in
    dir/log. With users, basic auth from an htpasswd file (bcrypt)."""

    def __init__(self, dir, users=None, extra_auth=None):
        self.dir = dir
        self.store = os.path.join(dir, "store")
        os.makedirs(self.store, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log = os.path.join(dir, "log")
        auth = ""
        if users:
            pw = os.path.join(dir, "htpasswd")
            with open(pw, "w") as f:
                for user, password in users.items():
                    p = subprocess.run(["htpasswd", "-niB", user], input=password + "\n",
                                       capture_output=True, text=True, check=True)
                    f.write(p.stdout.strip() + "\n")
            auth = f"auth:\n  htpasswd:\n    realm: qsnap-test\n    path: {pw}\n"
        if extra_auth:
            auth = extra_auth
        self.config = os.path.join(dir, "config.yml")
        with open(self.config, "w") as f:
            f.write("version: 0.1\n"
                    "log:\n  level: info\n  accesslog:\n    disabled: false\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {self.store}\n"
                    "  delete:\n    enabled: true\n"
                    f"http:\n  addr: {self.host}\n" + auth)
        self.proc = None
        self.start()

    def start(self):
        self.logf = open(self.log, "a")
        self.proc = subprocess.Popen([REGISTRY, "serve", self.config], stdout=self.logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # 401: up, with auth
            except OSError:
                if self.proc.poll() is not None:
                    raise Fail(f"docker-registry exited: {open(self.log).read()[-2000:]}")
                time.sleep(0.1)
        raise Fail("docker-registry did not come up in 30 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.logf.close()

    def ref(self, repo, tag=None):
        return f"{self.host}/{repo}" + (f":{tag}" if tag else "")

    def uploads(self):
        """Blob uploads the registry saw started (POST .../blobs/uploads/)."""
        with open(self.log) as f:
            return sum(1 for line in f if '"POST /v2/' in line and "/blobs/uploads/" in line)

    def blob_path(self, digest):
        h = digest.split(":", 1)[1]
        return os.path.join(self.store, "docker", "registry", "v2", "blobs", "sha256", h[:2], h,
                            "data")


@contextlib.contextmanager
def registry(t, name="registry", **kw):
    r = Registry(os.path.join(t.dir, name), **kw)
    try:
        yield r
    finally:
        r.stop()


def push(vm, name, ref, *args, ok=True, env=None):
    p = qsnap("push", "--insecure", "--json", vm.dir, name, ref, *args, ok=ok, env=env)
    return json.loads(p.stdout) if ok else p


def pull(ref, dir, *args, ok=True, env=None):
    p = qsnap("pull", "--insecure", "--json", ref, dir, *args, ok=ok, env=env)
    return json.loads(p.stdout) if ok else p


def pulled_vm(t, dir):
    vm = VM.__new__(VM)
    vm.t, vm.dir, vm.serial = t, dir, None
    t.vms.append(vm)
    return vm


def leftovers(parent, name):
    return sorted(f for f in os.listdir(parent) if f == name or f.startswith("." + name))


def saved_guest(t, **kw):
    """A running VM with state in RAM and on disk, saved as S; changed after."""
    vm = t.vm(**kw)
    vm.boot()
    saved = fill_guest(vm, "s", mib=4)
    vm.sh("echo on-disk > /mnt/file; sync")
    vm.save("S")
    vm.sh("X=later; echo later > /mnt/file; sync")
    return vm, saved


def test_push_pull_restore_and_start_from(t):
    vm, saved = saved_guest(t)
    with registry(t) as reg:
        rep = push(vm, "S", reg.ref("qsnap/vm"))
        check(rep["uploaded"] == rep["blobs"] and rep["blobs"] >= 4,
              f"first push: {rep}")
        check(reg.uploads() == rep["uploaded"] - 0,
              f"the registry saw {reg.uploads()} uploads, the push says {rep['uploaded']}")
        check(vm.sh('echo "$X"') == "later", "the VM did not keep running during the push")
        vm.stop()

        # The tag defaulted to the snapshot's name. A fresh directory, a
        # restore: RAM, shell state and disk are the saved ones.
        new = os.path.join(t.dir, "pulled")
        got = pull(reg.ref("qsnap/vm", "S"), new)
        check(got["name"] == "S" and got["digest"] == rep["digest"], f"pull: {got}")
        check(leftovers(t.dir, "pulled") == ["pulled"], f"staging left: {leftovers(t.dir, 'pulled')}")
        qsnap("verify", new)
        vm2 = pulled_vm(t, new)
        vm2.restore("S")
        check(guest_view(vm2) == saved, f"pulled guest differs: {guest_view(vm2)} != {saved}")
        check(vm2.sh("cat /mnt/file") == "on-disk", "pulled disk differs")
        vm2.stop()

        # The same with start --from, in another fresh directory.
        new3 = os.path.join(t.dir, "pulled3")
        pull(reg.ref("qsnap/vm", "S"), new3, "--quiet")
        vm3 = pulled_vm(t, new3)
        qsnap("start", new3, "--from", "S")
        vm3.connect()
        check(guest_view(vm3) == saved, f"start --from guest differs: {guest_view(vm3)}")
        check(vm3.sh("cat /mnt/file") == "on-disk", "start --from disk differs")
        vm3.stop()


def test_child_push_sends_only_what_changed(t):
    vm, saved = saved_guest(t)
    with registry(t) as reg:
        first = push(vm, "S", reg.ref("qsnap/vm"))
        saved2 = fill_guest(vm, "child", mib=4)
        vm.sh("echo child > /mnt/file; sync")
        vm.save("C")
        before = reg.uploads()
        child = push(vm, "C", reg.ref("qsnap/vm"))
        # The base image, the kernel, the initrd and S's layer are there.
        check(child["uploaded"] < child["blobs"] and child["present"] >= 4,
              f"child push: {child}")
        check(reg.uploads() - before == child["uploaded"],
              f"the registry saw {reg.uploads() - before} uploads, the push says {child['uploaded']}")
        check(child["uploaded_bytes"] < first["uploaded_bytes"], f"{child} vs {first}")
        before = reg.uploads()
        again = push(vm, "C", reg.ref("qsnap/vm"))
        check(again["uploaded"] == 0 and again["digest"] == child["digest"], f"re-push: {again}")
        check(reg.uploads() == before, f"a re-push opened {reg.uploads() - before} uploads")
        vm.stop()

        # S into a fresh directory, then C into the same one: only what C
        # adds is downloaded, and both restore.
        new = os.path.join(t.dir, "pulled")
        a = pull(reg.ref("qsnap/vm", "S"), new)
        b = pull(reg.ref("qsnap/vm", "C"), new)
        check(b["reused"] >= 4 and b["downloaded"] < b["blobs"]
              and b["downloaded_bytes"] < a["downloaded_bytes"], f"second pull: {b} (first {a})")
        names = sorted(s["name"] for s in json.loads(qsnap("list", "--json", new).stdout))
        check(names == ["C", "S"], f"snapshots after two pulls: {names}")
        qsnap("verify", new)
        vm2 = pulled_vm(t, new)
        vm2.restore("C")
        check(guest_view(vm2) == saved2 and vm2.sh("cat /mnt/file") == "child",
              f"C pulled: {guest_view(vm2)}")
        vm2.restore("S")
        check(guest_view(vm2) == saved and vm2.sh("cat /mnt/file") == "on-disk",
              f"S pulled: {guest_view(vm2)}")
        # The same snapshot again is refused, and changes nothing.
        state = open(os.path.join(new, "state.json")).read()
        p = pull(reg.ref("qsnap/vm", "C"), new, ok=False)
        check(p.returncode == 1 and "has a snapshot 'C' already" in p.stderr, p.stderr)
        check(open(os.path.join(new, "state.json")).read() == state, "state.json changed")


def test_shared_ram_zero_chunks(t):
    vm = t.vm(memory="512M", extra_init=("--ram-mode", "shared"))
    vm.boot()
    saved = fill_guest(vm, "shared", mib=4)
    vm.save("S")
    with registry(t) as reg:
        rep = push(vm, "S", reg.ref("qsnap/shared"))
        # Most of a freshly booted guest's RAM is zero: recorded, not sent.
        check(rep["zero_chunks"] >= 4 and rep["uploaded_bytes"] < 256 << 20, f"push: {rep}")
        vm.stop()
        new = os.path.join(t.dir, "pulled")
        pull(reg.ref("qsnap/shared", "S"), new)
        ram = glob.glob(os.path.join(new, "snapshots", "S", "ram"))
        check(ram and os.path.getsize(ram[0]) == 512 << 20, f"ram file: {ram}")
        check(os.stat(ram[0]).st_blocks * 512 < 256 << 20, "the pulled RAM file is not sparse")
        vm2 = pulled_vm(t, new)
        vm2.restore("S")
        check(guest_view(vm2) == saved, f"pulled shared-RAM guest differs: {guest_view(vm2)}")


def test_skopeo_reads_the_artifact(t):
    vm, _ = saved_guest(t)
    vm.stop()
    with registry(t) as reg:
        rep = push(vm, "S", reg.ref("qsnap/vm", "v1"))
        p = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                            f"docker://{reg.ref('qsnap/vm', 'v1')}"],
                           capture_output=True, timeout=120)
        check(p.returncode == 0, f"skopeo inspect: {p.stderr.decode()}")
        check("sha256:" + hashlib.sha256(p.stdout).hexdigest() == rep["digest"],
              "skopeo's manifest is not the one qsnap pushed")
        m = json.loads(p.stdout)
        check(m["artifactType"] == "application/vnd.qsnap.snapshot.v1"
              and m["config"]["mediaType"] == "application/vnd.qsnap.snapshot.config.v1+json",
              f"manifest: {m}")
        check(len(m["layers"]) + 1 == rep["blobs"], f"{len(m['layers'])} layers, {rep}")
        out = os.path.join(t.dir, "layout")
        p = subprocess.run(["skopeo", "copy", "--src-tls-verify=false",
                            f"docker://{reg.ref('qsnap/vm', 'v1')}", f"oci:{out}:v1"],
                           capture_output=True, text=True, timeout=300)
        check(p.returncode == 0, f"skopeo copy: {p.stderr}")
        for d in [m["config"]] + m["layers"]:
            blob = os.path.join(out, "blobs", "sha256", d["digest"].split(":")[1])
            check(os.path.getsize(blob) == d["size"], f"{blob}: wrong size")
        check(any(b["digest"] == rep["digest"]
                  for b in json.load(open(os.path.join(out, "index.json")))["manifests"]),
              "the layout's index does not name the manifest")
