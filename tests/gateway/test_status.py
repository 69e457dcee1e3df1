"""Status JSON, Prometheus text, agent lines, CPU sampling and config validation."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import scaled

from tcpdispatch.errors import ConfigError, ErrorCode
from tcpdispatch.gateway.cli import add_parser
from tcpdispatch.gateway.config import GatewayConfig, from_args
from tcpdispatch.gateway.handlers import BroadcastHandler, EchoHandler, load_handler_class
from tcpdispatch.gateway.shm import NodeCounters
from tcpdispatch.gateway.status import CpuSampler, StatusService, agent_line


def service(**cfg: Any) -> StatusService:
    c = GatewayConfig(id="g1", listen=("127.0.0.1", 9001), status=("127.0.0.1", 9101), **cfg)
    counters = NodeCounters(1)
    counters.bind_worker(0)
    return StatusService(c, counters, on_drain=counters.set_draining, pids=list)


def test_status_fields_and_metrics() -> None:
    s = service(capacity=10, advertise="gw1.example:9001")
    for _ in range(3):
        s.counters.admit(10, "1.1.1.1", 0)
        s.counters.add_accepted()
    s.counters.add_rejected(ErrorCode.TICKET_EXPIRED)
    st = s.status()
    assert {
        k: st[k]
        for k in (
            "id",
            "state",
            "connections",
            "capacity",
            "address",
            "accepted",
            "rejected",
            "workers",
        )
    } == {
        "id": "g1",
        "state": "serving",
        "connections": 3,
        "capacity": 10,
        "address": "gw1.example:9001",
        "accepted": 3,
        "rejected": {"ticket_expired": 1},
        "workers": 1,
    }
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
    return p.parse_args(
        ["gateway", "--id", "g1", "--listen", "127.0.0.1:1", "--status", "127.0.0.1:2", *argv]
    )


def test_config_defaults(tmp_path: Path) -> None:
    cfg = from_args(parse("--no-ticket"))
    assert (
        cfg.capacity,
        cfg.per_ip_limit,
        cfg.heartbeat,
        cfg.idle_timeout,
        cfg.handshake_timeout,
        cfg.drain_window,
        cfg.max_frame,
        cfg.workers,
        cfg.secrets,
    ) == (10_000, 0, 10.0, 30.0, 5.0, 30.0, 65536, 1, None)
    secret = tmp_path / "s"
    secret.write_text("a-secret-of-enough-length\n")
    token = tmp_path / "t"
    token.write_text("report-token\n")
    cfg = from_args(
        parse(
            "--secret-file",
            str(secret),
            "--heartbeat",
            "2",
            "--report-to",
            "http://127.0.0.1:8080/",
            "--report-token-file",
            str(token),
        )
    )
    assert cfg.secrets == (b"a-secret-of-enough-length",) and cfg.idle_timeout == 6.0
    assert cfg.report_to == "http://127.0.0.1:8080" and cfg.report_token == "report-token"


@pytest.mark.parametrize(
    "argv,key",
    [
        ((), "--secret-file"),
        (("--no-ticket", "--capacity", "0"), "--capacity"),
        (("--no-ticket", "--workers", "0"), "--workers"),
        (("--no-ticket", "--idle-timeout", "-1"), "--idle-timeout"),
        (("--no-ticket", "--max-frame", "10"), "--max-frame"),
        (("--no-ticket", "--report-to", "ftp://x"), "--report-to"),
        (("--no-ticket", "--report-to", "http://x"), "--report-token-file"),
        (("--no-ticket", "--agent", "nope"), "--agent"),
        (("--no-ticket", "--http-timeout", "0"), "--http-timeout"),
        (("--no-ticket", "--zone", "a/b"), "--zone"),
    ],
)
def test_config_errors_name_the_flag(argv: tuple[str, ...], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        from_args(parse(*argv))
    assert exc.value.key == key


def test_handler_registry() -> None:
    assert load_handler_class("echo") is EchoHandler
    assert load_handler_class("broadcast") is BroadcastHandler
    assert load_handler_class("tcpdispatch.gateway.handlers:EchoHandler") is EchoHandler
    for bad in (
        "nope",
        "no.such.module:X",
        "tcpdispatch.gateway.handlers:Missing",
        "json:JSONDecoder",
    ):
        with pytest.raises(ConfigError):
            load_handler_class(bad)


@pytest.mark.parametrize("gid", ["a/b", "has space", "x" * 65, "caf\u00e9", ""])
def test_gateway_id_follows_the_dispatchers_rule(gid: str) -> None:
    """One rule for both: what the dispatcher's config refuses, ``gateway --id`` refuses too."""
    from tcpdispatch.config import parse_gateway

    with pytest.raises(ConfigError) as exc:
        parse_gateway({"id": gid, "address": "127.0.0.1:1"})
    assert exc.value.key is not None and exc.value.key.endswith("id")
    args = parse("--no-ticket")
    args.id = gid
    with pytest.raises(ConfigError) as exc:
        from_args(args)
    assert exc.value.key == "--id"


def test_gateway_id_accepts_what_the_dispatcher_accepts() -> None:
    from tcpdispatch.config import parse_gateway

    for gid in ("g1", "eu-west.gw-07", "x" * 64, "a:b@c"):
        assert parse_gateway({"id": gid, "address": "127.0.0.1:1"}).id == gid
        args = parse("--no-ticket")
        args.id = gid
        assert from_args(args).id == gid


# -- the live status port ------------------------------------------------------------------------
async def _started(**cfg: Any) -> StatusService:
    from helpers import free_port

    s = service(**cfg)
    object.__setattr__(s.cfg, "status", ("127.0.0.1", free_port()))
    await s.start()
    return s


async def _http(s: StatusService, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(*s.cfg.status)
    writer.write(raw)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(
        next(
            ln.split(b":")[1]
            for ln in head.split(b"\r\n")
            if ln.lower().startswith(b"content-length")
        )
    )
    body = await reader.readexactly(length)
    writer.close()
    return int(head.split()[1]), body


async def test_post_drain_without_an_admin_token_is_refused_with_how_to_enable_it() -> None:
    s = await _started()
    try:
        status, body = await _http(
            s, b"POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        assert status == 403
        doc = json.loads(body)
        assert (
            doc["error"] == "admin_token_not_configured" and "--admin-token-file" in doc["detail"]
        )
        assert not s.counters.draining
    finally:
        await s.stop()


async def test_post_drain_with_a_token_needs_the_right_bearer() -> None:
    s = await _started(admin_token="gw-admin-token")
    try:
        req = "POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{}\r\n"
        assert (await _http(s, req.format("").encode()))[0] == 401
        assert (await _http(s, req.format("Authorization: Bearer nope\r\n").encode()))[0] == 401
        assert not s.counters.draining
        assert (await _http(s, req.format("Authorization: Bearer gw-admin-token\r\n").encode()))[
            0
        ] == 202
        assert s.counters.draining
    finally:
        await s.stop()


async def test_status_port_cuts_a_request_head_that_trickles_past_the_deadline() -> None:
    """A byte every 0.1 s never completes the head: closed ~0.5 s after connect, not reset by
    bytes."""
    s = await _started(http_timeout=0.5)
    try:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(*s.cfg.status)
        t0 = loop.time()
        head = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200

        async def trickle() -> None:
            for b in head:
                writer.write(bytes([b]))
                await asyncio.sleep(0.1)

        task = asyncio.create_task(trickle())
        assert await asyncio.wait_for(reader.read(), scaled(5)) == b""  # closed without an answer
        took = loop.time() - t0
        task.cancel()
        assert 0.45 < took < 0.5 + scaled(0.5), took
        assert s.deadlines.timeouts == 1
        # an ordinary request on a fresh connection is answered
        status, body = await _http(s, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and json.loads(body)["id"] == "g1"
    finally:
        await s.stop()


async def test_status_keep_alive_connection_survives_between_quick_requests() -> None:
    """The deadline restarts after each answer: a client polling faster than it keeps its
    connection."""
    s = await _started(http_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection(*s.cfg.status)
        for _ in range(4):
            writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(
                next(
                    ln.split(b":")[1]
                    for ln in head.split(b"\r\n")
                    if ln.lower().startswith(b"content-length")
                )
            )
            await reader.readexactly(length)
            await asyncio.sleep(0.2)  # longer than nothing, shorter than the idle allowance
        writer.close()
        assert s.deadlines.timeouts == 0
    finally:
        await s.stop()


async def test_agent_port_answers_at_once_and_reads_nothing() -> None:
    from helpers import free_port

    s = service(capacity=4)
    object.__setattr__(s.cfg, "status", ("127.0.0.1", free_port()))
    object.__setattr__(s.cfg, "agent", ("127.0.0.1", free_port()))
    await s.start()
    try:
        reader, writer = await asyncio.open_connection(*s.cfg.agent)  # type: ignore[misc]
        writer.write(b"x")  # a client that sends (slowly) does not delay or hold the answer
        assert await asyncio.wait_for(reader.read(), scaled(2)) == b"up 100% maxconn:4\n"
        writer.close()
    finally:
        await s.stop()


def test_metrics_carry_build_info_and_the_process_collector() -> None:
    import platform

    from prometheus_client import generate_latest

    from tcpdispatch import __version__
    from tcpdispatch.metrics_common import accelerator

    text = generate_latest(service()._registry).decode()  # type: ignore[arg-type]
    assert (
        f'tcpdispatch_build_info{{accelerator="{accelerator()}",python="{platform.python_version()}",'
        f'version="{__version__}"}} 1.0'
    ) in text
    assert "process_cpu_seconds_total " in text and "process_resident_memory_bytes " in text


def test_zone_is_reported_only_when_set() -> None:
    """``--zone`` goes into /status (and so into pushed heartbeats); without it no field
    (docs/zones.md)."""
    assert from_args(parse("--no-ticket", "--zone", "eu-1")).zone == "eu-1"
    assert service(zone="eu-1").status()["zone"] == "eu-1"
    assert "zone" not in service().status()
