"""The README's "From Python" examples, run as written: the first block in
a folder holding what it names (base.qcow2, vmlinuz, initrd.img of the
test guest), the second as test_kernel.py under pytest with the plugin, on
the VM directory the first one made. Only the accelerator and the QEMU
binary are added to VM.create (the tests pin them: this machine's KVM may
not run guests), and nothing else is changed."""

import os
import re
import subprocess
import sys

from conftest import ACCEL, GUEST, QEMU, ROOT

SECTION = "## From Python"


def readme_blocks():
    text = open(os.path.join(ROOT, "README.md")).read()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def run(argv, cwd, timeout):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "python")}
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def test_readme_examples_run_as_written(tmp_path):
    blocks = readme_blocks()
    assert len(blocks) == 2, f"README's {SECTION!r} has {len(blocks)} Python blocks, not 2"
    example, suite = blocks

    pinned = f"accel={ACCEL!r}, qemu={QEMU!r}, "
    assert example.count("memory=") == 1, "the first example no longer calls VM.create once"
    example = example.replace("memory=", pinned + "memory=")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    str(tmp_path / "base.qcow2"), "64M"], check=True)
    os.symlink(os.path.join(GUEST, "vmlinuz"), tmp_path / "vmlinuz")
    os.symlink(os.path.join(GUEST, "initramfs.img"), tmp_path / "initrd.img")
    (tmp_path / "example.py").write_text(example)
    rc, out = run([sys.executable, "example.py"], tmp_path, 900)
    assert rc == 0, out
    # What the example's comments say it prints.
    assert re.search(r"^paused \d+\.\d{3} s$", out, re.M), out
    assert "('ready', 0)" in out, out
    assert "['ready'] running" in out, out
    assert re.search(r"^2 snapshot 'nope' not found in .*\(have: ready\)", out, re.M), out

    (tmp_path / "test_kernel.py").write_text(suite)
    first = suite.splitlines()[0]
    m = re.match(r"# test_kernel\.py: (pytest .*)$", first)
    assert m, f"the pytest example's first line names no command: {first!r}"
    argv = m.group(1).split()
    rc, out = run([sys.executable, "-m"] + argv + ["-p", "no:cacheprovider"], tmp_path, 1200)
    assert rc == 0, out
    assert re.search(r"\b2 passed\b", out), out
