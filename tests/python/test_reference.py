"""docs/python.md is the binding's reference, written from its docstrings
and signatures by scripts/python-reference: it must say what the package
does now."""

import os
import subprocess

from conftest import ROOT


def test_reference_is_current():
    p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "python-reference"),
                        "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
