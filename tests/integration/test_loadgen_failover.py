"""`tcpdispatch loadgen` as a real process: 300 clients, three gateways, one killed mid-run."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from harness import start_dispatcher, start_gateway
from helpers import TCPDISPATCH, scaled, wait_until

pytestmark = pytest.mark.integration

CLIENTS = 300
CAPACITY = 200


def test_loadgen_300_clients_survive_a_gateway_kill(
    procs: Any, secret_file: Path, tmp_path: Path
) -> None:
    gws = [
        start_gateway(procs, f"g{i}", "--capacity", str(CAPACITY), secret_file=secret_file)
        for i in (1, 2, 3)
    ]
    disp = start_dispatcher(procs, tmp_path, gws, secret_file)
    out = tmp_path / "loadgen.json"
    duration = 12.0
    with open(out, "wb") as fh:
        lg = subprocess.Popen(
            [
                *TCPDISPATCH,
                "loadgen",
                "--dispatcher",
                disp.url,
                "--clients",
                str(CLIENTS),
                "--rate",
                "400",
                "--duration",
                str(duration),
                "--processes",
                "2",
                "--json",
            ],
            stdout=fh,
            stderr=subprocess.PIPE,
        )
    try:

        def total(gateways: list[Any]) -> int:
            return sum(g.status()["connections"] for g in gateways)

        wait_until(lambda: total(gws) == CLIENTS, timeout=8, what="all clients connected")
        victim = max(gws, key=lambda g: g.status()["connections"])
        survivors = [g for g in gws if g is not victim]
        t_kill = time.time()
        victim.signal(signal.SIGKILL)
        peak = 0

        def recovered() -> bool:
            nonlocal peak
            counts = [g.status()["connections"] for g in survivors]
            peak = max(peak, *counts)
            return sum(counts) == CLIENTS

        wait_until(recovered, timeout=5, interval=0.1, what="every client connected again")
        t_back = time.time() - t_kill
        assert t_back < scaled(5.0)
        assert peak <= CAPACITY, f"a surviving gateway went above capacity: {peak}"
        lg.wait(timeout=scaled(duration + 30))
    finally:
        if lg.poll() is None:
            lg.kill()
            lg.wait()
    assert lg.returncode == 0, lg.stderr.read().decode() if lg.stderr else ""
    summary = json.loads(out.read_text())
    assert summary["clients"] == CLIENTS and summary["ever_connected"] == CLIENTS
    assert summary["unrepaired"] == 0 and summary["missing_workers"] == 0
    moved = [back - lost for lost, back in summary["reconnect_pairs"] if lost >= t_kill - 1]
    assert len(moved) >= CLIENTS // 4  # the victim held the most of 300 clients
    assert max(moved) < scaled(5.0)
    assert max(b for _, b in summary["reconnect_pairs"]) - t_kill < scaled(5.0)
    assert victim.id not in summary["gateways"] and sum(summary["gateways"].values()) == CLIENTS
    assert summary["connect_latency_s"]["p50"] is not None
