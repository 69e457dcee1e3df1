"""RedisStore against a real redis-server: seeding, propagation, heartbeat relay, outage and
return."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from helpers import async_wait_until, scaled
from store.redis_server import RedisServer

from tcpdispatch.config import GatewayEntry, StoreConfig
from tcpdispatch.store import SharedGateway, StoreHooks, StoreUnavailable
from tcpdispatch.store.redis_store import RedisStore


def _gw(gid: str, weight: float = 1.0, check: str | None = None) -> GatewayEntry:
    port = 9000 + int(gid[1:])
    return GatewayEntry(gid, "127.0.0.1", port, check or f"tcp://127.0.0.1:{port}", weight)


class Replica:
    """The part of a dispatcher a store talks to: its admin state and received heartbeats."""

    def __init__(self, *ids: str) -> None:
        self.state = {g: SharedGateway(_gw(g), "config") for g in ids}
        self.heartbeats: list[tuple[str, dict[str, Any]]] = []
        self.applied = 0

    def hooks(self) -> StoreHooks:
        return StoreHooks(
            snapshot=lambda: list(self.state.values()),
            apply=self._apply,
            heartbeat=lambda gid, doc: self.heartbeats.append((gid, dict(doc))),
            push_ids=lambda: [g for g, e in self.state.items() if e.config.check == "push"],
        )

    def _apply(self, entries: Mapping[str, SharedGateway], initial: bool) -> None:
        self.state = dict(entries)
        self.applied += 1


def _store(server: RedisServer, **kw: Any) -> RedisStore:
    return RedisStore(
        StoreConfig(url=server.url, prefix="t:", resync_interval=kw.pop("resync", 0.3), timeout=0.3)
    )


async def test_first_replica_seeds_then_redis_wins(redis_server: RedisServer) -> None:
    a, b = Replica("g1", "g2"), Replica("g7")  # b's file differs: Redis (seeded by a) wins
    sa, sb = _store(redis_server), _store(redis_server)
    try:
        await sa.start(a.hooks())
        await sb.start(b.hooks())
        assert sa.available and sb.available
        assert set(b.state) == {"g1", "g2"}
        assert b.state["g1"].config == _gw("g1")
    finally:
        await sa.close()
        await sb.close()


async def test_writes_propagate_within_a_second(redis_server: RedisServer) -> None:
    a, b = Replica("g1", "g2"), Replica()
    sa, sb = _store(redis_server, resync=30), _store(redis_server, resync=30)  # pub/sub alone
    try:
        await sa.start(a.hooks())
        await sb.start(b.hooks())
        assert await sa.set_weight("g1", 4.0)
        await async_wait_until(lambda: b.state["g1"].config.weight == 4.0, timeout=1.0)
        assert await sa.set_drain("g2", True)
        await async_wait_until(lambda: b.state["g2"].drain, timeout=1.0)
        assert await sb.set_drain("g2", False)
        await async_wait_until(lambda: not a.state["g2"].drain, timeout=1.0)
        assert await sb.add(SharedGateway(_gw("g3", 2.0), "admin"))
        await async_wait_until(
            lambda: "g3" in a.state and a.state["g3"].source == "admin", timeout=1.0
        )
        assert not await sa.add(SharedGateway(_gw("g3"), "admin"))  # exists
        assert await sa.remove("g1")
        await async_wait_until(lambda: "g1" not in b.state, timeout=1.0)
        assert not await sb.set_weight("g1", 1.0) and not await sb.remove("g1")  # unknown
    finally:
        await sa.close()
        await sb.close()


async def test_zones_are_shared_with_every_replica(redis_server: RedisServer) -> None:
    """A gateway's zone travels with its entry: seeded, added, and changed by set_zone."""
    from dataclasses import replace

    a, b = Replica("g1", "g2"), Replica()
    a.state["g1"] = SharedGateway(replace(_gw("g1"), zone="eu-1", capacity=50), "config")
    sa, sb = _store(redis_server, resync=30), _store(redis_server, resync=30)
    try:
        await sa.start(a.hooks())
        await sb.start(b.hooks())
        assert b.state["g1"].config.zone == "eu-1" and b.state["g2"].config.zone == "default"
        assert await sb.set_zone("g2", "eu-2")
        await async_wait_until(lambda: a.state["g2"].config.zone == "eu-2", timeout=1.0)
        assert await sa.set_zone("g1", "eu-3")
        await async_wait_until(lambda: b.state["g1"].config.zone == "eu-3", timeout=1.0)
        assert b.state["g1"].config.capacity == 50  # the rest of the entry is kept
        assert await sa.add(SharedGateway(replace(_gw("g3"), zone="eu-1"), "admin"))
        await async_wait_until(
            lambda: "g3" in b.state and b.state["g3"].config.zone == "eu-1", timeout=1.0
        )
        assert not await sa.set_zone("g9", "eu-1")  # unknown
    finally:
        await sa.close()
        await sb.close()


async def test_missed_message_heals_on_resync(redis_server: RedisServer) -> None:
    a, b = Replica("g1"), Replica()
    sa, sb = _store(redis_server, resync=0.2), _store(redis_server, resync=0.2)
    try:
        await sa.start(a.hooks())
        await sb.start(b.hooks())
        # A change written behind the stores' backs (no PUBLISH): only the resync can see it.
        await sa._redis.hset("t:weights", "g1", "9.0")
        await sa._redis.incr("t:version")
        await async_wait_until(lambda: b.state["g1"].config.weight == 9.0, timeout=1.0)
    finally:
        await sa.close()
        await sb.close()


async def test_heartbeats_are_relayed_and_stored_with_ttl(redis_server: RedisServer) -> None:
    a, b = Replica(), Replica()
    push = SharedGateway(_gw("g5", check="push"), "push")
    sa, sb = _store(redis_server), _store(redis_server)
    try:
        await sa.start(a.hooks())
        await sb.start(b.hooks())
        assert await sa.add(push)
        await async_wait_until(lambda: "g5" in b.state, timeout=1.0)
        doc = {"id": "g5", "state": "serving", "connections": 3, "capacity": 10}
        sa.heartbeat("g5", doc, ttl=0.5)
        await async_wait_until(lambda: b.heartbeats, timeout=1.0)
        assert b.heartbeats == [("g5", doc)] and a.heartbeats == []  # not echoed to the sender
        ttl = await sa._redis.pttl("t:hb:g5")
        assert 0 < ttl <= 500

        async def expired() -> bool:
            return not await sa._redis.exists("t:hb:g5")

        await async_wait_until(expired, timeout=1.5)
    finally:
        await sa.close()
        await sb.close()


async def test_outage_refuses_writes_logs_once_and_reseeds_after_restart(
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = Replica("g1", "g2"), Replica()
    sa, sb = _store(redis_server, resync=0.2), _store(redis_server, resync=0.2)
    caplog.set_level(logging.WARNING, logger="tcpdispatch.store")
    try:
        await sa.start(a.hooks())
        await sb.start(b.hooks())
        assert await sa.set_weight("g2", 3.0)
        await async_wait_until(lambda: b.state["g2"].config.weight == 3.0, timeout=1.0)
        redis_server.kill()
        await async_wait_until(lambda: not sa.available and not sb.available, timeout=2.0)
        before = dict(b.state)
        for _ in range(3):
            with pytest.raises(StoreUnavailable):
                await sb.set_weight("g1", 2.0)
        assert b.state == before  # last known state kept
        outage = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(outage) == 2  # once per store, not per attempt or retry

        redis_server.start()  # empty: no persistence
        await async_wait_until(lambda: sa.available and sb.available, timeout=3.0)
        assert b.state["g2"].config.weight == 3.0  # reseeded from the last known state
        assert await sb.set_weight("g1", 6.0)
        await async_wait_until(lambda: a.state["g1"].config.weight == 6.0, timeout=1.0)
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        await sa.close()
        await sb.close()


async def test_lease_has_one_holder_and_passes_on_when_it_expires(
    redis_server: RedisServer,
) -> None:
    sa, sb = _store(redis_server), _store(redis_server)
    try:
        await sa.start(Replica("g1").hooks())
        await sb.start(Replica("g1").hooks())
        assert await sa.lease("rebalance", "a", 0.5)
        assert not await sb.lease("rebalance", "b", 0.5)  # held by a
        assert await sa.lease("rebalance", "a", 0.5)  # renewed
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not await sb.lease("rebalance", "b", 0.5):  # a stops renewing: it expires in Redis
            assert loop.time() - t0 < scaled(3), "lease never expired"
            await asyncio.sleep(0.05)
        assert loop.time() - t0 >= 0.4
        assert not await sa.lease("rebalance", "a", 0.5)
        await sb.release("rebalance", "b")
        assert await sa.lease("rebalance", "a", 0.5)
        await sa.set_control("paused", "1")
        assert (await sb.control())["paused"] == "1"
    finally:
        await sa.close()
        await sb.close()


async def test_lease_is_refused_while_redis_is_away() -> None:
    from harness import free_port

    store = RedisStore(StoreConfig(url=f"redis://127.0.0.1:{free_port()}", timeout=0.2))
    try:
        assert not await store.lease("rebalance", "a", 1.0)
        with pytest.raises(StoreUnavailable):
            await store.control()
    finally:
        await store.close()
