"""The fuzz harness (bench/fuzz_codec.py) itself runs and reports its count; `make fuzz` runs it
long."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import scaled

ROOT = Path(__file__).parents[2]
ENGINES = ["random"] + (["atheris"] if importlib.util.find_spec("atheris") else [])


@pytest.mark.parametrize("engine", ENGINES)
def test_fuzz_harness_short_run(engine: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.fuzz_codec", "--runs", "3000", "--engine", engine],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "fuzz_codec: 3000 inputs run, 0 findings" in out.stdout
