"""The harness's config path: gateway handles become ``[[gateways]]`` entries in a file the
dispatcher loads; a restarted gateway keeps its command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from harness import GatewayHandle, Proc, restart_gateway, write_dispatcher_config
from tcpdispatch.config import load_config


def test_handles_become_gateway_entries_the_dispatcher_loads(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("test-secret-0123456789abcdef\n")
    g1 = GatewayHandle("g1", 7001, 8001, proc=None, weight=3)
    g2 = GatewayHandle("g2", 7002, 8002, proc=None)
    g2.check = "tcp://127.0.0.1:7002"
    port, path = write_dispatcher_config(
        tmp_path,
        [g1, g2, {"id": "g3", "address": "127.0.0.1:7003"}],
        secret_file="s",
        dispatcher={"policy": "round_robin"},
        extra="[health]\ninterval = 0.3",
    )
    assert path == tmp_path / f"dispatcher-{port}.toml"
    cfg = load_config(path)
    assert (cfg.listen, cfg.policy, cfg.health.interval) == (
        f"127.0.0.1:{port}",
        "round_robin",
        0.3,
    )
    assert [(g.id, g.address, g.check, g.weight) for g in cfg.gateways] == [
        ("g1", "127.0.0.1:7001", "http://127.0.0.1:8001/status", 3.0),
        ("g2", "127.0.0.1:7002", "tcp://127.0.0.1:7002", 1.0),
        ("g3", "127.0.0.1:7003", "tcp://127.0.0.1:7003", 1.0),
    ]


def test_restart_gateway_runs_the_same_command_line_again(procs: Callable[..., Proc]) -> None:
    args = [sys.executable, "-c", "import time; print('READY', flush=True); time.sleep(60)"]
    started: list[list[str]] = []

    def start(argv: list[str], name: str) -> Proc:
        started.append(argv)
        return procs(argv, name=name)

    gw = GatewayHandle("g1", 7001, 8001, proc=start(args, "g1"))
    first = gw.proc
    first.stop()
    restart_gateway(start, gw)
    assert started == [args, args] and gw.proc is not first and gw.proc.alive
