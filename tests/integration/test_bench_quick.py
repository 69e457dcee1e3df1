"""`python -m bench --quick` runs every scenario small, writes results and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers import require_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "bench" / "results" / "quick"
SCENARIOS = (
    "throughput",
    "failure_detection",
    "balance",
    "failover",
    "drain",
    "capacity",
    "data_path",
    "health_scale",
    "rebalance",
)


# The temp-dir prefix of the suite's own scenarios (children name files in it on their command
# line). The wrapped scripts (scenarios 1 and 6) share prefixes with other people's runs, so their
# cleanup is covered by their own process-group kills, not by this check.
MARKERS = ("tcpdsuite-",)


def _bench_processes() -> set[int]:
    """Live processes whose command line names a bench temp dir (children are reparented on
    exit)."""
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or ())
        if any(m in cmd for m in MARKERS):
            found.add(proc.info["pid"])
    return found


@pytest.mark.timeout(230)
def test_bench_quick_runs_every_scenario() -> None:
    for tool in ("haproxy", "nginx", "wrk"):
        require_binary(tool)
    before = _bench_processes()
    p = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    summary = json.loads((QUICK / "summary.json").read_text())
    assert summary["quick"] is True and summary["cores"] >= 1
    assert set(summary["scenarios"]) == set(SCENARIOS)
    for name in SCENARIOS:
        assert "error" not in summary["scenarios"][name], (name, summary["scenarios"][name])
        result = json.loads((QUICK / f"{name}.json").read_text())
        assert result["quick"] is True
        assert f"[{name}]" in p.stdout and "(cores: " in p.stdout
    for name in ("throughput", "failure_detection", "balance", "failover", "drain", "data_path"):
        assert (QUICK / f"{name}.png").stat().st_size > 1000
    assert summary["total_s"] < 150, summary["total_s"]  # 8 scenarios (rebalance: about 20 s)
    leftover = [pid for pid in _bench_processes() - before if psutil.pid_exists(pid)]
    assert not leftover, leftover
