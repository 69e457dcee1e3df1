"""Regression tests for the review findings: rebuild storm, passive reports, reloads, nested
JSON, HEAD."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from tcpdispatch.balancing import _ring
from tcpdispatch.balancing.base import PickRequest
from tcpdispatch.config import load_config
from tcpdispatch.dispatcher.config_writer import write_dispatcher_toml
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.dispatcher.server import DispatcherServer
from tcpdispatch.health import ProbeResult, parse_agent_reply


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _agents(n: int, capacity: int | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        g: dict[str, Any] = {
            "id": f"a{i}",
            "address": f"127.0.0.1:{9000 + i}",
            "check": f"agent://127.0.0.1:{9500 + i}",
        }
        if capacity is not None:
            g["capacity"] = capacity
        out.append(g)
    return out


@pytest.mark.parametrize("policy", ["p2c", "consistent_hash", "ip_hash", "least_conn"])
@pytest.mark.parametrize("capacity", [None, 100])
def test_agent_load_replies_do_not_rebuild(
    make_config: Any, policy: str, capacity: int | None
) -> None:
    pool = Pool(
        make_config(_agents(5, capacity), dispatcher={"policy": policy}), rng=random.Random(1)
    )
    for gid in pool.gateways:
        for _ in range(2):
            pool.on_result(gid, parse_agent_reply("up 90% maxconn:90"))
    before = pool.rebuilds
    rng = random.Random(2)
    for _ in range(200):  # remaining slots and percentage change with every reply
        left = rng.randint(1, 99)
        pool.on_result(f"a{rng.randrange(5)}", parse_agent_reply(f"up {left}% maxconn:{left}"))
    assert pool.rebuilds == before


def test_agent_remaining_slots_are_read_live(make_config: Any) -> None:
    pool = Pool(make_config(_agents(1)), rng=random.Random(1))
    for _ in range(2):
        pool.on_result("a0", parse_agent_reply("up 50% maxconn:3"))
    picker = pool.picker
    assert sum(bool(picker.pick(PickRequest(f"c{i}"))) for i in range(10)) == 3
    pool.on_result(
        "a0", parse_agent_reply("up 10% maxconn:1")
    )  # fewer left: no rebuild, still obeyed
    assert pool.picker is picker
    assert sum(bool(picker.pick(PickRequest(f"d{i}"))) for i in range(10)) == 1
    pool.on_result("a0", parse_agent_reply("drain"))  # drain is membership: rebuilds
    assert pool.picker is not picker and pool.picker.candidates == ()


def test_http_load_reports_do_not_rebuild(make_config: Any) -> None:
    gws = [
        {
            "id": f"g{i}",
            "address": f"127.0.0.1:{9000 + i}",
            "check": f"http://127.0.0.1:{9500 + i}/status",
        }
        for i in range(3)
    ]
    pool = Pool(make_config(gws), rng=random.Random(1))
    for gid in pool.gateways:
        for _ in range(2):
            pool.on_result(gid, ProbeResult(ok=True, connections=0, capacity=1000, utilization=0.1))
    before = pool.rebuilds
    for i in range(300):
        pool.on_result(
            f"g{i % 3}", ProbeResult(ok=True, connections=i, capacity=1000, utilization=i / 300)
        )
    assert pool.rebuilds == before


async def test_slow_start_reuses_the_hash_ring(
    make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []
    real = _ring.HashRing

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, ids: Any, weights: Any) -> None:
            built.append(len(ids))
            super().__init__(ids, weights)

    monkeypatch.setattr(_ring, "HashRing", Counting)
    _ring._ring_cache.clear()
    clock = Clock()
    gws = [{"id": f"r{i}", "address": f"127.0.0.1:{9000 + i}"} for i in range(4)]
    cfg = make_config(gws, dispatcher={"policy": "consistent_hash"}, balancing={"slow_start_s": 10})
    pool = Pool(cfg, clock=clock, rng=random.Random(1))
    for gid in pool.gateways:
        for _ in range(2):
            pool.on_result(gid, ProbeResult(ok=True))
    pool.rebuild()
    pool.on_result("r0", ProbeResult(ok=False))
    pool.on_result("r0", ProbeResult(ok=False))  # down
    pool.rebuild()
    for _ in range(2):
        pool.on_result("r0", ProbeResult(ok=True))  # back up: slow start
    pool.rebuild()
    rebuilds, rings = pool.rebuilds, len(built)
    ramp = pool.picker
    assert ramp.candidates[0].weight < 1.0 and ramp.candidates[0].base_weight == 1.0
    # The ramp steps through ~20 rebuilds; the ring (same members, same static weights) is reused.
    for _ in range(25):
        clock.t += 0.5
        pool.rebuild()
    assert pool.rebuilds == rebuilds + 25
    assert len(built) == rings  # no ring built during the whole ramp
    assert built.count(4) == 1 and built.count(3) == 1  # full pool once, pool without r0 once
    pool.close()


def test_ramping_gateway_takes_a_growing_stable_share_of_its_keys(make_config: Any) -> None:
    clock = Clock()
    gws = [{"id": f"r{i}", "address": f"127.0.0.1:{9000 + i}"} for i in range(4)]
    cfg = make_config(
        gws,
        dispatcher={"policy": "consistent_hash"},
        balancing={"slow_start_s": 10, "hash_epsilon": 10},
    )
    pool = Pool(cfg, clock=clock, rng=random.Random(1))
    keys = [f"client-{i}" for i in range(4000)]

    def owners() -> dict[str, str]:
        pool.rebuild()
        return {k: pool.picker.pick(PickRequest(k))[0].id for k in keys}

    for gid in pool.gateways:
        for _ in range(2):
            pool.on_result(gid, ProbeResult(ok=True))
    steady = owners()
    pool.gateways["r0"].up_since = clock.t  # r0 just recovered
    early = owners()
    clock.t += 5
    mid = owners()
    clock.t += 10
    done = owners()
    share = [sum(v == "r0" for v in o.values()) / len(keys) for o in (early, mid, steady)]
    assert share[0] < share[1] < share[2]
    assert done == steady  # ramp over: exactly the old mapping
    # Keys r0 holds early in the ramp it still holds later (the kept set only grows).
    assert all(mid[k] == "r0" for k, v in early.items() if v == "r0")


@pytest.mark.parametrize("fall", [1, 2])
async def test_report_flood_never_takes_down_a_healthy_gateway(
    make_app: Any, call_router: Any, fall: int
) -> None:
    app = make_app(health={"fall": fall})
    for _ in range(20):
        for _ in range(5):
            r = await call_router(
                app, "POST", "/v1/report", json_doc={"gateway_id": "g1", "error": "refused"}
            )
            assert r.status == 202
        assert app.pool.gateways["g1"].health.up, fall
        app.pool.on_result("g1", ProbeResult(ok=True, connections=0, capacity=10_000))
    assert app.pool.gateways["g1"].health.up


async def test_deeply_nested_json_is_a_400(make_app: Any, call_router: Any) -> None:
    app = make_app()
    for body in (b"[" * 50_000, b'{"a":' * 50_000):
        r = await call_router(
            app, "POST", "/v1/report", body=body, headers=[(b"content-type", b"application/json")]
        )
        assert r.status in (400, 413)
    app.config = app.config.__class__(
        **{
            **{f: getattr(app.config, f) for f in app.config.__dataclass_fields__},
            "max_body": 1 << 20,
        }
    )
    r = await call_router(
        app,
        "POST",
        "/v1/report",
        body=b"[" * 50_000,
        headers=[(b"content-type", b"application/json")],
    )
    assert r.status == 400 and r.json()["error"] == "bad_json"


async def test_head_dispatch_is_405_and_issues_nothing(make_app: Any, call_router: Any) -> None:
    app = make_app()
    issued = sum(g.load.issued for g in app.pool.gateways.values())
    r = await call_router(app, "HEAD", "/v1/dispatch", b"client_id=alice")
    assert r.status == 405 and r.headers["allow"] == "GET" and r.body == b""
    r = await call_router(app, "POST", "/v1/dispatch", b"client_id=alice")
    assert (
        r.status == 405
        and r.headers["allow"] == "GET"
        and r.json()["error"] == "method_not_allowed"
    )
    assert sum(g.load.issued for g in app.pool.gateways.values()) == issued
    assert app.stats.dispatched == 0


async def test_concurrent_reloads_leave_one_checker(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("0123456789abcdef0123\n")
    (tmp_path / "admin").write_text("admin-token-123\n")
    path = tmp_path / "d.toml"

    def write(interval: float) -> None:
        write_dispatcher_toml(
            path,
            secret_file="s",
            admin_token_file="admin",
            sections={"health": {"interval": interval}},
            gateways=[{"id": "g1", "address": "127.0.0.1:9"}],
        )

    write(0.5)
    server = DispatcherServer(load_config(path), config_path=path)
    await server._start_checker()
    created: list[Any] = []
    real_start = server._start_checker

    async def tracking() -> None:
        await real_start()
        created.append(server.checker)

    server._start_checker = tracking  # type: ignore[method-assign]
    write(0.6)
    first = asyncio.ensure_future(server.reload())
    await asyncio.sleep(0)
    write(0.7)
    second = asyncio.ensure_future(server.reload())
    # An admin change while the reloads await the old checker's close must not fail.
    from tcpdispatch.config import GatewayEntry

    server.pool.add(GatewayEntry("g2", "127.0.0.1", 10, "tcp://127.0.0.1:10"))
    assert (await first)[0] and (await second)[0]
    assert len(created) == 2 and server.checker is created[-1]
    assert all(c._closed for c in created[:-1]) and not server.checker._closed
    assert server.checker.probing == {"g1", "g2"}
    health_tasks = [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith("health:")]
    assert len(health_tasks) == 2  # one per gateway: no leaked checker still probing
    await server.checker.close()
    server.pool.close()


def test_config_derives_policy_options_and_accepts_https_checks(make_config: Any) -> None:
    from tcpdispatch.balancing.load import LoadPicker

    cfg = make_config(
        [{"id": "h", "address": "127.0.0.1:1", "check": "https://127.0.0.1:2/status"}],
        dispatcher={"policy": "load"},
        balancing={"load_floor": 0.3},
    )
    pool = Pool(cfg)
    assert isinstance(pool.picker, LoadPicker) and pool.picker.floor == 0.3
    assert pool.targets()["h"].kind == "http"


def test_short_env_admin_token_is_refused(tmp_path: Path) -> None:
    from tcpdispatch.config import parse_config
    from tcpdispatch.errors import ConfigError

    (tmp_path / "s").write_text("0123456789abcdef0123\n")
    doc = {"dispatcher": {"secret_file": "s"}}
    with pytest.raises(ConfigError, match="TCPDISPATCH_ADMIN_TOKEN"):
        parse_config(doc, base=tmp_path, env={"TCPDISPATCH_ADMIN_TOKEN": "short"})
    cfg = parse_config(doc, base=tmp_path, env={"TCPDISPATCH_ADMIN_TOKEN": "long-enough-token"})
    assert cfg.admin_token == "long-enough-token" and cfg.balancing.slow_start_s == 10.0


def test_httputil_helpers(tmp_path: Path) -> None:
    import json

    from tcpdispatch.httputil import check_bearer, error_body, read_token

    assert json.loads(error_body("x", "y", retry_after_s=2)) == {
        "error": "x",
        "detail": "y",
        "retry_after_s": 2,
    }
    assert check_bearer(b"Bearer secret-1", "secret-1") and check_bearer(
        "bEaReR  secret-1 ", "secret-1"
    )
    assert not check_bearer(b"Basic secret-1", "secret-1") and not check_bearer(b"Bearer x", "")
    assert not check_bearer(None, "secret-1") and not check_bearer(b"Bearer secret-2", "secret-1")
    (tmp_path / "t").write_text(" token-123 \n")
    assert read_token(tmp_path / "t") == "token-123"
    (tmp_path / "short").write_text("abc")
    with pytest.raises(ValueError, match="shorter than 8"):
        read_token(tmp_path / "short")
    with pytest.raises(ValueError, match="cannot read"):
        read_token(tmp_path / "missing")


async def test_answer_template_cache_is_a_bounded_lru(
    make_app: Any, call_router: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tcpdispatch.dispatcher import service

    monkeypatch.setattr(service, "TEMPLATE_CACHE", 2)
    app = make_app(dispatcher={"policy": "consistent_hash", "alternates": 0})
    for i in range(50):
        r = await call_router(app, "GET", "/v1/dispatch", f"client_id=c{i}".encode())
        assert r.status == 200
        assert len(app.service._templates) <= 2


async def test_503_body_is_precomputed_and_follows_the_pool(
    make_app: Any, call_router: Any
) -> None:
    app = make_app(up=False, balancing={"panic_threshold": 0})
    r = await call_router(app, "GET", "/v1/dispatch", b"client_id=a")
    assert r.status == 503 and "no gateway is up (3 down" in r.json()["detail"]
    assert r.json()["retry_after_s"] == int(r.headers["retry-after"])
    for gid in app.pool.gateways:
        for _ in range(2):
            app.pool.on_result(gid, ProbeResult(ok=True, connections=5, capacity=5))
    app.pool.rebuild()
    r = await call_router(app, "GET", "/v1/dispatch", b"client_id=a")
    assert r.status == 503 and r.json()["detail"] == "all 3 gateways that are up are at capacity"
