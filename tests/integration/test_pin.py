"""Pulling by digest: host/repo@sha256:... is exactly the manifest push
printed, whatever the tag says since, and a registry that serves another
manifest for it is refused."""

import hashlib
import json
import os

from harness import QEMU_ARGS, check, qsnap
from test_origin import Proxy
from test_registry import config_of, leftovers, one_line, pull, pulled_vm, registry
from test_snapshots import guest_view


def test_pull_by_digest(t):
    vm = t.vm()
    vm.boot()
    vm.sh("X=first")
    vm.save("S")
    vm.sh("X=second")
    vm.save("C")
    vm.stop()
    with registry(t) as reg:
        ref = reg.ref("qsnap/vm", "v")
        p = qsnap("push", "--insecure", vm.dir, "S", ref)
        first = p.stdout.splitlines()[-1]
        check(first.startswith("sha256:") and len(first) == 71, f"push printed: {p.stdout}")
        # The tag moves on to C.
        second = json.loads(qsnap("push", "--insecure", "--json", vm.dir, "C", ref).stdout)["digest"]
        check(second != first, "two snapshots, one digest")

        # Pinned: S, whatever the tag says; the pull prints the digest.
        new = os.path.join(t.dir, "pinned")
        p = qsnap("pull", "--insecure", reg.ref("qsnap/vm") + "@" + first, new, *QEMU_ARGS)
        check(first in p.stdout.splitlines() and "pulled snapshot S" in p.stdout,
              f"pull printed: {p.stdout}")
        v2 = pulled_vm(t, new)
        v2.restore("S")
        check(v2.sh('echo "$X"') == "first", "the pinned pull is not the pushed S")
        v2.stop()
        got = pull(ref, os.path.join(t.dir, "tagged"))
        check(got["name"] == "C" and got["digest"] == second, f"by tag: {got}")

        # A digest the registry lacks; a tag and a digest; a push by digest.
        missing = "sha256:" + "0" * 64
        p = pull(reg.ref("qsnap/vm") + "@" + missing, os.path.join(t.dir, "x"), ok=False)
        check(one_line(p) and "@" + missing + " is not in the registry" in p.stderr, p.stderr)
        p = pull(ref + "@" + first, os.path.join(t.dir, "x"), ok=False)
        check(one_line(p) and "not both" in p.stderr, p.stderr)
        p = qsnap("push", "--insecure", vm.dir, "S", reg.ref("qsnap/vm") + "@" + first, ok=False)
        check(one_line(p) and "a push names a tag, not a digest" in p.stderr, p.stderr)

        # A registry that serves C's manifest (with C's true digest in its
        # header) when asked for S's: refused, nothing left.
        c_manifest, _ = config_of(reg, "qsnap/vm", "v")
        c_body = open(reg.blob_path(second), "rb").read()
        check(hashlib.sha256(c_body).hexdigest() == second.split(":")[1], "C's manifest")

        def liar(method, path):
            if path.endswith("/manifests/" + first):
                return (200, {"Content-Type": c_manifest["mediaType"],
                         "Docker-Content-Digest": second}, c_body)
            return None
        front = Proxy(reg.host, answer=liar)
        try:
            p = qsnap("pull", "--insecure", f"{front.host}/qsnap/vm@{first}",
                      os.path.join(t.dir, "lied"), *QEMU_ARGS, ok=False)
            check(one_line(p) and f"sent a manifest with digest {second}" in p.stderr
                  and "refused" in p.stderr and "nothing was created" in p.stderr, p.stderr)
            check(leftovers(t.dir, "lied") == [], f"left: {leftovers(t.dir, 'lied')}")
        finally:
            front.stop()
