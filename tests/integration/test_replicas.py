"""Two real dispatcher replicas sharing a real redis-server.

Admin changes on one replica reach the other within 1 s; push heartbeats sent
to one replica make the gateway dispatchable on both and it is dropped by both
after its TTL; with Redis killed both keep answering and refuse admin writes
with 503; after Redis returns, changes propagate again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import start_gateway
from helpers import Proc, wait_until
from store.redis_server import RedisServer
from store.replica_kit import Sink, start_replica

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def sinks() -> Iterator[list[Sink]]:
    made = [Sink(), Sink()]
    yield made
    for s in made:
        s.close()


def _within(deadline_s: float, pred: Callable[[], object], what: str) -> float:
    t0 = time.monotonic()
    wait_until(pred, deadline_s, 0.01, what=what)
    return time.monotonic() - t0


def test_admin_changes_propagate_and_survive_a_redis_outage(
    tmp_path: Path,
    procs: Callable[..., Proc],
    redis_server: RedisServer,
    sinks: list[Sink],
) -> None:
    gws = [("g1", sinks[0].port), ("g2", sinks[1].port)]
    a = start_replica(procs, tmp_path, "a", redis_server.url, gws)
    b = start_replica(procs, tmp_path, "b", redis_server.url, gws)
    for r in (a, b):
        wait_until(
            lambda r=r: all((r.gateway(g) or {}).get("state") == "up" for g, _ in gws),
            5,
            what="both gateways up",
        )

    # A weight change on A is used by B within 1 s (weight 0: no new clients).
    assert a.request("PATCH", "/v1/gateways/g2", {"weight": 0}, admin=True)[0] == 200
    t0 = time.monotonic()
    wait_until(
        lambda: all(b.answer(f"w{i}")[0] == "g1" for i in range(5)),
        1.0,
        0.01,
        what="B stops handing out g2 as primary",
    )
    assert time.monotonic() - t0 < 1.0
    assert all(b.answer(f"x{i}")[0] == "g1" for i in range(20))
    assert a.request("PATCH", "/v1/gateways/g2", {"weight": 1}, admin=True)[0] == 200
    _within(1.0, lambda: (b.gateway("g2") or {}).get("weight") == 1.0, "weight 1 on B")

    # Redis killed: both keep answering exactly as before, admin writes get 503 JSON.
    before = {r.port: [r.answer(f"c{i}") for i in range(10)] for r in (a, b)}
    assert all(set(ans) == {"g1", "g2"} for rows in before.values() for ans in rows)
    redis_server.kill()
    wait_until(lambda: not a.store_up() and not b.store_up(), 3, what="replicas see the outage")
    for r in (a, b):
        after = [r.answer(f"c{i}") for i in range(10)]
        assert [set(x) for x in after] == [set(x) for x in before[r.port]]
        status, doc = r.request("PATCH", "/v1/gateways/g1", {"weight": 5}, admin=True)
        assert status == 503 and doc["error"] == "store_unavailable", doc
        status, doc = r.request("POST", "/v1/gateways/g1/drain", admin=True)
        assert status == 503 and doc["error"] == "store_unavailable", doc
        assert r.gateway("g1")["weight"] == 1.0 and not r.gateway("g1")["admin_drain"]
    assert a.proc.output().count("unreachable") == 1  # logged once, not per request or retry

    # Redis back (empty): replicas reseed it, and a change made afterwards propagates again.
    redis_server.start()
    wait_until(lambda: a.store_up() and b.store_up(), 5, what="replicas reconnect to Redis")
    assert b.request("POST", "/v1/gateways/g1/drain", admin=True)[0] == 200
    _within(1.0, lambda: (a.gateway("g1") or {}).get("state") == "draining", "drain reaches A")
    assert all(a.answer(f"d{i}")[0] == "g2" for i in range(10))


def test_push_heartbeats_to_one_replica_reach_the_other(
    tmp_path: Path,
    procs: Callable[..., Proc],
    redis_server: RedisServer,
    sinks: list[Sink],
) -> None:
    gws = [("g1", sinks[0].port)]
    a = start_replica(procs, tmp_path, "a", redis_server.url, gws)
    b = start_replica(procs, tmp_path, "b", redis_server.url, gws)
    gw = start_gateway(
        procs,
        "p1",
        "--report-to",
        f"http://127.0.0.1:{a.port}",
        "--report-token-file",
        str(tmp_path / "admin.token"),
        "--report-interval",
        "0.2",
        secret_file=tmp_path / "ticket.secret",
        wait=False,
    ).proc
    # Registered on A through the heartbeat, shared through Redis, brought up on B by relayed beats.
    wait_until(lambda: (b.gateway("p1") or {}).get("state") == "up", 10, what="p1 up on B")
    assert b.gateway("p1")["source"] == "push"
    assert any("p1" in b.answer(f"c{i}") for i in range(5))
    gw.stop()
    t0 = time.monotonic()
    for r in (a, b):
        wait_until(lambda r=r: (r.gateway("p1") or {}).get("state") == "down", 3, what="p1 dropped")
    assert time.monotonic() - t0 < 3.0  # ttl 1 s plus the TTL loop's tick
    assert all("p1" not in b.answer(f"d{i}") for i in range(5))
