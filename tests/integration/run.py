#!/usr/bin/env python3
"""Run the integration tests: python3 tests/integration/run.py [NAME-FILTER...]"""

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import run_tests  # noqa: E402

MODULES = ["test_foundation", "test_snapshots", "test_shared", "test_live", "test_dump", "test_compact",
           "test_publish", "test_embed", "test_registry", "test_faults", "test_badinput", "test_isolation",
           "test_console", "test_qemu", "test_trust", "test_origin", "test_pin", "test_bounds", "test_ram_folder", "test_soak"]

if __name__ == "__main__":
    mods = [importlib.import_module(m) for m in MODULES
            if os.path.exists(os.path.join(os.path.dirname(__file__), m + ".py"))]
    passed, failed = run_tests(mods, only=sys.argv[1:] or None)
    print(f"integration: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
