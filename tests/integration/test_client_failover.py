"""The client SDK against real gateway and dispatcher processes on loopback."""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from harness import GatewayHandle, start_dispatcher, start_gateway
from helpers import async_wait_until, scaled

from tcpdispatch.client import BackoffConfig, Client, EventKind
from tcpdispatch.errors import DispatchError
from tcpdispatch.tickets import TicketSigner, load_secrets

pytestmark = pytest.mark.integration


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def echo(client: Client, payload: bytes) -> None:
    await client.send(payload)
    async with asyncio.timeout(scaled(5)):
        assert await client.receive() == payload


@pytest.fixture
def system(procs: Any, secret_file: Path, tmp_path: Path) -> tuple[list[GatewayHandle], Any]:
    """Three ticket-checking gateways (heartbeat 1 s) and a dispatcher over them."""
    gws = [
        start_gateway(procs, f"g{i}", "--heartbeat", "1", secret_file=secret_file)
        for i in (1, 2, 3)
    ]
    return gws, start_dispatcher(procs, tmp_path, gws, secret_file)


async def test_dispatcher_failover_then_cache_then_static(
    system: Any,
    procs: Any,
    tmp_path: Path,
) -> None:
    _gws, disp = system
    static = start_gateway(procs, "static1")  # --no-ticket: the direct IP list
    cache = tmp_path / "dispatch.json"
    # 1. The first dispatcher URL is dead: the second one answers.
    async with Client(
        [dead_url(), disp.url], [static.address], client_id="c1", cache_path=cache
    ) as c:
        assert c.gateway in {"g1", "g2", "g3"}
        await echo(c, b"via dispatcher")
    assert cache.exists()
    # 2. Every dispatcher is dead: the cached answer is raced. Its ticket was used once
    # already (a gateway admits a nonce once), so an alternate in the same answer wins.
    disp.proc.signal(signal.SIGKILL)
    sources: list[str] = []
    async with Client(
        [dead_url(), disp.url],
        [static.address],
        client_id="c1",
        cache_path=cache,
        on_connected=lambda e: sources.append(e.source),
    ) as c:
        assert sources == ["cache"] and c.gateway in {"g1", "g2", "g3"}
        await echo(c, b"via cache")
    # 3. No cache: the static list.
    cache.unlink()
    async with Client(
        [disp.url],
        [static.address],
        client_id="c1",
        cache_path=cache,
        on_connected=lambda e: sources.append(e.source),
    ) as c:
        assert sources[-1] == "static" and c.gateway == static.address
        await echo(c, b"via static list")


async def test_static_only_random_mode_with_failover(procs: Any) -> None:
    gws = [start_gateway(procs, f"s{i}") for i in range(3)]
    gws[0].proc.signal(signal.SIGKILL)
    gws[0].proc.popen.wait(10)
    fallback = [g.address for g in gws]
    seen = []
    for seed in range(10):
        async with Client(fallback=fallback, rng=random.Random(seed), stagger=0.1) as c:
            seen.append(c.gateway)
            await echo(c, b"x")
    assert set(seen) == {gws[1].address, gws[2].address}


async def test_race_black_holed_gateway_loses_to_alternate(
    procs: Any,
    secret_file: Path,
) -> None:
    hole, good = (start_gateway(procs, gid, secret_file=secret_file) for gid in ("hole", "good"))
    hole.signal(signal.SIGSTOP)  # its kernel still completes TCP handshakes; nothing answers
    ticket = TicketSigner(load_secrets(secret_file)[0]).issue(["hole", "good"], "racer")
    body = {
        "gateway": {"id": "hole", "host": "127.0.0.1", "port": hole.port},
        "ticket": ticket,
        "alternates": [{"id": "good", "host": "127.0.0.1", "port": good.port, "ticket": ticket}],
    }

    async def dispatch(request: web.Request) -> web.Response:
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/v1/dispatch", dispatch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        t0 = time.monotonic()
        async with Client([url], client_id="racer") as c:
            assert c.gateway == "good"
            assert time.monotonic() - t0 < scaled(1.0)
            await echo(c, b"raced")
    finally:
        hole.signal(signal.SIGCONT)
        await runner.cleanup()


async def test_killed_gateway_client_reconnects_within_2s(system: Any) -> None:
    gws, disp = system
    async with Client([disp.url], client_id="survivor") as c:
        first = c.gateway
        victim = next(g for g in gws if g.id == first)
        t0 = time.monotonic()
        victim.signal(signal.SIGKILL)
        await async_wait_until(
            lambda: c.gateway not in (None, first), timeout=2, what="reconnected elsewhere"
        )
        assert time.monotonic() - t0 < scaled(2.0)
        await echo(c, b"still here")


async def test_reconnect_frame_is_followed(
    procs: Any,
    secret_file: Path,
    tmp_path: Path,
    admin_token_file: Path,
) -> None:
    gws = [
        start_gateway(
            procs,
            f"d{i}",
            "--drain-window",
            "1",
            secret_file=secret_file,
            admin_token_file=admin_token_file,
        )
        for i in (1, 2)
    ]
    disp = start_dispatcher(procs, tmp_path, gws, secret_file)
    events: list[Any] = []
    async with Client([disp.url], client_id="mover") as c:
        c.add_listener(events.append)
        first = c.gateway
        victim = next(g for g in gws if g.id == first)
        victim.drain()
        # The drain window is 1 s; allow for a slow, shared machine.
        await async_wait_until(
            lambda: c.gateway not in (None, first), timeout=10, what="moved after RECONNECT"
        )
        await echo(c, b"moved")
        assert any(
            e.kind is EventKind.RECONNECTING and e.reason.startswith("reconnect") for e in events
        )
        assert not any(e.kind is EventKind.DISCONNECTED for e in events)  # moved without a gap
        assert victim.proc.popen.wait(scaled(10)) is not None  # the drained gateway exits


async def test_503_retry_after_is_honoured_by_real_dispatcher(
    procs: Any,
    secret_file: Path,
    tmp_path: Path,
) -> None:
    gw = start_gateway(procs, "full", "--capacity", "1", secret_file=secret_file)
    disp = start_dispatcher(
        procs, tmp_path, [gw], secret_file, extra_toml="retry_after_min = 2\nretry_after_max = 2"
    )
    async with Client([disp.url], client_id="first") as first:
        assert first.gateway == "full"
        await async_wait_until(
            lambda: disp.gateways()["full"]["connections"] >= 1,
            timeout=5,
            what="dispatcher sees the gateway full",
        )
        delays: list[float] = []
        second = Client(
            [disp.url],
            client_id="second",
            backoff=BackoffConfig(initial=0.05, max=0.1),
            on_reconnecting=lambda e: delays.append(e.delay or 0),
        )
        with pytest.raises(DispatchError):
            await second.connect(timeout=scaled(3.0))
        await second.close()
        # Retry-After: 2 -> at most two requests in 3 s, each retry at least 2 s later.
        assert 1 <= second.stats.dispatch_requests <= 2
        assert delays and min(delays) >= 2.0


async def test_dispatcher_outage_is_not_a_tight_loop(system: Any) -> None:
    _gws, disp = system
    disp.proc.signal(signal.SIGKILL)
    disp.proc.popen.wait(10)
    c = Client([disp.url, dead_url()], client_id="patient", rng=random.Random(4))
    with pytest.raises(DispatchError):
        await c.connect(timeout=3.0)
    await c.close()
    # Two dead dispatchers for 3 s: each is banned 1 s, then 2 s; backoff 1, 1.6 s.
    assert c.stats.dispatch_requests <= 6
    assert c.stats.failed_rounds <= 3
