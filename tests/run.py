"""Runs the unit tests through meson and the integration tests, and prints
the totals as the last line: "N passed, N failed"."""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def unit_tests(build):
    """Each cmocka case counts once; a test program that fails without
    saying which case (a crash) counts as one failure."""
    subprocess.run(["meson", "test", "-C", build, "--print-errorlogs"], cwd=ROOT)
    passed = failed = 0
    log = os.path.join(ROOT, build, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        return 0, 1
    with open(log) as f:
        for line in f:
            t = json.loads(line)
            out = t.get("stdout", "") + t.get("stderr", "")
            ok = len(re.findall(r"^\[       OK \]", out, re.M))
            # cmocka names a failed case twice: when it fails and in its summary.
            bad = len(set(re.findall(r"^\[  FAILED  \] (?!\d+ test)(\S+)", out, re.M)))
            if t["result"] != "OK" and bad == 0:
                bad = 1
            passed += ok
            failed += bad
    print(f"unit: {passed} passed, {failed} failed", flush=True)
    return passed, failed


def main():
    import harness
    import run as integration

    only = sys.argv[1:] or None
    up, uf = (0, 0) if only else unit_tests("build")
    mods = [__import__(m) for m in integration.MODULES
            if os.path.exists(os.path.join(ROOT, "tests", "integration", m + ".py"))]
    ip, if_ = harness.run_tests(mods, only=only)
    print(f"integration: {ip} passed, {if_} failed", flush=True)
    print(f"{up + ip} passed, {uf + if_} failed")
    return 1 if uf + if_ else 0


if __name__ == "__main__":
    sys.exit(main())
