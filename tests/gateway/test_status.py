"""Status JSON, Prometheus text, agent lines, CPU sampling and config validation."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from tcpdispatch.errors import ConfigError, ErrorCode
from tcpdispatch.gateway.cli import add_parser
from tcpdispatch.gateway.config import GatewayConfig, from_args
from tcpdispatch.gateway.handlers import BroadcastHandler, EchoHandler, load_handler_class
from tcpdispatch.gateway.shm import NodeCounters
from tcpdispatch.gateway.status import CpuSampler, StatusService, agent_line


def service(**cfg: Any) -> StatusService:
    c = GatewayConfig(id="g1", listen=("127.0.0.1", 9001), status=("127.0.0.1", 9101), **cfg)
    counters = NodeCounters(1)
    return StatusService(c, counters, on_drain=counters.set_draining, pids=list)


def test_status_fields_and_metrics() -> None:
    s = service(capacity=10, advertise="gw1.example:9001")
    for _ in range(3):
        s.counters.admit(10, "1.1.1.1", 0)
        s.counters.add_accepted()
    s.counters.add_rejected(ErrorCode.TICKET_EXPIRED)
    st = s.status()
    assert {k: st[k] for k in ("id", "state", "connections", "capacity", "address", "accepted", "rejected",
                               "workers")} == {
        "id": "g1", "state": "serving", "connections": 3, "capacity": 10, "address": "gw1.example:9001",
        "accepted": 3, "rejected": {"ticket_expired": 1}, "workers": 1}
    assert 0 <= st["cpu"] <= 1 and st["uptime_s"] >= 0 and st["version"]
    from prometheus_client import generate_latest

    text = generate_latest(s._registry).decode()  # type: ignore[arg-type]
    assert 'tcpdispatch_gateway_connections{gateway="g1"} 3.0' in text
    assert 'tcpdispatch_gateway_rejected_total{gateway="g1",reason="ticket_expired"} 1.0' in text


def test_agent_lines() -> None:
    c = NodeCounters(1)
    for _ in range(27):
        c.admit(100, None, 0)
    assert agent_line(c.snapshot(), 100) == b"up 73% maxconn:73\n"
    c.set_draining()
    assert agent_line(c.snapshot(), 100) == b"drain\n"


def test_cpu_sampler_uses_injected_clock() -> None:
    now = [0.0]
    s = CpuSampler(list, clock=lambda: now[0])
    assert s.sample() == 0.0
    now[0] = 1.0
    assert s.sample() == 0.0  # no processes: no CPU


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers())
    return p.parse_args(["gateway", "--id", "g1", "--listen", "127.0.0.1:1", "--status", "127.0.0.1:2", *argv])


def test_config_defaults(tmp_path: Path) -> None:
    cfg = from_args(parse("--no-ticket"))
    assert (cfg.capacity, cfg.per_ip_limit, cfg.heartbeat, cfg.idle_timeout, cfg.handshake_timeout,
            cfg.drain_window, cfg.max_frame, cfg.workers, cfg.secrets) == (
        10_000, 0, 10.0, 30.0, 5.0, 30.0, 65536, 1, None)
    secret = tmp_path / "s"
    secret.write_text("a-secret-of-enough-length\n")
    token = tmp_path / "t"
    token.write_text("tok\n")
    cfg = from_args(parse("--secret-file", str(secret), "--heartbeat", "2", "--report-to",
                          "http://127.0.0.1:8080/", "--report-token-file", str(token)))
    assert cfg.secrets == (b"a-secret-of-enough-length",) and cfg.idle_timeout == 6.0
    assert cfg.report_to == "http://127.0.0.1:8080" and cfg.report_token == "tok"


@pytest.mark.parametrize("argv,key", [
    ((), "--secret-file"),
    (("--no-ticket", "--capacity", "0"), "--capacity"),
    (("--no-ticket", "--workers", "0"), "--workers"),
    (("--no-ticket", "--idle-timeout", "-1"), "--idle-timeout"),
    (("--no-ticket", "--max-frame", "10"), "--max-frame"),
    (("--no-ticket", "--report-to", "ftp://x"), "--report-to"),
    (("--no-ticket", "--report-to", "http://x"), "--report-token-file"),
    (("--no-ticket", "--agent", "nope"), "--agent"),
])
def test_config_errors_name_the_flag(argv: tuple[str, ...], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        from_args(parse(*argv))
    assert exc.value.key == key


def test_handler_registry() -> None:
    assert load_handler_class("echo") is EchoHandler
    assert load_handler_class("broadcast") is BroadcastHandler
    assert load_handler_class("tcpdispatch.gateway.handlers:EchoHandler") is EchoHandler
    for bad in ("nope", "no.such.module:X", "tcpdispatch.gateway.handlers:Missing", "json:JSONDecoder"):
        with pytest.raises(ConfigError):
            load_handler_class(bad)


def test_metrics_carry_build_info_and_the_process_collector() -> None:
    import platform

    from prometheus_client import generate_latest

    from tcpdispatch import __version__
    from tcpdispatch.metrics_common import accelerator

    text = generate_latest(service()._registry).decode()  # type: ignore[arg-type]
    assert (f'tcpdispatch_build_info{{accelerator="{accelerator()}",python="{platform.python_version()}",'
            f'version="{__version__}"}} 1.0') in text
    assert "process_cpu_seconds_total " in text and "process_resident_memory_bytes " in text
