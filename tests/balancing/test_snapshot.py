"""build_candidates: drain, weight 0, health, panic, slow start, limits."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tcpdispatch.balancing import (
    BalancerSettings,
    GatewayView,
    LoadCounter,
    PickRequest,
    build_candidates,
    make_picker,
    slow_start_factor,
)

NOW = 1000.0


def gw(i: int, **kw) -> GatewayView:
    return GatewayView(id=f"g{i}", host="127.0.0.1", port=9000 + i, **kw)


def ids(snap) -> list[str]:
    return [c.id for c in snap.candidates]


def test_healthy_serving_gateways_become_candidates() -> None:
    load = LoadCounter(reported=5)
    snap = build_candidates([gw(0, load=load), gw(1, weight=2)], NOW)
    assert ids(snap) == ["g0", "g1"]
    assert snap.candidates[0].load is load  # shared, so reports need no rebuild
    assert snap.candidates[1].weight == 2
    assert (snap.panic, snap.rebuild_at, snap.ramping) == (False, None, ())
    assert (snap.healthy, snap.serving, snap.draining) == (2, 2, 0)


def test_draining_and_weight_zero_get_no_clients() -> None:
    snap = build_candidates([gw(0, draining=True), gw(1, weight=0), gw(2)], NOW)
    assert ids(snap) == ["g2"]
    assert snap.draining == 1


def test_unhealthy_are_left_out_above_the_panic_threshold() -> None:
    snap = build_candidates([gw(0), gw(1), gw(2, healthy=False), gw(3, healthy=False)], NOW)
    assert ids(snap) == ["g0", "g1"]  # 2 of 4 healthy is not below 0.5
    assert not snap.panic


def test_panic_hands_out_every_non_draining_gateway() -> None:
    pool = [
        gw(0),
        gw(1, healthy=False),
        gw(2, healthy=False),
        gw(3, healthy=False),
        gw(4, draining=True),
    ]
    snap = build_candidates(pool, NOW)
    assert snap.panic
    assert ids(snap) == ["g0", "g1", "g2", "g3"]  # never the draining one
    assert (snap.healthy, snap.serving) == (1, 4)


def test_panic_with_every_gateway_down() -> None:
    snap = build_candidates([gw(0, healthy=False), gw(1, healthy=False)], NOW)
    assert snap.panic and ids(snap) == ["g0", "g1"]


def test_panic_threshold_zero_disables_panic() -> None:
    snap = build_candidates([gw(0, healthy=False)], NOW, BalancerSettings(panic_threshold=0))
    assert not snap.panic and ids(snap) == []


def test_panic_threshold_is_configurable() -> None:
    pool = [gw(0), gw(1), gw(2, healthy=False), gw(3, healthy=False)]
    assert build_candidates(pool, NOW, BalancerSettings(panic_threshold=0.75)).panic


def test_all_draining_gives_an_empty_snapshot() -> None:
    snap = build_candidates([gw(0, draining=True), gw(1, draining=True, healthy=False)], NOW)
    assert ids(snap) == [] and not snap.panic
    assert make_picker("p2c", snap.candidates).pick(PickRequest()) == []


def test_slow_start_ramps_linearly_from_the_minimum() -> None:
    s = BalancerSettings(slow_start_s=30, slow_start_min=0.1)
    assert slow_start_factor(0, s) == pytest.approx(0.1)
    assert slow_start_factor(15, s) == pytest.approx(0.55)
    assert slow_start_factor(30, s) == 1.0
    assert slow_start_factor(-5, s) == pytest.approx(0.1)  # clock skew: start of the ramp
    assert slow_start_factor(0, BalancerSettings(slow_start_s=0)) == 1.0


S30 = BalancerSettings(slow_start_s=30)  # the arithmetic below assumes a 30 s ramp


def test_slow_start_in_the_snapshot_and_rebuild_deadline() -> None:
    pool = [gw(0, weight=2, up_since=NOW - 15), gw(1, weight=2, up_since=NOW - 100), gw(2)]
    snap = build_candidates(pool, NOW, S30)
    assert [c.weight for c in snap.candidates] == pytest.approx([1.1, 2, 1])
    assert snap.ramping == ("g0",)
    assert snap.rebuild_at == pytest.approx(NOW + 30 / 20)
    late = build_candidates(pool, NOW + 14.5, S30)  # the last step ends with the ramp
    assert late.rebuild_at == pytest.approx(NOW + 15)
    done = build_candidates(pool, NOW + 15, S30)
    assert done.rebuild_at is None and done.ramping == ()


def test_ramping_gateway_gets_its_reduced_share() -> None:
    # A gateway recovering 3 s ago has 0.1 + 0.9 * 3/30 = 0.19 of its weight.
    for policy in ("p2c", "random", "least_conn", "round_robin"):
        pool = [gw(0, up_since=NOW - 3), gw(1), gw(2)]
        snap = build_candidates(pool, NOW, S30)
        picker = make_picker(policy, snap.candidates, rng=random.Random(1))
        got = Counter(picker.pick(PickRequest())[0].id for _ in range(6000))
        assert abs(got["g0"] / 6000 - 0.19 / 2.19) < 0.015, (policy, got)


def test_unhealthy_in_panic_use_their_static_weight() -> None:
    pool = [gw(0, up_since=NOW), gw(1, healthy=False, up_since=NOW, weight=3), gw(2, healthy=False)]
    snap = build_candidates(pool, NOW)
    assert snap.panic
    assert [c.weight for c in snap.candidates] == pytest.approx([0.1, 3, 1])


def test_limit_is_capacity_times_high_water() -> None:
    pool = [
        gw(0, capacity=100, reported_capacity=50),  # configured wins
        gw(1, reported_capacity=50),
        gw(2),  # nothing known: no limit
        gw(3, capacity=0),
    ]
    snap = build_candidates(pool, NOW, BalancerSettings(high_water=0.29))
    assert [c.limit for c in snap.candidates] == [29, 14, None, 0]
    assert snap.candidates[3].full


def test_high_water_gateway_is_not_handed_out() -> None:
    load = LoadCounter(reported=80)
    snap = build_candidates([gw(0, capacity=100, load=load)], NOW, BalancerSettings(high_water=0.8))
    assert make_picker("p2c", snap.candidates).pick(PickRequest()) == []
    load.report(79)
    assert [c.id for c in make_picker("p2c", snap.candidates).pick(PickRequest())] == ["g0"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("high_water", 0),
        ("high_water", float("nan")),
        ("slow_start_s", -1),
        ("slow_start_min", 0),
        ("slow_start_min", 1.5),
        ("panic_threshold", 1.1),
        ("panic_threshold", -0.1),
    ],
)
def test_bad_settings_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        BalancerSettings(**{field: value})


def test_bad_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicate gateway id 'g0'"):
        build_candidates([gw(0), gw(0)], NOW)
    with pytest.raises(ValueError, match="weight"):
        build_candidates([gw(0, weight=-1)], NOW)


def test_inputs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        gw(0).healthy = False  # type: ignore[misc]
    with pytest.raises(AttributeError):
        BalancerSettings().high_water = 2  # type: ignore[misc]
