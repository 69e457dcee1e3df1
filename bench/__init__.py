"""Benchmark scenarios (``python -m bench``), run from the repository root.

They start real systems with the test suite's harness (``tests/harness``): ``tests/`` goes on
the import path here exactly as pytest's ``pythonpath = ["tests"]`` puts it there for the
tests, so both import the one module ``harness``.
"""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if _TESTS not in sys.path:
    sys.path.append(_TESTS)
