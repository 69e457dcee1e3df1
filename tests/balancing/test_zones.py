"""The zone module on its own: address -> zone by longest prefix, and the zone choice."""

from __future__ import annotations

import ipaddress
import logging
import random

import pytest

from tcpdispatch.balancing.base import Candidate, LoadCounter, PickRequest
from tcpdispatch.balancing.p2c import P2CPicker
from tcpdispatch.balancing.zones import ZoneMap, ZoneRouter

NET = ipaddress.ip_network


def test_zone_map_longest_prefix_wins_and_unknown_is_none() -> None:
    zm = ZoneMap(
        [
            ("a", [NET("10.0.0.0/8"), NET("2001:db8::/32")]),
            ("b", [NET("10.1.0.0/16")]),
            ("c", [NET("192.0.2.7/32")]),
        ]
    )
    assert zm.zone_of("10.2.3.4") == "a"
    assert zm.zone_of("10.1.3.4") == "b"
    assert zm.zone_of("192.0.2.7") == "c"
    assert zm.zone_of("192.0.2.8") is None
    assert zm.zone_of("2001:db8::1") == "a"
    assert zm.zone_of("::ffff:10.1.0.1") == "b"  # IPv4-mapped, as a dual-stack socket reports it
    assert zm.zone_of("not an address") is None
    assert zm.zone_of("") is None
    assert not ZoneMap([])


def _cands(prefix: str, n: int, limit: int | None = 100) -> list[Candidate]:
    return [
        Candidate(f"{prefix}{i}", "127.0.0.1", 9000 + i, 1.0, limit, LoadCounter())
        for i in range(n)
    ]


def _router(
    zones: dict[str, list[Candidate]],
    *,
    spill_to: dict[str, list[str]] | None = None,
    panic: set[str] | None = None,
    spill_headroom: float = 0.1,
) -> ZoneRouter:
    rng = random.Random(1)
    pickers = {z: (P2CPicker(c, rng=rng), z in (panic or set())) for z, c in zones.items()}
    gz = {c.id: z for z, cs in zones.items() for c in cs}
    return ZoneRouter(
        pickers,
        zone_map=ZoneMap([]),
        declared=list(zones),
        spill_to=spill_to or {},
        spill_headroom=spill_headroom,
        gateway_zone=gz,
    )


def test_client_zone_hint_must_be_declared() -> None:
    r = _router({"a": _cands("a", 2), "b": _cands("b", 2)})
    assert r.client_zone("a", "1.2.3.4") == ("a", None)
    zone, problem = r.client_zone("mars", "1.2.3.4")
    assert (
        zone is None
        and problem is not None
        and "unknown zone 'mars'" in problem
        and "a, b" in problem
    )
    assert r.client_zone(None, "1.2.3.4") == (None, None)


def test_served_from_its_zone_with_an_alternate_in_another() -> None:
    r = _router({"a": _cands("a", 2, limit=10_000), "b": _cands("b", 2)})
    for _ in range(200):
        chosen = r.pick("a", PickRequest(), 3)
        assert chosen[0].id.startswith("a")
        assert any(c.id.startswith("b") for c in chosen[1:])
        assert len({c.id for c in chosen}) == 3
    assert r.counters.dispatched == {("a", "a"): 200}


def test_spills_at_the_threshold_in_spill_to_order_and_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b, c = _cands("a", 2), _cands("b", 2), _cands("c", 2)
    r = _router({"a": a, "b": b, "c": c}, spill_to={"a": ["c"]})
    for g in a:
        g.load.report(91)  # 9 % free: not above spill_headroom 0.1
    caplog.set_level(logging.INFO, "tcpdispatch.zones")
    picks = [r.pick("a", PickRequest(), 1)[0].id for _ in range(20)]
    assert all(p.startswith("c") for p in picks[2:]), (
        picks
    )  # the verdict is at most one zone-size stale
    assert r.counters.spilling == {"a": "c"}
    assert sum("zone a spills over to zone c" in m for m in caplog.messages) == 1
    for g in a:
        g.load.report(88)  # 12 % free: above 0.1 but not above 0.1 + RETURN_BAND: no flapping
    assert all(r.pick("a", PickRequest(), 1)[0].id.startswith("c") for _ in range(20))
    for g in a:
        g.load.report(50)
    picks = [r.pick("a", PickRequest(), 1)[0].id for _ in range(20)]
    assert all(p.startswith("a") for p in picks[2:]), picks
    assert r.counters.spilling == {}
    assert sum("zone a serves its own clients again" in m for m in caplog.messages) == 1


def test_without_spill_to_the_zone_with_most_headroom_takes_over() -> None:
    a, b, c = _cands("a", 2), _cands("b", 2), _cands("c", 2)
    for g in b:
        g.load.report(60)
    r = _router({"a": a, "b": b, "c": c})
    for g in a:
        g.load.report(100)
    picks = [r.pick("a", PickRequest(), 1)[0].id for _ in range(10)]
    assert all(p.startswith("c") for p in picks[2:]), picks


def test_zone_without_gateways_or_in_panic_spills() -> None:
    r = _router({"a": [], "b": _cands("b", 2)})
    assert r.pick("a", PickRequest(), 1)[0].id.startswith("b")
    r = _router({"a": _cands("a", 2), "b": _cands("b", 2)}, panic={"a"})
    assert all(r.pick("a", PickRequest(), 1)[0].id.startswith("b") for _ in range(10))


def test_below_threshold_everywhere_any_free_slot_in_order_then_nothing() -> None:
    a, b = _cands("a", 1, limit=10), _cands("b", 1, limit=10)
    a[0].load.report(9)
    b[0].load.report(10)
    r = _router({"a": a, "b": b})
    assert (
        r.pick("a", PickRequest(), 2)[0].id == "a0"
    )  # 10 % free is not above 0.1, but it is a slot
    assert r.pick("a", PickRequest(), 2) == []  # now a is full too: the caller falls back


def test_unknown_capacity_counts_as_room() -> None:
    r = _router({"a": _cands("a", 2, limit=None), "b": _cands("b", 2)})
    assert all(r.pick("a", PickRequest(), 1)[0].id.startswith("a") for _ in range(10))
    assert r.describe()["a"]["headroom"] == 1.0


def test_a_moved_client_lands_in_its_zone_or_the_zone_it_leaves() -> None:
    r = _router({"a": _cands("a", 2), "b": _cands("b", 2)})
    assert {c.id for c in r.for_move(None, "a0")} == {"a0", "a1"}
    assert {c.id for c in r.for_move("b", "a0")} == {"b0", "b1"}
    assert r.for_move(None, "gone") == ()


def test_zone_hint_from_the_query() -> None:
    r = _router({"a": _cands("a", 1), "b&c": _cands("b", 1)})
    assert r.hint("client_id=x&zone=a") == ("a", None)
    assert r.hint("zone=b%26c&client_id=x") == ("b&c", None)  # percent-encoded, as the SDK sends it
    assert r.hint("client_id=x") == (None, None)
    assert r.hint("client_id=x&zone=mars") == ("mars", None)  # judged (400) by client_zone
    assert r.hint("zone=a&zone=b") == (None, "zone given more than once")
    assert r.hint("zone=a%2") == (None, "zone has a malformed percent-escape")
    assert r.hint("zone=%ff") == (None, "zone is not valid UTF-8 after percent-decoding")
