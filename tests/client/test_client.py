"""The asyncio Client against in-test fake gateways and dispatchers."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import async_wait_until, scaled

from tcpdispatch.client import BackoffConfig, Client, EventKind
from tcpdispatch.client.policy import DispatchAnswer
from tcpdispatch.client.session import race
from tcpdispatch.client.sources import fetch_dispatch, load_cache, save_cache
from tcpdispatch.errors import DispatchError, ErrorCode


def answer(primary: Any, *alternates: Any, ticket: str = "t") -> dict[str, Any]:
    """A contract-shaped dispatch answer for fake gateways (see conftest.FakeGateway)."""
    return {
        "gateway": {"id": primary.id, "host": "127.0.0.1", "port": primary.port},
        "ticket": ticket,
        "alternates": [a.json(ticket) for a in alternates],
        "heartbeat_s": 10,
        "retry": {"initial_s": 1.0, "multiplier": 1.6, "jitter": 0.2, "max_s": 120.0},
    }


FAST = BackoffConfig(initial=0.05, multiplier=1.6, jitter=0.2, max=0.5, reset_after=5)


def ok(body: dict[str, Any]) -> Any:
    return lambda n: web.json_response(body)


async def echo(client: Client, payload: bytes) -> None:
    await client.send(payload)
    async with asyncio.timeout(scaled(3)):
        assert await client.receive() == payload


async def test_connects_via_dispatcher_sends_and_reports_state(fakes: Any, tmp_path: Path) -> None:
    g1 = await fakes["gateway"]("g1")
    d = await fakes["dispatcher"](ok(answer(g1)))
    events: list[Any] = []
    client = Client(
        [d.url], client_id="alice", cache_path=tmp_path / "c.json", rng=random.Random(1)
    )
    client.add_listener(events.append)
    await client.connect(timeout=scaled(5))
    try:
        assert client.gateway == "g1" and client.session_id == "g1-s1"
        assert g1.hellos[0].client_id == "alice" and g1.hellos[0].ticket == "t"
        await echo(client, b"hello")
        assert [e.kind for e in events] == [EventKind.CONNECTED]
        assert events[0].source == "dispatcher" and events[0].connect_time < 1
        cached = load_cache(tmp_path / "c.json")
        assert cached is not None and cached.answer.gateway.id == "g1"
    finally:
        await client.close()
    assert events[-1].kind is EventKind.CLOSED
    await async_wait_until(lambda: g1.open_connections == 0, what="BYE closes the connection")


async def test_dispatcher_failover_skips_dead_url(fakes: Any, dead_address: str) -> None:
    g1 = await fakes["gateway"]("g1")
    d = await fakes["dispatcher"](ok(answer(g1)))
    async with Client([f"http://{dead_address}", d.url], rng=random.Random(1)) as client:
        assert client.gateway == "g1"
        assert len(d.requests) == 1
        assert client.dispatcher_memory.banned(f"http://{dead_address}")


async def test_slow_dispatcher_is_skipped(fakes: Any) -> None:
    g1 = await fakes["gateway"]("g1")
    slow_gate = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await slow_gate.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v1/dispatch", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    slow_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    d = await fakes["dispatcher"](ok(answer(g1)))
    t0 = time.monotonic()
    client = Client([slow_url, d.url], dispatch_timeout=0.3, rng=random.Random(1))
    try:
        await client.connect(timeout=scaled(5))
        assert client.gateway == "g1" and time.monotonic() - t0 < scaled(2)
    finally:
        slow_gate.set()
        await client.close()
        await runner.cleanup()


async def test_all_dispatchers_dead_uses_cache_then_static(
    fakes: Any,
    tmp_path: Path,
    dead_address: str,
) -> None:
    g1 = await fakes["gateway"]("g1")
    g2 = await fakes["gateway"]("g2")
    cache = tmp_path / "cache.json"
    save_cache(
        cache, DispatchAnswer.from_json(answer(g1, ticket="cached-ticket")), time.time() - 120
    )
    events: list[Any] = []
    async with Client(
        [f"http://{dead_address}"], fallback=[g2.address], cache_path=cache, rng=random.Random(1)
    ) as client:
        client.add_listener(events.append)
        assert client.gateway == "g1"
        assert g1.hellos[-1].ticket == "cached-ticket" and not g2.hellos
    # An expired cached ticket is refused by the gateway -> the static list wins.
    g1.refuse = ErrorCode.TICKET_EXPIRED
    seen: list[Any] = []
    async with Client(
        [f"http://{dead_address}"],
        fallback=[g2.address],
        cache_path=cache,
        rng=random.Random(1),
        on_connected=seen.append,
    ) as client:
        assert client.gateway == g2.address and g2.hellos[-1].ticket == ""
        assert seen[0].source == "static"
        assert client.stats.attempt_errors == {"ticket_expired": 1}


async def test_no_cache_uses_static_list(fakes: Any, tmp_path: Path, dead_address: str) -> None:
    g2 = await fakes["gateway"]("g2")
    async with Client(
        [f"http://{dead_address}"], fallback=[g2.address], cache_path=tmp_path / "missing.json"
    ) as client:
        assert client.gateway == g2.address
        await echo(client, b"x")


async def test_static_only_mode_is_random_with_failover(fakes: Any, dead_address: str) -> None:
    gws = [await fakes["gateway"](f"g{i}") for i in range(3)]
    fallback = [g.address for g in gws] + [dead_address]
    picked = []
    for seed in range(12):
        async with Client(fallback=fallback, rng=random.Random(seed), stagger=0.05) as client:
            picked.append(client.gateway_address)
    assert set(picked) == {g.address for g in gws}  # random spread, the dead one never wins


async def test_race_black_holed_primary_loses_to_alternate(fakes: Any, blackhole: str) -> None:
    g2 = await fakes["gateway"]("g2")
    host, port = blackhole.rsplit(":", 1)
    body = answer(g2)
    body["alternates"] = [dict(body["gateway"], ticket="t")]
    body["gateway"] = {"id": "hole", "host": host, "port": int(port)}
    d = await fakes["dispatcher"](ok(body))
    t0 = time.monotonic()
    async with Client([d.url], handshake_timeout=5) as client:
        elapsed = time.monotonic() - t0
        assert client.gateway == "g2"
        assert 0.2 <= elapsed < scaled(1.0)


async def test_overloaded_primary_falls_through_to_alternate(fakes: Any) -> None:
    g1 = await fakes["gateway"]("g1", refuse=ErrorCode.OVERLOADED)
    g2 = await fakes["gateway"]("g2")
    d = await fakes["dispatcher"](ok(answer(g1, g2)))
    async with Client([d.url]) as client:
        assert client.gateway == "g2"
        assert client.stats.attempt_errors == {"overloaded": 1}
        assert client.gateway_memory.banned(g1.address)


async def test_killed_gateway_reconnects_elsewhere_and_flushes_queue(fakes: Any) -> None:
    g1 = await fakes["gateway"]("g1")
    g2 = await fakes["gateway"]("g2")
    d = await fakes["dispatcher"](
        lambda n: web.json_response(answer(g1, g2) if n == 1 else answer(g2))
    )
    changes: list[Any] = []
    client = Client([d.url], on_gateway_changed=changes.append)
    await client.connect(timeout=scaled(5))
    try:
        assert client.gateway == "g1"
        t0 = time.monotonic()
        await g1.kill()
        await async_wait_until(lambda: not client.connected, timeout=2, what="loss noticed")
        await client.send(b"queued-1")  # sent while reconnecting: queued, not lost
        await client.send(b"queued-2")
        await async_wait_until(lambda: client.gateway == "g2", timeout=2, what="reconnect to g2")
        assert time.monotonic() - t0 < scaled(2)
        async with asyncio.timeout(scaled(2)):
            assert [await client.receive(), await client.receive()] == [b"queued-1", b"queued-2"]
        assert g2.received == [b"queued-1", b"queued-2"]
        await echo(client, b"after")
        assert changes and changes[0].previous == "g1" and changes[0].gateway == "g2"
    finally:
        await client.close()


async def test_reconnect_frame_followed_after_its_delay(fakes: Any) -> None:
    g1 = await fakes["gateway"]("g1")
    g2 = await fakes["gateway"]("g2")
    d = await fakes["dispatcher"](lambda n: web.json_response(answer(g1) if n == 1 else answer(g2)))
    client = Client([d.url], backoff=BackoffConfig(reset_after=0))
    await client.connect(timeout=scaled(5))
    try:
        t0 = time.monotonic()
        g1.reconnect_all(400)
        await async_wait_until(lambda: len(d.requests) == 2, timeout=3, what="second dispatch")
        assert d.requests[1] - t0 >= 0.39  # the delay hint is honoured
        # While moving, the old session still carries data (it is only draining).
        await async_wait_until(lambda: client.gateway == "g2", timeout=3, what="moved to g2")
        await echo(client, b"on g2")
        await async_wait_until(lambda: g1.open_connections == 0, what="old session closed with BYE")
    finally:
        await client.close()


@pytest.mark.parametrize("reason, leaving", [("rebalance", "g1"), ("drain", None)])
async def test_rebalance_reconnect_names_the_gateway_left(
    fakes: Any, reason: str, leaving: str | None
) -> None:
    g1 = await fakes["gateway"]("g1")
    g2 = await fakes["gateway"]("g2")
    d = await fakes["dispatcher"](lambda n: web.json_response(answer(g1) if n == 1 else answer(g2)))
    client = Client([d.url], backoff=BackoffConfig(reset_after=0))
    await client.connect(timeout=scaled(5))
    try:
        assert d.queries[0] == {"client_id": client.client_id}
        g1.reconnect_all(0, reason)
        await async_wait_until(lambda: client.gateway == "g2", timeout=3, what="moved to g2")
        expected = {"client_id": client.client_id}
        if leaving:
            expected.update(leaving=leaving, reason="rebalance")
        assert d.queries[1] == expected
        await echo(client, b"moved")
        # the move is done: later dispatches are plain again
        g2.reconnect_all(0, "drain")
        await async_wait_until(lambda: len(d.queries) == 3, timeout=3, what="third dispatch")
        assert d.queries[2] == {"client_id": client.client_id}
    finally:
        await client.close()


@pytest.mark.parametrize("linger, delivered", [(1.0, True), (0.0, False)])
async def test_old_session_lingers_so_replies_in_flight_arrive(
    fakes: Any, linger: float, delivered: bool
) -> None:
    g1 = await fakes["gateway"]("g1")
    g2 = await fakes["gateway"]("g2")
    d = await fakes["dispatcher"](lambda n: web.json_response(answer(g1) if n == 1 else answer(g2)))
    client = Client([d.url], backoff=BackoffConfig(reset_after=0), linger=linger)
    await client.connect(timeout=scaled(5))
    try:
        g1.echo_gate = asyncio.Event()  # the reply leaves g1 only once the client has moved
        await client.send(b"late reply")
        await async_wait_until(lambda: g1.received, timeout=2, what="g1 got the message")
        g1.reconnect_all(0, "rebalance")
        await async_wait_until(lambda: client.gateway == "g2", timeout=3, what="moved to g2")
        if not delivered:  # no linger: the old session is gone before the reply is written
            await async_wait_until(
                lambda: g1.open_connections == 0, timeout=3, what="old session closed"
            )
        g1.echo_gate.set()
        try:
            async with asyncio.timeout(1.5):
                got = await client.receive()
        except TimeoutError:
            got = None
        assert (got == b"late reply") is delivered
        await async_wait_until(
            lambda: g1.open_connections == 0, what="old session closed after lingering"
        )
    finally:
        await client.close()


async def test_retry_after_is_honoured(fakes: Any) -> None:
    g1 = await fakes["gateway"]("g1")

    def respond(n: int) -> web.Response:
        if n == 1:
            return web.json_response(
                {"error": "no_gateway_available", "retry_after_s": 1},
                status=503,
                headers={"Retry-After": "1"},
            )
        return web.json_response(answer(g1))

    d = await fakes["dispatcher"](respond)
    async with Client([d.url], backoff=FAST) as client:
        assert client.gateway == "g1"
        assert len(d.requests) == 2
        assert d.requests[1] - d.requests[0] >= 1.0


async def test_dispatcher_outage_requests_are_bounded(fakes: Any) -> None:
    d = await fakes["dispatcher"](lambda n: web.json_response({"error": "x"}, status=500))
    client = Client(
        [d.url],
        backoff=BackoffConfig(initial=0.1, multiplier=2, jitter=0.2, max=10),
        rng=random.Random(2),
    )
    with pytest.raises(DispatchError):
        await client.connect(timeout=2.0)
    await client.close()
    # Dispatcher ban (1, 2 s...) and backoff (0.1, 0.2, 0.4, 0.8 s...) both grow:
    # a tight loop would have sent hundreds of requests in 2 s.
    assert 2 <= len(d.requests) <= 5
    gaps = [b - a for a, b in zip(d.requests, d.requests[1:])]
    assert all(g >= 0.5 for g in gaps)


async def test_missing_pongs_mean_dead(fakes: Any) -> None:
    g1 = await fakes["gateway"]("g1", heartbeat_ms=100, answer_pings=False)
    g2 = await fakes["gateway"]("g2", heartbeat_ms=100)
    d = await fakes["dispatcher"](lambda n: web.json_response(answer(g1) if n == 1 else answer(g2)))
    reasons: list[str] = []
    async with Client([d.url], backoff=FAST) as client:
        client.add_listener(
            lambda e: reasons.append(e.reason) if e.kind is EventKind.DISCONNECTED else None
        )
        await async_wait_until(lambda: client.gateway == "g2", timeout=3, what="heartbeat failover")
        assert reasons == ["heartbeat"]


async def test_failed_gateway_is_reported_to_dispatcher(fakes: Any, dead_address: str) -> None:
    g2 = await fakes["gateway"]("g2")
    host, port = dead_address.rsplit(":", 1)
    body = answer(g2)
    body["alternates"] = [dict(body["gateway"], ticket="t")]
    body["gateway"] = {"id": "gdead", "host": host, "port": int(port)}
    d = await fakes["dispatcher"](ok(body))
    async with Client([d.url]) as client:
        assert client.gateway == "g2"
        await async_wait_until(lambda: d.reports, timeout=2, what="passive report")
        assert d.reports[0]["gateway_id"] == "gdead"


async def test_race_keeps_at_most_three_in_flight_and_staggers() -> None:
    starts: list[tuple[int, float]] = []
    running = 0
    peak = 0
    t0 = time.monotonic()

    async def attempt(i: int) -> int:
        nonlocal running, peak
        starts.append((i, time.monotonic() - t0))
        running += 1
        peak = max(peak, running)
        try:
            if i == 4:
                return i
            await asyncio.sleep(0.4)
            raise OSError("timed out")
        finally:
            running -= 1

    result = await race(list(range(6)), attempt, stagger=0.05, max_in_flight=3)
    assert peak == 3 and result.winner == (4, 4)
    # 0, 1, 2 staggered by ~50 ms; 3 waited for a free slot (0 failing at ~0.4 s).
    assert [s[0] for s in starts] == [0, 1, 2, 3, 4]
    assert starts[1][1] >= 0.045 and starts[2][1] - starts[1][1] >= 0.045
    assert starts[3][1] >= 0.39

    async def failing_then_win(i: int) -> int:
        if i < 3:
            raise OSError("refused")
        return i

    t0 = time.monotonic()
    res = await race(list(range(5)), failing_then_win, stagger=1.0)
    assert res.winner == (3, 3) and len(res.failures) == 3
    assert time.monotonic() - t0 < scaled(0.5)  # failures start the next attempt at once


async def test_cache_file_is_json_with_age(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.json"
    a = DispatchAnswer.from_json({"gateway": {"id": "g", "host": "h", "port": 1}, "ticket": "T"})
    save_cache(path, a, 1000.0)
    obj = json.loads(path.read_text())
    assert obj["saved_at"] == 1000.0 and obj["answer"]["ticket"] == "T"
    cached = load_cache(path)
    assert (
        cached is not None
        and cached.age(1060.0) == 60.0
        and cached.answer.gateway.source == "cache"
    )
    path.write_text("{not json")
    assert load_cache(path) is None


async def test_stagger_adapts_to_slow_handshakes() -> None:
    client = Client(fallback=["127.0.0.1:1"], stagger=0.25)
    assert client.current_stagger() == 0.25
    client._handshake_avg = 0.01  # fast gateways: the 250 ms floor
    assert client.current_stagger() == 0.25
    client._handshake_avg = 0.6  # a storm: wait for twice the usual handshake
    assert client.current_stagger() == pytest.approx(1.2)
    client._handshake_avg = 30.0
    assert client.current_stagger() == 2.0


async def test_zone_option_is_sent_as_the_hint(fakes: Any) -> None:
    g1 = await fakes["gateway"]("g1")
    d = await fakes["dispatcher"](lambda n: web.json_response(answer(g1)))
    client = Client([d.url], zone="eu-1")
    await client.connect(timeout=scaled(5))
    try:
        assert d.queries[0] == {"client_id": client.client_id, "zone": "eu-1"}
    finally:
        await client.close()
    with pytest.raises(ValueError, match="zone"):
        Client([d.url], zone="has space")


async def test_a_400_answer_says_why(fakes: Any) -> None:
    d = await fakes["dispatcher"](
        lambda n: web.json_response(
            {
                "error": "bad_request",
                "detail": "unknown zone 'mars'; this dispatcher's zones are: a",
            },
            status=400,
        )
    )
    async with aiohttp.ClientSession() as http:
        res = await fetch_dispatch(http, d.url, "c1", 2.0, zone="mars")
    assert res.kind == "http_400" and res.error is not None and "unknown zone 'mars'" in res.error
