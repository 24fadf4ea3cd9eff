#!/usr/bin/env python3
"""Run the integration tests: python3 tests/integration/run.py [NAME-FILTER...]"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import run_tests  # noqa: E402

MODULES = ["test_foundation", "test_snapshots", "test_shared", "test_diff", "test_balloon", "test_live", "test_dump", "test_compact",
           "test_publish", "test_embed", "test_registry", "test_faults", "test_badinput", "test_isolation",
           "test_console", "test_qemu", "test_trust", "test_origin", "test_pin", "test_bounds",
           "test_ram_folder", "test_soak", "test_cli_docs"]

if __name__ == "__main__":
    # The last line is what tests/run.py reads: "integration: N passed, N
    # failed, N skipped" (each skip named above it by a "skip" line).
    res = run_tests(MODULES, only=sys.argv[1:] or None)
    print(f"integration: {res.line()}")
    sys.exit(1 if res.failed else 0)
