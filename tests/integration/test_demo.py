"""`tcpdispatch demo` end to end: every step happens, nothing is lost, no process is left."""

from __future__ import annotations

import json
import subprocess

import psutil
import pytest
from helpers import TCPDISPATCH, scaled

pytestmark = pytest.mark.integration


def test_demo_runs_every_step_and_leaves_nothing_behind() -> None:
    proc = subprocess.run(
        [*TCPDISPATCH, "demo", "--clients", "90", "--no-live", "--pace", "0.2"],
        check=False, capture_output=True, text=True, timeout=scaled(150),
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("DEMO SUMMARY ")]
    assert lines, f"no summary line; stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    summary = json.loads(lines[-1][len("DEMO SUMMARY "):])
    assert [s["name"] for s in summary["steps"]] == ["connect", "kill", "drain", "add", "rebalance", "verify"]
    failed = [s for s in summary["steps"] if not s["ok"]]
    assert not failed, failed
    assert summary["clients"] == summary["connected"] > 90
    assert summary["messages_sent"] == summary["messages_echoed"] > 0
    assert "g2" not in summary["final_shares"] and "g3" not in summary["final_shares"]
    shares = summary["final_shares"]
    assert shares.get("g4", 0) > 0
    # g4 (weight 3) holds its share of the clients that were already connected, not only newcomers
    assert abs(shares["g4"] - 3 * shares["g1"]) <= 0.1 * summary["clients"], shares
    assert proc.returncode == 0, proc.stdout[-2000:]
    workdir = summary["workdir"]
    leftovers = [
        p.pid for p in psutil.process_iter(["cmdline"])
        if any(workdir in part for part in (p.info["cmdline"] or []))
    ]
    assert leftovers == [], f"processes left behind: {leftovers}"
