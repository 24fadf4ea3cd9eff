"""Snapshots through an OCI registry: push and pull against a real registry
(Debian's docker-registry, distribution 2.8) started on 127.0.0.1 with a
temporary storage folder, with and without htpasswd basic auth; skopeo as
an independent client."""

import contextlib
import glob
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

from harness import QEMU_ARGS, QSNAP, VM, Fail, check, qsnap
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
                    f"http:\n  addr: {self.host}\n"
                    # A fixed secret: upload sessions survive a restart.
                    "  secret: qsnap-test-secret\n" + auth)
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
    p = qsnap("pull", "--insecure", "--json", ref, dir, *QEMU_ARGS, *args, ok=ok, env=env)
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
        vm2.stop()
        # A child: the RAM chunks that did not change are not sent, and a
        # pull into the same directory copies them from S instead of
        # downloading them.
        qsnap("start", vm.dir, "--from", "S")
        vm.connect()
        saved2 = fill_guest(vm, "child", mib=4)
        vm.save("C")
        vm.stop()
        child = push(vm, "C", reg.ref("qsnap/shared"))
        ram_chunks = 512 // 32
        check(child["uploaded"] < child["blobs"]
              and child["present"] + child["zero_chunks"] > 4 + ram_chunks // 2,
              f"child push: {child}")
        got = pull(reg.ref("qsnap/shared", "C"), new)
        check(got["downloaded"] <= child["uploaded"]
              and got["downloaded_bytes"] <= child["uploaded_bytes"], f"{got} vs {child}")
        vm2.restore("C")
        check(guest_view(vm2) == saved2, f"pulled child differs: {guest_view(vm2)}")
        vm2.restore("S")
        check(guest_view(vm2) == saved, f"S after C differs: {guest_view(vm2)}")


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


def spy_path(t):
    """A PATH whose qemu-img records its argv and environment, then runs the
    real one: what qsnap hands its children."""
    d = os.path.join(t.dir, "spy")
    os.makedirs(d, exist_ok=True)
    log = os.path.join(d, "log")
    real = shutil.which("qemu-img")
    with open(os.path.join(d, "qemu-img"), "w") as f:
        f.write(f"#!/bin/sh\n{{ echo \"$@\"; env; }} >> {log}\nexec {real} \"$@\"\n")
    os.chmod(os.path.join(d, "qemu-img"), 0o755)
    return f"{d}:{os.environ['PATH']}", log


SECRET = "s3cret-Pa55"


def check_no_secret(what, *texts):
    for text in texts:
        check(SECRET not in text, f"{what} shows the password: {text}")


def test_basic_auth(t):
    vm, saved = saved_guest(t)
    vm.stop()
    with registry(t, users={"alice": SECRET}) as reg:
        ref = reg.ref("team/vm", "S")
        home = os.path.join(t.dir, "home")
        os.makedirs(home)
        base = {k: v for k, v in os.environ.items() if not k.startswith("QSNAP_REGISTRY")}
        base.update(HOME=home, DOCKER_CONFIG="")
        # No credentials: a clear error, nothing pushed.
        p = push(vm, "S", ref, ok=False, env=base)
        check(p.returncode == 1 and "needs credentials" in p.stderr
              and "QSNAP_REGISTRY_USER" in p.stderr and p.stderr.count("\n") == 1, p.stderr)
        # A wrong password.
        env = dict(base, QSNAP_REGISTRY_USER="alice", QSNAP_REGISTRY_PASSWORD="wrong")
        p = push(vm, "S", ref, ok=False, env=env)
        check(p.returncode == 1 and "refused the credentials of user 'alice'" in p.stderr
              and p.stderr.count("\n") == 1, p.stderr)
        check(reg.uploads() == 0, "uploads happened without valid credentials")
        # The right one from the environment.
        env["QSNAP_REGISTRY_PASSWORD"] = SECRET
        p = qsnap("push", "--insecure", vm.dir, "S", ref, env=env)
        check_no_secret("push", p.stdout, p.stderr)
        # Pull with the Docker config (docker/podman/skopeo login's file),
        # watching what the pull hands qemu-img.
        docker = os.path.join(t.dir, "docker")
        os.makedirs(docker)
        with open(os.path.join(docker, "config.json"), "w") as f:
            import base64
            json.dump({"auths": {f"http://{reg.host}": {
                "auth": base64.b64encode(f"alice:{SECRET}".encode()).decode()}}}, f)
        path, spylog = spy_path(t)
        env = dict(base, DOCKER_CONFIG=docker, PATH=path)
        new = os.path.join(t.dir, "pulled")
        p = qsnap("pull", "--insecure", ref, new, *QEMU_ARGS, env=env)
        check_no_secret("pull", p.stdout, p.stderr)
        check(os.path.exists(spylog), "qemu-img was not run through the spy")
        check_no_secret("qemu-img's argv or environment", open(spylog).read())
        check("alice" not in open(spylog).read(), "the user name reached qemu-img")
        vm2 = pulled_vm(t, new)
        vm2.restore("S")
        check(guest_view(vm2) == saved, "the guest pulled with basic auth differs")
        # A wrong password in the Docker config fails the pull, leaving nothing.
        with open(os.path.join(docker, "config.json"), "w") as f:
            json.dump({"auths": {reg.host: {
                "auth": base64.b64encode(b"alice:nope").decode()}}}, f)
        p = pull(ref, os.path.join(t.dir, "other"), ok=False, env=env)
        check(p.returncode == 1 and "refused the credentials of user 'alice'" in p.stderr
              and "the Docker config" in p.stderr, p.stderr)
        check(leftovers(t.dir, "other") == [], f"left: {leftovers(t.dir, 'other')}")


class TokenServer:
    """The Bearer-token flow of docker/distribution: a realm that checks a
    user's basic credentials and answers with a JWT (RS256, signed by
    openssl with a key whose self-signed certificate the registry trusts)
    granting the scope asked for."""

    def __init__(self, dir, users):
        import http.server
        import threading
        self.key = os.path.join(dir, "token.key")
        self.cert = os.path.join(dir, "token.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=qsnap-test-token", "-keyout", self.key, "-out", self.cert],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"],
                             check=True, capture_output=True).stdout
        import base64
        self.x5c = base64.b64encode(der).decode()
        self.users = users
        self.requests = []
        server = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                auth = self.headers.get("Authorization", "")
                ok = False
                if auth.startswith("Basic "):
                    u, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                    ok = server.users.get(u) == pw
                if not ok:
                    self.send_response(401)
                    self.end_headers()
                    return
                q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                body = json.dumps({"token": server.token(u, q.get("service", [""])[0],
                                                         q.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        import urllib.parse
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def token(self, user, service, scopes):
        import base64

        def b64(b):
            return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        access = []
        for s in scopes:
            typ, name, actions = s.split(":")
            access.append({"type": typ, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": "qsnap-test-issuer", "sub": user, "aud": service, "exp": now + 600,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=signing.encode(), check=True, capture_output=True).stdout
        return signing + "." + b64(sig)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_bearer_token_auth(t):
    vm, saved = saved_guest(t)
    vm.stop()
    tok = TokenServer(t.dir, {"bob": SECRET})
    try:
        auth = ("auth:\n  token:\n"
                f"    realm: http://127.0.0.1:{tok.port}/token\n"
                "    service: qsnap-test-registry\n"
                "    issuer: qsnap-test-issuer\n"
                f"    rootcertbundle: {tok.cert}\n")
        with registry(t, extra_auth=auth) as reg:
            ref = reg.ref("team/vm", "S")
            env = {k: v for k, v in os.environ.items() if not k.startswith("QSNAP_REGISTRY")}
            env.update(HOME=os.path.join(t.dir, "nohome"), DOCKER_CONFIG="",
                       QSNAP_REGISTRY_USER="bob", QSNAP_REGISTRY_PASSWORD="wrong")
            p = push(vm, "S", ref, ok=False, env=env)
            check(p.returncode == 1 and "refused the credentials of user 'bob'" in p.stderr,
                  p.stderr)
            env["QSNAP_REGISTRY_PASSWORD"] = SECRET
            rep = push(vm, "S", ref, env=env)
            check(rep["uploaded"] == rep["blobs"], f"push with a token: {rep}")
            check(any("scope=repository%3Ateam%2Fvm%3Apull%2Cpush" in r for r in tok.requests),
                  f"token requests: {tok.requests}")
            new = os.path.join(t.dir, "pulled")
            p = qsnap("pull", "--insecure", ref, new, *QEMU_ARGS, env=env)
            check_no_secret("pull", p.stdout, p.stderr)
            vm2 = pulled_vm(t, new)
            vm2.restore("S")
            check(guest_view(vm2) == saved, "the guest pulled with a token differs")
    finally:
        tok.stop()


def one_line(p):
    return p.returncode == 1 and p.stderr.count("\n") == 1 and p.stderr.startswith("qsnap: ")


def config_of(reg, repo, tag):
    """The manifest and config the registry holds, read from its storage."""
    base = os.path.join(reg.store, "docker", "registry", "v2", "repositories", repo,
                        "_manifests", "tags", tag, "current", "link")
    digest = open(base).read().strip()
    m = json.load(open(reg.blob_path(digest)))
    return m, json.load(open(reg.blob_path(m["config"]["digest"])))


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xff]))


def test_faults_damaged_blob_missing_tag(t):
    vm, _ = saved_guest(t)
    vm.save("C")
    vm.stop()
    with registry(t) as reg:
        push(vm, "S", reg.ref("qsnap/vm"))
        new = os.path.join(t.dir, "pulled")
        # A tag that is not there.
        p = pull(reg.ref("qsnap/vm", "nosuch"), new, ok=False)
        check(one_line(p) and "qsnap/vm:nosuch is not in the registry" in p.stderr, p.stderr)
        p = pull(reg.ref("qsnap/other", "S"), new, ok=False)
        check(one_line(p) and "not in the registry" in p.stderr, p.stderr)
        check(leftovers(t.dir, "pulled") == [], f"left: {leftovers(t.dir, 'pulled')}")

        # A layer damaged in the registry's storage: the pull names the
        # blob and the snapshot and leaves nothing.
        m, cfg = config_of(reg, "qsnap/vm", "S")
        layer = cfg["drives"][0]["layers"][0]["digest"]
        flip(reg.blob_path(layer), 100)
        p = pull(reg.ref("qsnap/vm", "S"), new, ok=False)
        check(one_line(p) and layer in p.stderr and "layer 1 of drive 'vda' of snapshot 'S'"
              in p.stderr and "does not match its digest" in p.stderr
              and "nothing was created" in p.stderr, p.stderr)
        check(leftovers(t.dir, "pulled") == [], f"left: {leftovers(t.dir, 'pulled')}")
        flip(reg.blob_path(layer), 100)

        # A machine state chunk cut short.
        chunk = next(c for c in cfg["machine_state"]["chunks"] if c)
        data = open(reg.blob_path(chunk), "rb").read()
        with open(reg.blob_path(chunk), "wb") as f:
            f.write(data[: len(data) // 2])
        p = pull(reg.ref("qsnap/vm", "S"), new, ok=False)
        check(one_line(p) and chunk in p.stderr and "machine state chunk" in p.stderr, p.stderr)
        check(leftovers(t.dir, "pulled") == [], f"left: {leftovers(t.dir, 'pulled')}")
        with open(reg.blob_path(chunk), "wb") as f:
            f.write(data)

        # Into an existing VM: the damaged child adds nothing and keeps
        # what the VM had.
        pull(reg.ref("qsnap/vm", "S"), new)
        push(vm, "C", reg.ref("qsnap/vm"))
        _, cc = config_of(reg, "qsnap/vm", "C")
        chunk = next(c for c in cc["machine_state"]["chunks"] if c)
        flip(reg.blob_path(chunk), 5)
        state = open(os.path.join(new, "state.json")).read()
        files = sorted(os.listdir(os.path.join(new, "layers")))
        p = pull(reg.ref("qsnap/vm", "C"), new, ok=False)
        check(one_line(p) and chunk in p.stderr and "nothing was added" in p.stderr, p.stderr)
        check(open(os.path.join(new, "state.json")).read() == state, "state.json changed")
        check(sorted(os.listdir(os.path.join(new, "layers"))) == files, "layers changed")
        check(not [f for f in os.listdir(new) if f.startswith(".qsnap-pull")], "staging left")
        qsnap("verify", new)


class CuttingProxy:
    """An HTTP proxy on 127.0.0.1 in front of a registry that cuts the
    connection of the first PATCH it sees before any of its bytes reach the
    registry: the upload session exists, empty. Everything else is passed
    on as it is (the Host header too, so the registry's Location URLs name
    the proxy)."""

    def __init__(self, upstream):
        proxy = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                if self.command == "PATCH" and not proxy.cut:
                    proxy.cut = self.path
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                c = http.client.HTTPConnection(upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "expect", "content-length")}
                c.request(self.command, self.path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                proxy.seen.append((self.command, self.path.split("?")[0], r.status))
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", r.getheader("Content-Length", "0")
                                 if self.command == "HEAD" else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                c.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # the cut connection, on purpose

        self.cut = None
        self.seen = []
        self.server = Server(("127.0.0.1", 0), H)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def killed_at(cmd, ready, timeout=60):
    """Start cmd; once ready() says so, return it (still running)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None and not ready():
        time.sleep(0.01)
    return p


def test_faults_interrupted_transfers(t):
    vm, _ = saved_guest(t, disk_size="256M")
    vm.sh("dd if=/dev/urandom of=/mnt/big bs=1M count=96 2>/dev/null; sync")
    saved = guest_view(vm)
    vm.save("B")
    vm.stop()
    with registry(t) as reg:
        # A push killed midway leaves no tag; the next one completes (and
        # the kill released the VM's lock).
        ref = reg.ref("qsnap/a")
        p = killed_at([QSNAP, "push", "--insecure", "--quiet", vm.dir, "B", ref],
                      lambda: '"PATCH /v2/' in open(reg.log).read())
        p.send_signal(signal.SIGKILL)
        p.communicate()
        tag = os.path.join(reg.store, "docker", "registry", "v2", "repositories", "qsnap", "a",
                           "_manifests", "tags", "B")
        check(not os.path.exists(tag), "the killed push left a tag")
        rep = push(vm, "B", ref)
        check(rep["uploaded"] + rep["present"] == rep["blobs"], f"{rep}")

        # The registry restarted in the middle of uploads (to another
        # repository, where every blob is new): the push goes on.
        patches = open(reg.log).read().count('"PATCH /v2/')
        p = killed_at([QSNAP, "push", "--insecure", "--json", vm.dir, "B", reg.ref("qsnap/b")],
                      lambda: open(reg.log).read().count('"PATCH /v2/') >= patches + 2)
        reg.stop()
        time.sleep(0.3)
        reg.start()
        out, errout = p.communicate(timeout=300)
        check(p.returncode == 0, f"the push did not survive a registry restart: {errout}")
        rep = json.loads(out)
        check(rep["uploaded"] == rep["blobs"], f"{rep}")
        # It asked where an interrupted upload stood (GET on its session).
        check(re.search(r'"GET /v2/qsnap/b/blobs/uploads/', open(reg.log).read()),
              "no upload was taken up again")

        # The registry dies once the pull's staging directory has data.
        new = os.path.join(t.dir, "pulled")

        def receiving():
            stage = [f for f in os.listdir(t.dir) if f.startswith(".pulled.qsnap-pull")]
            return stage and any(os.path.getsize(f) > 0 for f in glob.glob(
                os.path.join(t.dir, stage[0], "**", "*"), recursive=True) if os.path.isfile(f))
        p = killed_at([QSNAP, "pull", "--insecure", "--quiet", reg.ref("qsnap/a", "B"), new],
                      receiving)
        reg.stop()
        out, errout = p.communicate(timeout=120)
        check(p.returncode == 1 and errout.count("\n") == 1 and "registry" in errout
              and "nothing was created" in errout, f"{p.returncode}: {errout}")
        check(leftovers(t.dir, "pulled") == [], f"left: {leftovers(t.dir, 'pulled')}")

        # A PATCH cut before the registry got any of its bytes: the session
        # it resumes is empty (distribution says "Range: 0-0" for it, as
        # for one byte), and the push goes on from it and completes.
        reg.start()
        proxy = CuttingProxy(reg.host)
        try:
            rep = push(vm, "B", f"{proxy.host}/qsnap/c")
        finally:
            proxy.close()
        check(proxy.cut, "the proxy cut no PATCH")
        session = proxy.cut.split("?")[0]
        check(("GET", session, 204) in proxy.seen,
              f"no resume was asked for of {session}: {proxy.seen}")
        check(rep["uploaded"] == rep["blobs"], f"{rep}")

        # Every push is whole.
        for repo in ("qsnap/a", "qsnap/b", "qsnap/c"):
            d = os.path.join(t.dir, repo.replace("/", "-"))
            pull(reg.ref(repo, "B"), d)
            vm2 = pulled_vm(t, d)
            vm2.restore("B")
            check(guest_view(vm2) == saved, f"the guest pushed to {repo} differs")
            vm2.stop()


def tree(d):
    out = {}
    for root, dirs, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            out[p] = (os.path.getsize(p), os.stat(p).st_mtime_ns)
    return out


def test_bad_input(t):
    vm = t.vm()
    qsnap("stop", vm.dir)  # makes the lock file, which any later command would
    with registry(t) as reg:
        before = tree(vm.dir)
        bad = {
            "vms/web": "does not start with a registry host",
            f"{reg.host}/VMs": "not a repository name",
            f"{reg.host}/vms:-x": "not a tag",
            f"{reg.host}/vms@sha256:00": "by digest",
            "nohost": "not a registry reference",
        }
        for ref, word in bad.items():
            p = qsnap("push", "--insecure", vm.dir, "S", ref, ok=False)
            check(one_line(p) and word in p.stderr, f"push {ref}: {p.stderr}")
            p = qsnap("pull", "--insecure", ref, os.path.join(t.dir, "new"), ok=False)
            check(one_line(p) and word in p.stderr, f"pull {ref}: {p.stderr}")
        p = qsnap("push", "--insecure", vm.dir, "nosuch", reg.ref("vms"), ok=False)
        check(one_line(p) and "snapshot 'nosuch' not found" in p.stderr, p.stderr)
        for c, args in (("push", [vm.dir, "S"]), ("pull", [reg.ref("vms")])):
            p = qsnap(c, *args, ok=False)
            check(p.returncode == 2 and "expected" in p.stderr, f"{c}: {p.stderr}")
            p = qsnap(c, "--bogus", *args, "x", ok=False)
            check(p.returncode == 2 and "unknown option '--bogus'" in p.stderr, p.stderr)
        # HTTPS against a plain-HTTP registry says what to do.
        p = qsnap("pull", reg.ref("vms"), os.path.join(t.dir, "new"), ok=False)
        check(one_line(p) and "--insecure" in p.stderr, p.stderr)
        # Not a VM directory and not empty: refused before anything else.
        other = os.path.join(t.dir, "other")
        os.makedirs(other)
        open(os.path.join(other, "f"), "w").close()
        p = qsnap("pull", "--insecure", reg.ref("vms"), other, ok=False)
        check(one_line(p) and "neither a VM directory nor empty" in p.stderr, p.stderr)
        check(tree(vm.dir) == before, "a refused command changed the VM")
        check(reg.uploads() == 0, "a refused push uploaded")
    # No registry there at all.
    p = qsnap("pull", "--insecure", f"127.0.0.1:{free_port()}/vms", os.path.join(t.dir, "new"),
              ok=False)
    check(one_line(p) and "is the registry running" in p.stderr, p.stderr)
    check(leftovers(t.dir, "new") == [], f"left: {leftovers(t.dir, 'new')}")
