"""Runs all of qsnap's checks and prints the totals as the last line:
"N passed, N failed, N skipped"; every skipped test is named above it.

Without arguments (make check), in this order:
  unit        the meson tests of build/ (cmocka cases, fuzz corpus replays)
  layers      the library's floors, on its object files (tests/layers.py)
  valgrind    the same tests under valgrind
  clang       a clang build with -Wall -Wextra -Werror (build-clang/)
  asan        an ASan+UBSan build (build-asan/): its meson tests, and a few
              integration tests against its qsnap binary
  tsan        a ThreadSanitizer build of the library (build-tsan/) under the
              threaded embedding programs (tests/embed: embed_threads.c,
              embed_cancel.c)
  fuzz        the libFuzzer targets (build-fuzz/, clang), a short run each
  integration every integration test against build/, with the system's
              QEMU (Debian 12: 7.2), then with QEMU 10 (build/qemu10,
              installed by scripts/qemu10) all but QEMU10_SKIP
Every build, every test case, every fuzz target counts as one test; the
skipped tests (each with why) and the totals per QEMU come before the
overall line. A test module that is missing or does not load, and a
NAME-FILTER that selects no test, count as failures.
The tests that need a QEMU (the binding's and the integration tests) run
on each QEMU; in the full run the two QEMUs' runs go side by side, then
the test modules marked ALONE run one after the other.
With arguments, only the integration tests whose name contains one of them
(on both QEMUs, one after the other); "python" selects the binding's tests.

Environment: QSNAP_FUZZ_SECONDS (per fuzz target, default 15);
QSNAP_TEST_QEMUS: which QEMUs the integration tests run on, "system",
"qemu10" or "system,qemu10" (the default).
"""

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

FUZZ_TARGETS = ["qmp", "state", "vmdef", "input", "oci", "auth", "export"]
# Integration tests that also run against the ASan+UBSan binary: the main
# paths (boot, save, restore, the tree), the error paths of bad input and
# damaged files, and recovery after an interrupted save.
ASAN_INTEGRATION = [
    "test_foundation.test_boot_serial_status_stop",
    "test_foundation.test_init_errors_write_nothing",
    "test_foundation.test_help",
    "test_snapshots.test_memory_and_cpu_state",
    "test_snapshots.test_tree_restore_older_keeps_newer",
    "test_snapshots.test_damaged_snapshot_leaves_vm_running",
    "test_snapshots.test_compressed_snapshot",
    "test_shared.test_shared_tree_eager_and_lazy",
    "test_live.test_live_save_no_wait",
    "test_dump.test_dump_running_guest_goes_on",
    "test_compact.test_compact_running_and_stopped",
    "test_faults.test_damaged_state_json",
    "test_faults.test_qsnap_killed_during_save",
    "test_badinput.",
    "test_registry.test_push_pull_restore_and_start_from",
    "test_registry.test_child_push_sends_only_what_changed",
    "test_registry.test_faults_damaged_blob_missing_tag",
    "test_registry.test_bad_input",
    # Data from elsewhere: hostile archives and artifacts, a front that
    # sends uploads elsewhere, pinned pulls.
    "test_trust.",
    "test_bounds.",
    "test_origin.",
    "test_pin.",
]
# And against QEMU 10: the paths only a newer QEMU takes (file: through
# add-fd, mapped-ram + multifd, cont after a live save's device state,
# exit-on-error off).
ASAN_INTEGRATION_QEMU10 = [
    "test_qemu.test_stream_format_per_qemu",
    "test_qemu.test_restore_failure_says_why",
    "test_live.test_live_save_is_the_guest_at_the_pause",
]
# Threads of one program on the library at once, and a call cancelled from
# another thread, under ThreadSanitizer.
TSAN_INTEGRATION = [
    "test_embed.test_embed_threads",
    "test_embed.test_embed_cancel",
]
TSAN_ENV = {
    "QSNAP_SANITIZE": "thread",
    "TSAN_OPTIONS": "halt_on_error=0:exitcode=86:suppressions="
    + os.path.join(ROOT, "tests", "embed", "tsan.supp"),
}
SANITIZER_ENV = {
    # A distinct exit code, so that a sanitizer report is never mistaken
    # for an ordinary failure that a test expects.
    "ASAN_OPTIONS": "detect_leaks=1:exitcode=86:abort_on_error=0",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=86",
}


# The two QEMUs' runs go side by side (main): one line is one write.
_say_lock = threading.Lock()


def say(text=""):
    with _say_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


class Totals:
    def __init__(self):
        self.passed = self.failed = 0
        self.skipped = []  # "LABEL NAME (why)"

    def add(self, label, ok, detail=""):
        """One check outside the test runners: a build, a fuzz run."""
        if ok:
            self.passed += 1
            say(f"ok   {label}")
        else:
            self.failed += 1
            say(f"FAIL {label}\n     {detail.strip()}".replace("\n", "\n     "))

    def count(self, label, passed, failed, skipped=()):
        """A runner's totals; skipped names each test it skipped."""
        say(f"{label}: {passed} passed, {failed} failed, {len(skipped)} skipped")
        self.passed += passed
        self.failed += failed
        self.skipped += [f"{label}: {s}" for s in skipped]

    def merge(self, other):
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped


def tail(text, n=30):
    return "\n".join(text.strip().splitlines()[-n:])


def meson_tests(build, label, logbase="testlog", wrapper=None, env=None):
    """Each cmocka case counts once; a test program that is not cmocka (a
    fuzz corpus replay) counts once; a program that fails without naming a
    failed case (a crash, a valgrind or sanitizer report) counts as one
    failure; a cmocka case that skipped, and a program meson reports as
    SKIP, are named as skipped. Returns (passed, failed, skipped)."""
    cmd = ["meson", "test", "-C", build, "--print-errorlogs", "--logbase", logbase]
    if wrapper:
        cmd += ["--wrapper", wrapper]
    # meson adds the wrapper's name to the log's: testlog-valgrind.json.
    name = logbase + ("-" + os.path.basename(wrapper.split()[0]) if wrapper else "")
    log = os.path.join(ROOT, build, "meson-logs", name + ".json")
    if os.path.exists(log):
        os.unlink(log)
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})})
    passed = failed = 0
    skipped = []
    if not os.path.exists(log):
        return 0, 1, skipped
    with open(log) as f:
        for line in f:
            t = json.loads(line)
            out = t.get("stdout", "") + t.get("stderr", "")
            ok = len(re.findall(r"^\[       OK \]", out, re.M))
            # cmocka names a failed case twice: when it fails and in its summary.
            bad = len(set(re.findall(r"^\[  FAILED  \] (?!\d+ test)(\S+)", out, re.M)))
            skips = sorted(set(re.findall(r"^\[  SKIPPED \] (?!\d+ test)(\S+)", out, re.M)))
            skipped += [f"{t['name']}: {c}" for c in skips]
            if t["result"] == "SKIP":
                skipped.append(f"{t['name']} (the test program skipped)")
            elif t["result"] != "OK" and bad == 0:
                bad = 1
            elif t["result"] == "OK" and ok == 0 and bad == 0 and not skips:
                ok = 1
            passed += ok
            failed += bad
    return passed, failed, skipped


def meson_build(build, options=(), env=None):
    """Set up (once) and build a variant; returns (ok, output)."""
    env = {**os.environ, **(env or {})}
    out = ""
    if not os.path.exists(os.path.join(ROOT, build, "build.ninja")):
        p = subprocess.run(["meson", "setup", build, *options], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        out += p.stdout + p.stderr
        if p.returncode != 0:
            return False, out
    p = subprocess.run(["ninja", "-C", build], cwd=ROOT, env=env, capture_output=True, text=True)
    out += p.stdout + p.stderr
    return p.returncode == 0, out


def have(prog):
    return shutil.which(prog) is not None


def run_valgrind(tot):
    if not have("valgrind"):
        tot.add("valgrind: unit tests", False, "valgrind is not installed (scripts/bootstrap check)")
        return
    wrapper = ("valgrind --quiet --error-exitcode=99 --leak-check=full "
               "--errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect")
    tot.count("valgrind", *meson_tests("build", "valgrind", wrapper=wrapper))


def run_clang(tot):
    if not have("clang"):
        tot.add("clang: build with -Werror", False, "clang is not installed (scripts/bootstrap check)")
        return
    ok, out = meson_build("build-clang", env={"CC": "clang"})
    tot.add("clang: build with -Wall -Wextra -Werror", ok, tail(out))


def integration_subprocess(tot, label, build, names, env, total_label=None):
    """Integration tests in a child (the harness reads QSNAP_BUILD when it
    is imported); its lines are shown with the label in front."""
    env = {**os.environ, **env, "QSNAP_BUILD": os.path.join(ROOT, build),
           "QSNAP_GUEST": os.path.join(ROOT, "build", "guest")}
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "integration", "run.py"),
                          *names], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    passed = failed = None
    skipped = []
    for line in p.stdout:
        m = re.match(r"integration: (\d+) passed, (\d+) failed, (\d+) skipped$", line.strip())
        if m:
            passed, failed, nskip = int(m.group(1)), int(m.group(2)), int(m.group(3))
            continue
        if line.startswith("skip "):
            skipped.append(line[5:].strip())
        say((f"{label} " if label else "") + line.rstrip() if line.strip() else "")
    p.wait()
    if passed is None:
        tot.add(f"{total_label or label}: integration tests", False, f"the test run ended without totals "
                f"(exit {p.returncode})")
        return
    if nskip != len(skipped):
        tot.add(f"{total_label or label}: integration tests", False,
                f"{nskip} skipped by the totals, {len(skipped)} named")
    tot.count(total_label or f"{label} integration", passed, failed, skipped)


QEMU10 = os.path.join(ROOT, "build", "qemu10", "usr", "bin", "qemu-system-x86_64")
# The full run leaves these out on QEMU 10 (they run on the system's QEMU,
# and are counted and named as skipped on 10): they test what qsnap does
# without QEMU or the same way on any QEMU, so a second run adds minutes, not
# coverage. Only tests that do not depend on QEMU belong here: not those
# where QEMU writes files or creates sockets, saves or restores, or whose
# qemu-img is QEMU 10's own. Named tests (tests/run NAME) run on both QEMUs.
QEMU10_SKIP = [
    "test_badinput.",                        # argument and input checks, no QEMU
    "test_faults.test_two_commands_at_once",  # the VM lock
    "test_faults.test_damaged_state_json",    # state.json and vm.json parsing
    "test_faults.test_leftovers_of_a_killed_command",  # stray files and an orphan QEMU
    "test_foundation.test_serial_log_kept_across_restarts",
    "test_foundation.test_help", "test_foundation.test_init_errors_write_nothing",
    "test_foundation.test_not_a_vm_directory", "test_foundation.test_missing_qemu_binary",
    "test_isolation.test_vm_dir_of_another_user_is_refused",
    "test_shared.test_memory_size_change_is_refused",  # checked before QEMU starts
    "test_shared.test_no_space_",            # qsnap's own free-space checks and RAM copy
    "test_embed.test_install_shared_library",  # meson install, nm: no QEMU
    "test_cli_docs.test_help_columns", "test_cli_docs.test_man_page",  # no QEMU
    # The registry's transport, auth and faults: HTTP, the same on any QEMU
    # (the round trips, dedup and zero chunks run on both).
    "test_registry.test_skopeo_", "test_registry.test_basic_auth",
    "test_registry.test_bearer_token_auth", "test_registry.test_faults_",
    "test_registry.test_bad_input",
    # Data from elsewhere: hostile archives and artifacts, a front that
    # sends uploads elsewhere, pinned pulls.
    "test_trust.",
    "test_bounds.",
    "test_origin.",
    "test_pin.",
]


def qemu_version(binary):
    p = subprocess.run([binary, "--version"], capture_output=True, text=True)
    m = re.search(r"version (\S+)", p.stdout)
    return m.group(1) if m else "?"


def run_asan(tot):
    ok, out = meson_build("build-asan", ["-Db_sanitize=address,undefined", "-Db_lundef=false"])
    tot.add("asan: ASan+UBSan build", ok, tail(out))
    if not ok:
        return
    tot.count("asan unit", *meson_tests("build-asan", "asan", env=SANITIZER_ENV))
    integration_subprocess(tot, "asan", "build-asan", ASAN_INTEGRATION, SANITIZER_ENV)
    if os.path.exists(QEMU10):
        integration_subprocess(tot, "asan-qemu10", "build-asan", ASAN_INTEGRATION_QEMU10,
                               {**SANITIZER_ENV, "QSNAP_TEST_QEMU": QEMU10})


def run_tsan(tot):
    ok, out = meson_build("build-tsan", ["-Db_sanitize=thread", "-Db_lundef=false"])
    tot.add("tsan: ThreadSanitizer build", ok, tail(out))
    if ok:
        integration_subprocess(tot, "tsan", "build-tsan", TSAN_INTEGRATION, TSAN_ENV)


def run_fuzz(tot):
    if not have("clang"):
        tot.add("fuzz: libFuzzer build", False, "clang is not installed (scripts/bootstrap check)")
        return
    ok, out = meson_build("build-fuzz", ["-Dfuzzing=true", "-Db_sanitize=address,undefined",
                                         "-Db_lundef=false"], env={"CC": "clang"})
    tot.add("fuzz: libFuzzer build (clang, ASan+UBSan)", ok, tail(out))
    if not ok:
        return
    seconds = int(os.environ.get("QSNAP_FUZZ_SECONDS", "15"))
    fuzz_dir = os.path.join(ROOT, "tests", "fuzz")
    arts = os.path.join(ROOT, "build-fuzz", "artifacts")
    os.makedirs(arts, exist_ok=True)

    def fuzz(t):
        work = os.path.join(ROOT, "build-fuzz", "corpus-" + t)
        os.makedirs(work, exist_ok=True)
        # New inputs go to build-fuzz/corpus-NAME; the checked-in seeds are
        # only read. A fixed seed makes a run repeat the last one's inputs
        # (as far as the time allows): a failure in CI reproduces.
        p = subprocess.run(
            [os.path.join(ROOT, "build-fuzz", "tests", "fuzz", "fuzz-" + t),
             f"-max_total_time={seconds}", "-seed=1", "-timeout=10", "-max_len=65536", "-rss_limit_mb=2048",
             "-print_final_stats=1", f"-dict={fuzz_dir}/json.dict",
             f"-artifact_prefix={arts}/{t}-", work, os.path.join(fuzz_dir, "corpus", t)],
            cwd=ROOT, env={**os.environ, **SANITIZER_ENV}, capture_output=True, text=True)
        runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", p.stderr)
        runs = runs.group(1) if runs else "?"
        return (f"fuzz: {t} ({seconds} s, {runs} runs)", p.returncode == 0,
                "a crash, leak or hang; the input is in build-fuzz/artifacts/:\n" + tail(p.stderr, 40))

    # One target per core at a time (each is one process, one thread).
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for result in pool.map(fuzz, FUZZ_TARGETS):
            tot.add(*result)


def run_layers(tot):
    """The library's floors hold on its object files (tests/layers.py)."""
    lib = os.path.join(ROOT, "build", "src", "lib", "libqsnap-internal.a")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "layers.py"), lib],
                       capture_output=True, text=True)
    tot.add("layers: no call cycle, no use of a floor above", r.returncode == 0,
            r.stdout + r.stderr)


def have_pytest(tot):
    """Debian's python3 runs the binding's tests (tests/python)."""
    if subprocess.run([PYTHON, "-c", "import pytest"], capture_output=True).returncode:
        tot.add("python: the binding's tests", False,
                "python3-pytest is not installed (scripts/bootstrap check)")
        return False
    return True


PYTHON = "/usr/bin/python3"


def run_pytest(tot, qemu):
    """import qsnap's pytest tests on the build tree's library, on qemu
    (None: the system's); each run in a folder of its own."""
    env = {**os.environ, "QSNAP_LIBRARY": os.path.join(ROOT, "build", "src", "lib",
                                                       "libqsnap.so.1")}
    if qemu:
        env["QSNAP_TEST_QEMU"] = qemu
    with tempfile.TemporaryDirectory(prefix="qsnap-pytest-") as tmp:
        p = subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "--basetemp", os.path.join(tmp, "t"), "tests/python"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    n = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|error)", last)}
    failed = n.get("failed", 0) + n.get("error", 0)
    if p.returncode and not failed:
        failed = 1
    if failed:
        say(tail(p.stdout + p.stderr, 60))
    for line in p.stdout.splitlines():
        if line.startswith("qsnap plugin:"):  # the per-test restore time
            say(line)
    tot.count(f"python QEMU {qemu_version(qemu or 'qemu-system-x86_64')}", n.get("passed", 0),
              failed)


def qemu_run(tot, q, only, python, alone=None):
    """The tests that need a QEMU, on QEMU q ("system" or "qemu10"): the
    binding's (python) and the integration tests (alone: QSNAP_TEST_ALONE)."""
    binary = QEMU10 if q == "qemu10" else None
    label = f"integration QEMU {qemu_version(binary or 'qemu-system-x86_64')}"
    if python:
        run_pytest(tot, binary)
    if only is not None:
        only = [o for o in only if o != "python"]
        if not only:
            return label  # tests/run python: the binding's tests alone
    env = {}
    if binary:
        env["QSNAP_TEST_QEMU"] = binary
        if not only:
            env["QSNAP_TEST_SKIP"] = ",".join(QEMU10_SKIP)
    if alone:
        env["QSNAP_TEST_ALONE"] = alone
    integration_subprocess(tot, "qemu10" if binary else "", "build", only or [], env,
                           total_label=label)
    return label


def main():
    only = sys.argv[1:] or None
    tot = Totals()
    if not only:
        tot.count("unit", *meson_tests("build", "unit"))
        run_layers(tot)
        run_valgrind(tot)
        run_clang(tot)
        run_asan(tot)
        run_tsan(tot)
        run_fuzz(tot)
    which = [q for q in os.environ.get("QSNAP_TEST_QEMUS", "system,qemu10").split(",") if q]
    if "qemu10" in which and not os.path.exists(QEMU10):
        tot.add("integration QEMU 10", False,
                f"{QEMU10} is missing: run scripts/qemu10 (make check does)")
        which.remove("qemu10")
    python = (not only or "python" in only) and have_pytest(tot)
    per = {q: Totals() for q in which}
    labels = {}
    if not only and len(which) > 1:
        # The full run: each QEMU's tests in a thread of their own, side by
        # side (a test guest keeps about one core busy while it boots; the
        # machine has two), then the modules that must run alone.
        threads = [threading.Thread(target=lambda q=q: labels.__setitem__(
            q, qemu_run(per[q], q, only, python, "without"))) for q in which]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for q in which:
            qemu_run(per[q], q, only, False, "only")
    else:
        for q in which:
            labels[q] = qemu_run(per[q], q, only, python)
    for q in which:
        tot.merge(per[q])
    for s in tot.skipped:
        print(f"skipped: {s}")
    for q in which:
        t = per[q]
        print(f"{labels[q]}: {t.passed} passed, {t.failed} failed, {len(t.skipped)} skipped")
    print(f"{tot.passed} passed, {tot.failed} failed, {len(tot.skipped)} skipped")
    return 1 if tot.failed else 0


if __name__ == "__main__":
    sys.exit(main())
