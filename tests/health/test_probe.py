"""probe() against real sockets on loopback: http, agent and tcp checks, good and bad peers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from helpers import scaled

from tcpdispatch.health import CheckSpec, parse_check, probe

TIMEOUT = 0.3


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def timed(spec: CheckSpec, timeout: float, session: aiohttp.ClientSession | None = None):  # type: ignore[no-untyped-def]
    start = time.monotonic()
    result = await probe(spec, timeout, session)
    return result, time.monotonic() - start


# ---------------------------------------------------------------- http


async def test_http_ok_maps_the_status_document(status_server, session) -> None:  # type: ignore[no-untyped-def]
    server = await status_server()
    result = await probe(parse_check(server.url), 2.0, session)
    assert result.ok, result.detail
    assert (result.connections, result.capacity, result.utilization) == (12, 100, 0.25)
    assert result.address == "127.0.0.1:9001" and not result.draining
    assert 0 < result.latency_s < 2.0


async def test_http_draining_is_ok_and_draining(status_server, session) -> None:  # type: ignore[no-untyped-def]
    server = await status_server()
    server.doc["state"] = "draining"
    result = await probe(parse_check(server.url), 2.0, session)
    assert result.ok and result.draining


async def test_http_reuses_one_keep_alive_connection(status_server, session) -> None:  # type: ignore[no-untyped-def]
    server = await status_server()
    peers = set()
    spec = parse_check(server.url)
    for _ in range(5):
        assert (await probe(spec, 2.0, session)).ok
    # aiohttp's connector keeps one idle connection for this host.
    for conns in session.connector._conns.values():  # type: ignore[union-attr]
        peers.update(id(proto) for proto, _t in conns)
    assert server.hits == 5
    assert len(peers) == 1


@pytest.mark.parametrize(("mode", "detail"), [("500", "HTTP 500"), ("badjson", "bad status JSON")])
async def test_http_bad_answers_are_not_ok(status_server, session, mode: str, detail: str) -> None:  # type: ignore[no-untyped-def]
    server = await status_server()
    server.mode = mode
    result = await probe(parse_check(server.url), 2.0, session)
    assert not result.ok and detail in result.detail


async def test_http_bad_document_is_not_ok(status_server, session) -> None:  # type: ignore[no-untyped-def]
    server = await status_server()
    server.doc["connections"] = "many"
    result = await probe(parse_check(server.url), 2.0, session)
    assert not result.ok and "connections" in result.detail


async def test_http_without_a_session(status_server) -> None:  # type: ignore[no-untyped-def]
    server = await status_server()
    assert (await probe(parse_check(server.url), 2.0)).ok


async def test_http_refused_fails_fast(refused_port: int, session) -> None:  # type: ignore[no-untyped-def]
    result, elapsed = await timed(
        parse_check(f"http://127.0.0.1:{refused_port}/status"), 2.0, session
    )
    assert not result.ok and result.detail
    assert elapsed < scaled(0.5)


async def test_http_silent_listener_times_out(silent_port: int, session) -> None:  # type: ignore[no-untyped-def]
    """The kernel accepts (like a SIGSTOPped gateway's backlog) but nothing answers."""
    result, elapsed = await timed(
        parse_check(f"http://127.0.0.1:{silent_port}/status"), TIMEOUT, session
    )
    assert not result.ok and "timeout" in result.detail
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + scaled(0.3)


async def test_http_hang_on_a_kept_alive_connection_times_out(status_server, session) -> None:  # type: ignore[no-untyped-def]
    server = await status_server()
    spec = parse_check(server.url)
    assert (await probe(spec, 2.0, session)).ok
    server.mode = "hang"
    result, elapsed = await timed(spec, TIMEOUT, session)
    assert not result.ok and "timeout" in result.detail
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + scaled(0.3)
    server.release.set()
    server.mode = "ok"
    assert (await probe(spec, 2.0, session)).ok  # the session is still usable


async def test_http_slow_answer_within_timeout_is_ok(status_server, session) -> None:  # type: ignore[no-untyped-def]
    server = await status_server()
    server.mode, server.delay = "slow", 0.1
    result = await probe(parse_check(server.url), 1.0, session)
    assert result.ok and result.latency_s >= 0.09


async def test_http_oversized_body_is_not_ok(session) -> None:  # type: ignore[no-untyped-def]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b"[" + b"0," * 40_000 + b"0]"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(body)
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await probe(parse_check(f"http://127.0.0.1:{port}/status"), 2.0, session)
    finally:
        server.close()
        await server.wait_closed()
    assert not result.ok and "bytes" in result.detail


# ---------------------------------------------------------------- agent


@pytest.mark.parametrize(
    ("reply", "ok", "draining", "weight_pct", "capacity"),
    [
        (b"up 75% maxconn:30\n", True, False, 75, 30),
        (b"drain\n", True, True, None, None),
        (b"down#maintenance\n", False, False, None, None),
        (b"up 40%", True, False, 40, None),  # no newline, then EOF
        (b"up 10%\r\nignored second line\n", True, False, 10, None),
        (b"", False, False, None, None),  # immediate close
        (b"\xff\xfe up\n", True, False, None, None),  # undecodable bytes are ignored
    ],
)
async def test_agent_replies(
    agent_server, reply: bytes, ok: bool, draining: bool, weight_pct, capacity
) -> None:  # type: ignore[no-untyped-def]
    port = await agent_server(reply)
    result = await probe(parse_check(f"agent://127.0.0.1:{port}"), 2.0)
    assert (result.ok, result.draining, result.weight_pct, result.capacity) == (
        ok,
        draining,
        weight_pct,
        capacity,
    )
    if not ok:
        assert result.detail


async def test_agent_endless_reply_is_bounded(agent_server) -> None:  # type: ignore[no-untyped-def]
    port = await agent_server(b"x" * 100_000)
    result, elapsed = await timed(parse_check(f"agent://127.0.0.1:{port}"), 2.0)
    assert not result.ok
    assert len(result.detail) < 2000
    assert elapsed < scaled(1.0)


async def test_agent_silent_times_out(agent_server) -> None:  # type: ignore[no-untyped-def]
    port = await agent_server(None)
    result, elapsed = await timed(parse_check(f"agent://127.0.0.1:{port}"), TIMEOUT)
    assert not result.ok and "timeout" in result.detail
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + scaled(0.3)


async def test_agent_refused(refused_port: int) -> None:
    result, elapsed = await timed(parse_check(f"agent://127.0.0.1:{refused_port}"), 2.0)
    assert not result.ok and elapsed < scaled(0.5)


# ---------------------------------------------------------------- tcp


async def test_tcp_ok_refused_and_the_hung_process_blind_spot(
    agent_server, refused_port: int, silent_port: int
) -> None:  # type: ignore[no-untyped-def]
    port = await agent_server(None)
    assert (await probe(parse_check(f"tcp://127.0.0.1:{port}"), 2.0)).ok
    refused, elapsed = await timed(parse_check(f"tcp://127.0.0.1:{refused_port}"), 2.0)
    assert not refused.ok and "refused" in refused.detail.lower() and elapsed < scaled(0.5)
    # A process that never accepts still has its kernel complete the handshake:
    # tcp checks cannot see a hung gateway (docs/health.md says so).
    assert (await probe(parse_check(f"tcp://127.0.0.1:{silent_port}"), TIMEOUT)).ok


async def test_unresolvable_host_is_not_ok() -> None:
    result = await probe(CheckSpec("tcp", host="no-such-host.invalid", port=1), 2.0)
    assert not result.ok and result.detail


async def test_push_and_unknown_kinds_are_not_probed() -> None:
    with pytest.raises(ValueError, match="push"):
        await probe(parse_check("push"), 1.0)
    with pytest.raises(ValueError, match="kind"):
        await probe(CheckSpec("udp", host="h", port=1), 1.0)
