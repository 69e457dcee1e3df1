"""Zones in the dispatcher: config, the choice in a dispatch, the answer, admin and push
(docs/zones.md)."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest
from dispatcher_stack import Stack

from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.errors import ConfigError
from tcpdispatch.health import ProbeResult
from tcpdispatch.rng import SplitMixRandom

from .conftest import ADMIN, bring_up

GATEWAYS = [
    {"id": "a1", "address": "127.0.0.1:9001", "zone": "a"},
    {"id": "a2", "address": "127.0.0.1:9002", "zone": "a"},
    {"id": "b1", "address": "127.0.0.1:9003", "zone": "b"},
    {"id": "b2", "address": "127.0.0.1:9004", "zone": "b"},
]
ZONES = [
    {"name": "a", "cidrs": ["198.51.100.0/24"], "spill_to": ["b"]},
    {"name": "b", "cidrs": ["203.0.113.0/24"]},
]


def _dispatch(
    app: Stack, qs: str, ip: str = "192.0.2.1", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, Any]:
    status, _, body = app.service.dispatch_bytes(qs.encode(), ip, headers or [])
    return status, json.loads(body)


@pytest.fixture
def zoned(make_app: Any) -> Stack:
    app: Stack = make_app(GATEWAYS, zones=ZONES, dispatcher={"trusted_proxies": ["127.0.0.0/8"]})
    return app


# ------------------------------------------------------------------ config


def test_config_zones_and_defaults(make_config: Any) -> None:
    cfg = make_config(GATEWAYS, zones=ZONES)
    assert [g.zone for g in cfg.gateways] == ["a", "a", "b", "b"]
    assert [z.name for z in cfg.zones] == ["a", "b"] and cfg.zones[0].spill_to == ("b",)
    assert cfg.spill_headroom == 0.1
    plain = make_config()
    assert plain.zones == () and {g.zone for g in plain.gateways} == {"default"}


@pytest.mark.parametrize(
    ("zones", "gw_zone", "key", "reason"),
    [
        ([{"name": "a", "cidrs": ["nope"]}], "a", "zones[0].cidrs[0]", "not an IP network"),
        ([{"name": "a", "spill_to": ["z"]}], "a", "zones[0].spill_to[0]", "unknown zone 'z'"),
        ([{"name": "a", "spill_to": ["a"]}], "a", "zones[0].spill_to[0]", "the zone itself"),
        ([{"name": "a"}, {"name": "a"}], "a", "zones[1].name", "duplicate zone"),
        (
            [{"name": "a", "cidrs": ["10.0.0.0/8"]}, {"name": "b", "cidrs": ["10.0.0.0/8"]}],
            "a",
            "zones[1].cidrs[0]",
            "already in zone 'a'",
        ),
        ([{"cidrs": []}], "a", "zones[0].name", "is required"),
        ([{"name": "a", "colour": "red"}], "a", "zones[0].colour", "unknown key"),
        ([], "bad zone", "gateways[0].zone", "printable ASCII"),
    ],
)
def test_config_zone_errors_name_the_key(
    make_config: Any, zones: Any, gw_zone: str, key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_config([{"id": "g", "address": "127.0.0.1:9000", "zone": gw_zone}], zones=zones)
    assert info.value.key == key and reason in info.value.reason


def test_config_spill_headroom_range(make_config: Any) -> None:
    assert make_config(dispatcher={"spill_headroom": 0.25}).spill_headroom == 0.25
    for bad in (1.0, -0.1, "x"):
        with pytest.raises(ConfigError) as info:
            make_config(dispatcher={"spill_headroom": bad})
        assert info.value.key == "dispatcher.spill_headroom"


# ------------------------------------------------------------------ dispatch


def test_hint_and_network_choose_the_zone_and_answers_name_it(zoned: Stack) -> None:
    by_hint = Counter(
        _dispatch(zoned, f"client_id=c{i}&zone=a")[1]["gateway"]["zone"] for i in range(300)
    )
    assert by_hint == {"a": 300}
    # by source network: the peer itself, and through X-Forwarded-For from a trusted proxy
    assert {
        _dispatch(zoned, f"client_id=c{i}", "203.0.113.5")[1]["gateway"]["zone"] for i in range(50)
    } == {"b"}
    xff = [(b"x-forwarded-for", b"198.51.100.77")]
    assert {
        _dispatch(zoned, f"client_id=c{i}", "127.0.0.1", xff)[1]["gateway"]["zone"]
        for i in range(50)
    } == {"a"}
    # an untrusted peer's header is ignored: 192.0.2.1 is in no zone -> today's choice over all
    # zones
    zones = Counter(
        _dispatch(zoned, f"client_id=c{i}", "192.0.2.1", xff)[1]["gateway"]["zone"]
        for i in range(400)
    )
    assert set(zones) == {"a", "b"}


def test_every_answer_has_an_alternate_in_another_zone(zoned: Stack) -> None:
    for i in range(200):
        status, doc = _dispatch(zoned, f"client_id=c{i}&zone={'ab'[i % 2]}")
        assert status == 200
        own = doc["gateway"]["zone"]
        assert own == "ab"[i % 2]
        assert any(a["zone"] != own for a in doc["alternates"]), doc


def test_clients_without_a_zone_get_an_alternate_in_another_zone_too(make_app: Any) -> None:
    gateways = [{"id": f"a{i}", "address": f"127.0.0.1:{9000 + i}", "zone": "a"} for i in range(6)]
    gateways.append({"id": "b1", "address": "127.0.0.1:9100", "zone": "b"})
    app = make_app(gateways, zones=ZONES, dispatcher={"alternates": 1})
    primaries = Counter()
    for i in range(300):  # 192.0.2.1 is in no zone: the pool-wide choice, spread over zones
        status, doc = _dispatch(app, f"client_id=c{i}")
        assert status == 200
        zones = {doc["gateway"]["zone"], *(a["zone"] for a in doc["alternates"])}
        assert zones == {"a", "b"}, doc
        primaries[doc["gateway"]["zone"]] += 1
    assert primaries["a"] > 200  # the primary is still the policy's choice over the whole pool


def test_unknown_zone_hint_is_a_clear_400(zoned: Stack) -> None:
    status, doc = _dispatch(zoned, "client_id=x&zone=mars")
    assert status == 400 and doc["error"] == "bad_request"
    assert "unknown zone 'mars'" in doc["detail"] and "a, b" in doc["detail"]
    status, doc = _dispatch(zoned, "client_id=x&zone=a&zone=b")
    assert status == 400 and "more than once" in doc["detail"]


def test_zone_outage_and_spill_serve_from_the_next_zone(zoned: Stack) -> None:
    pool = zoned.pool
    for gid in ("a1", "a2"):  # zone a fills to the spill point (capacity 10,000)
        bring_up(pool, gid, connections=9_500)
    got = Counter(
        _dispatch(zoned, f"client_id=c{i}&zone=a")[1]["gateway"]["zone"] for i in range(50)
    )
    assert got["b"] >= 48, got  # at most one zone-size of stale verdicts
    assert pool.zone_counters.spilling == {"a": "b"}
    for gid in ("a1", "a2"):
        bring_up(pool, gid, connections=10)
    got = Counter(
        _dispatch(zoned, f"client_id=c{i}&zone=a")[1]["gateway"]["zone"] for i in range(50)
    )
    assert got["a"] >= 48, got
    for gid in ("a1", "a2"):  # zone a goes dark: its clients are served from b
        for _ in range(pool.gateways[gid].health.fall):
            pool.on_result(gid, ProbeResult(ok=False, detail="refused"))
    pool.rebuild()
    assert "a" in pool.zone_panic
    got = Counter(
        _dispatch(zoned, f"client_id=c{i}&zone=a")[1]["gateway"]["zone"] for i in range(50)
    )
    assert got == {"b": 50}


def test_without_zones_answers_are_unchanged(make_app: Any) -> None:
    """No [[zones]]: gateway zones and zone hints change nothing; the answer pieces are
    identical."""
    a = make_app([{k: v for k, v in g.items() if k != "zone"} for g in GATEWAYS])
    b = make_app(GATEWAYS)  # gateways labelled, but zones off
    assert a.pool.zones is None and b.pool.zones is None
    assert a.service._frags == b.service._frags and a.service._tail == b.service._tail
    for i in range(20):
        status, _, body = b.service.dispatch_bytes(
            f"client_id=c{i}&zone=mars".encode(), "198.51.100.1", []
        )
        assert status == 200 and b"zone" not in body
    assert Counter(
        json.loads(b.service.dispatch_bytes(f"client_id=c{i}".encode(), "198.51.100.1", [])[2])[
            "gateway"
        ]["id"][0]
        for i in range(400)
    ).keys() == {"a", "b"}


def test_c_hot_path_only_without_zones(make_config: Any) -> None:
    """Labelled gateways without [[zones]] keep the C path; with zones it is off, and says why."""
    from helpers import require_speedups

    require_speedups()
    for zones, path in (([], "c"), (ZONES, "python")):
        cfg = make_config(GATEWAYS, zones=zones)
        pool = Pool(cfg, rng=SplitMixRandom(7))  # the generator C shares
        bring_up(pool)
        app = Stack(cfg, pool, rng=random.Random(3))  # the real clock: C may answer
        assert app.service.hot_path == path, app.service.hot_path_reason()
        assert app.service.hot_path_reason() == ("" if path == "c" else "zones configured")
        status, _, body = app.service.dispatch_bytes(b"client_id=x", "198.51.100.1", [])
        assert status == 200 and (b'"zone":"a"' in body) == bool(zones)


# ------------------------------------------------------------------ admin, push and the pool view


async def test_admin_sets_a_zone_and_the_pool_shows_it(zoned: Stack, call_router: Any) -> None:
    r = await call_router(
        zoned,
        "POST",
        "/v1/gateways",
        token=ADMIN,
        json_doc={"id": "c1", "address": "127.0.0.1:9010", "zone": "b"},
    )
    assert r.status == 201 and r.json()["zone"] == "b"
    r = await call_router(zoned, "PATCH", "/v1/gateways/a1", token=ADMIN, json_doc={"zone": "b"})
    assert (
        r.status == 200 and r.json()["zone"] == "b" and zoned.pool.gateways["a1"].config.zone == "b"
    )
    r = await call_router(
        zoned, "PATCH", "/v1/gateways/a1", token=ADMIN, json_doc={"zone": "no spaces"}
    )
    assert r.status == 400 and "zone" in r.json()["detail"]
    r = await call_router(
        zoned, "PATCH", "/v1/gateways/a1", token=ADMIN, json_doc={"colour": "red"}
    )
    assert r.status == 400 and "'weight' and 'zone'" in r.json()["detail"]
    r = await call_router(zoned, "PATCH", "/v1/gateways/a1", json_doc={"zone": "a"})
    assert r.status == 401
    listing = (await call_router(zoned, "GET", "/v1/gateways")).json()
    assert {g["id"]: g["zone"] for g in listing["gateways"]} == {
        "a1": "b",
        "a2": "a",
        "b1": "b",
        "b2": "b",
        "c1": "b",
    }


async def test_push_heartbeat_carries_the_zone(make_app: Any, call_router: Any) -> None:
    app = make_app([], zones=ZONES, dispatcher={"register_unknown": True})
    doc = {
        "id": "p1",
        "state": "serving",
        "connections": 0,
        "capacity": 100,
        "address": "127.0.0.1:9300",
        "zone": "b",
    }
    for _ in range(2):
        assert (
            await call_router(app, "POST", "/v1/heartbeat", json_doc=doc, token=ADMIN)
        ).status == 204
    assert app.pool.gateways["p1"].config.zone == "b"
    assert (
        await call_router(app, "POST", "/v1/heartbeat", json_doc={**doc, "zone": "a"}, token=ADMIN)
    ).status == 204
    assert app.pool.gateways["p1"].config.zone == "a"
    no_zone = {
        k: v for k, v in doc.items() if k != "zone"
    }  # a gateway without --zone changes nothing
    assert (
        await call_router(app, "POST", "/v1/heartbeat", json_doc=no_zone, token=ADMIN)
    ).status == 204
    assert app.pool.gateways["p1"].config.zone == "a"
    r = await call_router(app, "POST", "/v1/heartbeat", json_doc={**doc, "zone": ""}, token=ADMIN)
    assert r.status == 400 and "zone" in r.json()["detail"]
    status, answer = _dispatch(app, "client_id=x&zone=a")
    assert status == 200 and answer["gateway"] == {
        "id": "p1",
        "host": "127.0.0.1",
        "port": 9300,
        "zone": "a",
    }


async def test_zone_metrics_and_listing(zoned: Stack, call_router: Any) -> None:
    bring_up(zoned.pool, "a1", "a2", connections=9_500)  # zone a at its spill point
    bring_up(zoned.pool, "b1", "b2", connections=1_000)
    for i in range(20):
        _dispatch(zoned, f"client_id=c{i}&zone=a")
    text = (await call_router(zoned, "GET", "/metrics")).body.decode()
    assert 'tcpdispatch_zone_dispatched_total{client_zone="a",gateway_zone="b"}' in text
    assert 'tcpdispatch_zone_held_connections{zone="a"} 19000.0' in text
    assert (
        'tcpdispatch_zone_spilling{zone="a"} 1.0' in text
        and 'tcpdispatch_zone_spilling{zone="b"} 0.0' in text
    )
    assert (
        'tcpdispatch_zone_headroom{zone="b"}' in text
        and "tcpdispatch_zone_spill_changes_total 1.0" in text
    )
    zones = (await call_router(zoned, "GET", "/v1/gateways")).json()["zones"]
    assert (
        zones["a"]["spilling_to"] == "b"
        and zones["a"]["held"] == 19_000
        and zones["a"]["gateways"] == 2
    )
    assert zones["b"]["spilling_to"] is None and 0.85 < zones["b"]["headroom"] < 0.9


async def test_no_zone_metrics_without_zones(make_app: Any, call_router: Any) -> None:
    app = make_app()
    text = (await call_router(app, "GET", "/metrics")).body.decode()
    assert "tcpdispatch_zone_" not in text
    assert "zones" not in (await call_router(app, "GET", "/v1/gateways")).json()
