"""The operator event bus and its Server-Sent Events stream (dispatcher/events.py), and the
places that publish to it: pool, health, panic, drain, weight, rebalancer, reload."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from dispatcher_stack import Stack
from harness import write_dispatcher_toml
from helpers import scaled

from tcpdispatch.config import DispatcherConfig, load_config
from tcpdispatch.dispatcher.events import (
    EventBus,
    PoolView,
    pool_update,
    snapshot_data,
    sse,
    sse_stream,
)
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.dispatcher.rebalancer import Rebalancer
from tcpdispatch.dispatcher.server import DispatcherServer
from tcpdispatch.health import ProbeResult
from tcpdispatch.store import MemoryStore


def parse(chunk: bytes) -> list[tuple[str, Any]]:
    """(event name, decoded data) of each SSE message in ``chunk`` (comments skipped)."""
    out = []
    for block in chunk.decode().split("\n\n"):
        name, data = "message", ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
        if data:
            out.append((name, json.loads(data)))
    return out


def test_history_is_bounded_and_subscribers_get_each_event() -> None:
    bus = EventBus(history=3)
    sub = bus.subscribe()
    for i in range(5):
        bus.publish("drain", f"m{i}", gateway="g1")
    assert [e["message"] for e in bus.history()] == ["m2", "m3", "m4"]
    assert [e.seq for e in sub.take()] == [1, 2, 3, 4, 5]
    assert bus.history()[-1] == {
        "seq": 5,
        "at": round(bus.recent[-1].at, 3),
        "kind": "drain",
        "message": "m4",
        "gateway": "g1",
    }


def test_a_subscriber_that_falls_behind_is_dropped_and_publishing_goes_on() -> None:
    bus = EventBus(queue=4)
    slow, fast = bus.subscribe(), bus.subscribe()
    for i in range(10):
        bus.publish("health", f"m{i}")
        fast.take()  # this one keeps up
    assert slow.dropped and slow not in bus.subscribers and bus.dropped == 1
    assert len(slow.pending) == 4  # held no more than its bound
    assert fast in bus.subscribers and not fast.dropped


def test_sse_message_format() -> None:
    assert sse("event", {"a": "x\ny"}, 7) == b'id: 7\nevent: event\ndata: {"a":"x\\ny"}\n\n'
    assert sse("pool", [1]) == b"event: pool\ndata: [1]\n\n"


def test_pool_update_sends_only_changed_rows_and_removed_ids() -> None:
    a, b = b'{"id":"a","held":1}', b'{"id":"b","held":2}'
    doc, sent = pool_update(PoolView({"panic": False}, {"a": a, "b": b}, [1]), {})
    assert json.loads(doc) == {
        "gateways": [{"id": "a", "held": 1}, {"id": "b", "held": 2}],
        "removed": [],
        "panic": False,
    }  # no history after the snapshot
    c = b'{"id":"c","held":0}'
    doc, sent = pool_update(PoolView({"panic": True}, {"a": a, "c": c}), sent)
    assert json.loads(doc) == {
        "gateways": [{"id": "c", "held": 0}],
        "removed": ["b"],
        "panic": True,
    }
    assert sent == {"a": a, "c": c}
    snap = json.loads(
        snapshot_data(PoolView({"panic": True}, {"a": a, "c": c}, [[1, 2]]), [{"seq": 1}])
    )
    assert snap == {
        "gateways": [{"id": "a", "held": 1}, {"id": "c", "held": 0}],
        "panic": True,
        "history": [[1, 2]],
        "events": [{"seq": 1}],
    }


async def _next(stream: AsyncIterator[bytes]) -> list[tuple[str, Any]]:
    return parse(await asyncio.wait_for(stream.__anext__(), scaled(5)))


async def test_stream_snapshot_then_events_then_pool_ticks_then_overflow() -> None:
    bus = EventBus(queue=2)
    bus.publish("health", "before")
    rows = {"g1": b'{"id":"g1","held":0}'}
    stream = sse_stream(bus, lambda: PoolView({}, dict(rows)), tick_s=0.2, heartbeat_s=0.1)
    first = await _next(stream)
    assert first[0][0] == "snapshot" and [e["message"] for e in first[0][1]["events"]] == ["before"]
    assert len(bus.subscribers) == 1
    bus.publish("drain", "g1 drained", gateway="g1")
    got = await _next(stream)
    assert got[0] == (
        "event",
        {
            "seq": 2,
            "at": round(bus.recent[-1].at, 3),
            "kind": "drain",
            "message": "g1 drained",
            "gateway": "g1",
        },
    )
    rows["g1"] = b'{"id":"g1","held":5}'
    pools: list[Any] = []
    while not pools:
        pools = [d for n, d in await _next(stream) if n == "pool"]
    assert pools[0]["gateways"] == [{"id": "g1", "held": 5}]
    for i in range(3):  # more than the queue holds, without reading
        bus.publish("health", f"burst {i}")
    assert (await _next(stream))[-1][0] == "overflow"
    await stream.aclose()
    assert not bus.subscribers


async def test_closing_a_stream_unsubscribes() -> None:
    bus = EventBus()
    stream = sse_stream(bus, lambda: PoolView({}, {}))
    await _next(stream)
    await stream.aclose()
    assert not bus.subscribers


# ------------------------------------------------------------------ publishers


def kinds(bus: EventBus) -> list[tuple[str, str]]:
    return [(e.kind, e.message) for e in bus.recent]


def test_pool_publishes_health_panic_drain_weight_and_membership(
    make_config: Callable[..., DispatcherConfig],
) -> None:
    bus = EventBus()
    pool = Pool(make_config(), rng=random.Random(1), events=bus)
    for _ in range(2):
        for gid in ("g1", "g2", "g3"):
            pool.on_result(gid, ProbeResult(ok=True, connections=0, capacity=100))
    pool.rebuild()
    assert ("health", "gateway g1 is up") in kinds(bus)
    assert [m for k, m in kinds(bus) if k == "panic"] == [
        "panic mode on: 0 of 3 non-draining gateways are healthy",
        "panic mode off: 2 of 3 non-draining gateways are healthy",
    ]
    pool.set_drain("g2", True)
    pool.set_drain("g2", True)  # no change, no event
    pool.set_weight("g3", 5)
    assert [k for k in kinds(bus) if k[0] in ("drain", "weight")] == [
        ("drain", "gateway g2 drained by the operator"),
        ("weight", "gateway g3 weight 3 -> 5"),
    ]
    for _ in range(3):
        pool.on_result("g1", ProbeResult(ok=False, detail="connection refused"))
    down = "gateway g1 went down: 2 probes in a row failed (fall = 2): connection refused"
    assert kinds(bus)[-1] == ("health", down)
    pool.remove("g3")
    assert ("member", "gateway g3 left the pool") in kinds(bus)


async def test_rebalancer_publishes_leadership_and_operator_switches(
    make_config: Callable[..., DispatcherConfig],
) -> None:
    cfg = make_config()
    pool = Pool(cfg, rng=random.Random(1))
    app = Stack(cfg, pool)
    rb = Rebalancer(cfg.rebalance, pool, app.stats, MemoryStore(), holder="r1")
    assert rb.events is pool.events
    await rb.step()
    await rb.set_paused(True)
    assert ("leader", "replica r1 leads rebalancing") in kinds(pool.events)
    assert kinds(pool.events)[-1] == ("rebalance", "rebalancing paused by the operator")
    assert rb.describe()["leader_replica"] == "r1"


async def test_reload_publishes_success_and_refusal(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("test-secret-0123456789abcdef\n")
    path = tmp_path / "d.toml"
    write_dispatcher_toml(path, secret_file="s")
    server = DispatcherServer(load_config(path), config_path=path)
    assert (await server.reload())[0]
    write_dispatcher_toml(path, dispatcher={"nope": 1})
    assert not (await server.reload())[0]
    events = [(e.kind, e.data["ok"], e.message) for e in server.events.recent if e.kind == "reload"]
    assert [ok for _, ok, _ in events] == [True, False]
    assert events[0][2].startswith("reloaded d.toml: 0 gateways in file")
    assert server.pool.events is server.events and server.rebalancer.events is server.events


async def test_a_replica_that_does_not_lead_names_the_one_that_does(
    make_config: Callable[..., DispatcherConfig],
) -> None:
    class OneLease(MemoryStore):  # shared by both replicas, as Redis would be; r1 holds the lease
        async def lease(self, name: str, holder: str, ttl: float) -> bool:
            return holder == "r1"

    cfg = make_config()
    store = OneLease()
    rbs = []
    for holder in ("r1", "r2"):
        pool = Pool(cfg, rng=random.Random(1))
        rbs.append(Rebalancer(cfg.rebalance, pool, Stack(cfg, pool).stats, store, holder=holder))
    for rb in rbs:
        await rb.step()
    assert rbs[0].leader and not rbs[1].leader
    assert rbs[1].describe()["leader_replica"] == "r1" and rbs[1].describe()["replica"] == "r2"
