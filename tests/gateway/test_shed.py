"""Shedding: the oldest sessions past the minimum age get RECONNECT("rebalance"), spread over
the window; POST /shed needs the admin token and validates its body."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from gateway.test_server import make, opened
from helpers import async_wait_until, free_port, scaled

from tcpdispatch.gateway.config import GatewayConfig
from tcpdispatch.gateway.shed import AgeIndex, split_by_worker
from tcpdispatch.gateway.shed_api import parse_order
from tcpdispatch.gateway.shm import NodeCounters
from tcpdispatch.gateway.status import StatusService
from tcpdispatch.protocol import Reconnect


def test_age_index_cutoff() -> None:
    now = [100.0]
    ages = AgeIndex(lambda: now[0])
    ages.record(5)  # at 100: sessions 1..5 admitted
    now[0] = 101.0
    ages.record(9)
    now[0] = 103.0
    ages.record(12)
    assert ages.cutoff(0) > 10**9  # no minimum: everyone
    assert ages.cutoff(2.5) == 5  # admitted by t=100.5
    assert ages.cutoff(2.0) == 9
    assert ages.cutoff(10.0) == 0  # nobody is that old


def test_split_by_worker() -> None:
    assert split_by_worker(10, [30, 10, 0]) == [8, 2, 0]
    assert split_by_worker(100, [3, 2]) == [3, 2]  # never more than they hold
    assert split_by_worker(5, [0, 0]) == [0, 0]


def test_counters_carry_shed_orders_between_processes() -> None:
    c = NodeCounters(2)
    c.post_shed(1, 7, 2.0, 30.0)
    c.post_shed(1, 3, 2.0, 30.0)
    c.bind_worker(1)
    assert c.take_shed() == (10, 2.0, 30.0)
    assert c.take_shed() is None
    c.add_shed(4)
    assert c.snapshot().shed == 4


@pytest.mark.parametrize(
    "body, problem",
    [
        (b"{", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"count": 0}', "count"),
        (b'{"count": true}', "count"),
        (b'{"count": 5, "window_s": -1}', "window_s"),
        (b'{"count": 5, "min_age_s": "x"}', "min_age_s"),
        (b'{"count": 5, "extra": 1}', "unknown field"),
        (b'{"count": 5, "reason": 7}', "reason"),
    ],
)
def test_parse_order_rejects_bad_bodies(body: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_order(body)
    assert parse_order(b'{"count": 5}') == (5, 1.0, 0.0, "")


async def test_shed_picks_oldest_past_min_age_and_spreads() -> None:
    now = [0.0]
    gw = make({"clock": lambda: now[0]})
    old = [opened(gw, f"old{i}") for i in range(6)]
    gw.sweep()  # records: sessions 1..6 admitted by t=0
    now[0] = 10.0
    young = [opened(gw, f"young{i}") for i in range(4)]
    gw.sweep()
    loop = asyncio.get_running_loop()
    now[0] = 10.0
    # only the 6 old ones qualify for min age 5 s; ask for 4
    chosen = gw.shed(4, 0.0, 5.0)
    assert chosen == 4
    await async_wait_until(lambda: gw.shedding == 0, timeout=1, interval=0.005, what="orders sent")
    got = [t for t in old + young if t.frames]
    assert got == old[:4]  # the oldest first
    assert all(
        isinstance(t.frames[0], Reconnect) and t.frames[0].reason == "rebalance" for t in got
    )
    assert gw.counters.snapshot().shed == 4
    assert gw.counters.snapshot().leaving == 4  # until they close
    got[0].close()
    await async_wait_until(
        lambda: gw.counters.snapshot().leaving == 3,
        timeout=1,
        interval=0.005,
        what="a moved session closed",
    )
    # already asked: not asked again; asking for 10 more finds the 2 old ones left (one closed)
    assert gw.shed(10, 0.0, 5.0) == 2
    await async_wait_until(lambda: gw.shedding == 0, timeout=1, interval=0.005, what="orders sent")
    assert gw.counters.snapshot().leaving == 5
    assert not any(t.frames for t in young)
    assert gw.shed(10, 0.0, 5.0) == 0
    # spread over a window in real time: the last one goes out near the end
    real = make()
    ts = [opened(real, f"c{i}") for i in range(5)]
    t0 = loop.time()
    assert real.shed(5, 0.4, 0.0) == 5
    await async_wait_until(
        lambda: all(t.frames for t in ts), timeout=2, interval=0.005, what="all sent"
    )
    assert 0.25 < loop.time() - t0 < scaled(1.0)


async def test_overlapping_orders_do_not_pick_the_same_sessions() -> None:
    gw = make()
    ts = [opened(gw, f"c{i}") for i in range(6)]
    assert gw.shed(3, 0.3, 0.0) == 3
    assert gw.shed(3, 0.3, 0.0) == 3  # within the first window: the next three
    await async_wait_until(
        lambda: all(t.frames for t in ts), timeout=2, interval=0.005, what="all sent"
    )
    assert all(len(t.frames) == 1 for t in ts) and gw.counters.snapshot().shed == 6
    assert gw.shed(3, 0.3, 0.0) == 0


async def test_shed_refused_while_draining() -> None:
    gw = make(drain_window=5)
    opened(gw)
    gw.drain()
    assert gw.shed(1, 0.0, 0.0) == 0


async def _post(port: int, body: Any, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"http://127.0.0.1:{port}/shed",
            data=body if isinstance(body, bytes) else json.dumps(body),
            headers=headers,
        ) as r,
    ):
        return r.status, await r.json(content_type=None)


@pytest.mark.parametrize("token", ["s3cret-token", None])
async def test_post_shed_auth_and_status_counts(token: str | None) -> None:
    port = free_port()
    cfg = GatewayConfig(
        id="g1", listen=("127.0.0.1", 1), status=("127.0.0.1", port), admin_token=token
    )
    counters = NodeCounters(1)
    calls: list[tuple[int, float, float]] = []

    def shed(n: int, w: float, a: float) -> int:
        calls.append((n, w, a))
        counters.add_shed(min(n, 3))
        return min(n, 3)

    svc = StatusService(cfg, counters, on_drain=counters.set_draining, pids=list, on_shed=shed)
    await svc.start()
    try:
        order = {"count": 5, "window_s": 2, "min_age_s": 30, "reason": "rebalance round 1"}
        if token is None:
            status, doc = await _post(port, order, "anything")
            assert status == 403 and "--admin-token-file" in doc["detail"] and not calls
            return
        assert (await _post(port, order, None))[0] == 401
        assert (await _post(port, order, "wrong-token"))[0] == 401
        status, doc = await _post(port, {"count": -1}, token)
        assert status == 400 and "count" in doc["detail"]
        assert (await _post(port, b"x" * 5000, token))[0] == 413
        assert not calls
        status, doc = await _post(port, order, token)
        assert status == 202 and doc["shedding"] == 3 and calls == [(5, 2.0, 30.0)]
        assert svc.status()["shed"] == 3
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
        assert 'tcpdispatch_gateway_shed_sessions_total{gateway="g1"} 3.0' in text
        counters.set_draining()
        assert (await _post(port, order, token))[0] == 409
    finally:
        await svc.stop()
