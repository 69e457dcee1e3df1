"""The pure rebalancing decision on a fake clock: targets, donors, pacing, hysteresis, breaker."""

from __future__ import annotations

import random

import pytest

from tcpdispatch.balancing.base import Candidate, LoadCounter
from tcpdispatch.rebalance.placement import place
from tcpdispatch.rebalance.plan import GatewayLoad, Planner, split_budget, targets
from tcpdispatch.rebalance.settings import RebalanceSettings

FAST = RebalanceSettings(
    interval_s=1.0,
    moves_per_s=200,
    per_donor_per_s=100,
    min_session_age_s=5,
    settle_s=2.0,
    breaker_cooldown_s=10.0,
    abs_threshold=50,
    rel_threshold=0.1,
)


def gws(*held: int, weights: tuple[float, ...] | None = None, **kw: object) -> list[GatewayLoad]:
    weights = weights or (1.0,) * len(held)
    return [GatewayLoad(f"g{i + 1}", h, w, **kw) for i, (h, w) in enumerate(zip(held, weights))]  # type: ignore[arg-type]


def simulate(
    planner: Planner,
    fleet: dict[str, int],
    *,
    weights: dict[str, float] | None = None,
    ticks: int = 60,
    states: dict[str, str] | None = None,
) -> tuple[list[int], dict[str, int]]:
    """Apply each order at once (moved clients land on the most under-target gateway)."""
    weights = weights or {}
    per_tick = []
    low = dict(fleet)
    for t in range(ticks):
        view = [
            GatewayLoad(g, n, weights.get(g, 1.0), state=(states or {}).get(g, "up"))
            for g, n in fleet.items()
        ]
        d = planner.tick(float(t), view)
        moved = 0
        for o in d.orders:
            planner.shed_result(o, o.count, float(t))
            for _ in range(o.count):
                fleet[o.gateway] -= 1
                goal = planner.goal
                dest = max(
                    (g for g in fleet if g not in planner.donors and g != o.gateway),
                    key=lambda g: goal[g] - fleet[g],
                )
                fleet[dest] += 1
            moved += o.count
        for g, n in fleet.items():
            low[g] = min(low[g], n)
        per_tick.append(moved)
    return per_tick, low


def test_targets_share_by_weight_and_respect_limits() -> None:
    assert targets(gws(1500, 1500, 0)) == {"g1": 1000.0, "g2": 1000.0, "g3": 1000.0}
    assert targets(gws(1000, 1000, 1000, weights=(2, 1, 1))) == {
        "g1": 1500.0,
        "g2": 750.0,
        "g3": 750.0,
    }
    capped = targets(
        [GatewayLoad("a", 900, 1, limit=100), GatewayLoad("b", 0, 1), GatewayLoad("c", 0, 1)]
    )
    assert capped == {"a": 100.0, "b": 400.0, "c": 400.0}
    # down gateways hold nothing countable; draining ones count (their clients land elsewhere) but
    # get 0
    t = targets(
        [
            GatewayLoad("a", 600, 1),
            GatewayLoad("b", 300, 1, state="draining"),
            GatewayLoad("c", 700, 1, state="down"),
            GatewayLoad("d", 0, 0),
        ]
    )
    assert t == {"a": 900.0, "b": 0.0, "c": 0.0, "d": 0.0}


def test_donor_needs_both_thresholds() -> None:
    p = Planner(RebalanceSettings(abs_threshold=50, rel_threshold=0.1))
    p.tick(0.0, gws(1040, 960))  # +40: under the absolute threshold
    assert not p.donors and p.round is None
    p.tick(1.0, [GatewayLoad("a", 160, 1), GatewayLoad("b", 40, 1)])  # +60 but 60% relative: donor
    assert p.donors == {"a"}
    big = Planner(RebalanceSettings(abs_threshold=50, rel_threshold=0.1))
    big.tick(0.0, gws(10_080, 9_920))  # +80 absolute, 0.8% relative: not a donor
    assert not big.donors


def test_sheds_exactly_the_excess_paced_and_converges() -> None:
    p = Planner(FAST)
    fleet = {"g1": 1500, "g2": 1500, "g3": 0}
    per_tick, low = simulate(p, fleet)
    assert fleet == {"g1": 1000, "g2": 1000, "g3": 1000}
    assert sum(per_tick) == 1000  # the minimum: exactly the excess
    assert max(per_tick) <= 200  # fleet budget
    assert low["g1"] >= 1000 and low["g2"] >= 1000  # no donor below its target
    assert p.round is None and p.rounds == 1


def test_weight_change_converges_to_new_shares() -> None:
    p = Planner(FAST)
    fleet = {"g1": 1000, "g2": 1000, "g3": 1000}
    per_tick, low = simulate(p, fleet, weights={"g1": 2.0}, ticks=30)
    # doubling g1 makes g2 and g3 donors of 250 each, and only those 500 move
    assert fleet == {"g1": 1500, "g2": 750, "g3": 750}
    assert sum(per_tick) == 500 and low["g2"] == 750 and low["g3"] == 750


def test_per_donor_cap_and_pending_moves_are_not_asked_twice() -> None:
    p = Planner(FAST)
    view = gws(3000, 0, 0)
    d = p.tick(0.0, view)
    assert [(o.gateway, o.count) for o in d.orders] == [("g1", 100)]  # per-donor cap 100/s
    assert d.orders[0].min_age_s == 5 and d.orders[0].window_s == 1.0
    p.shed_result(d.orders[0], 100, 0.0)
    # nothing moved yet: the 100 in flight count against the excess, a new 100 is asked
    d = p.tick(1.0, view)
    assert [o.count for o in d.orders] == [100]
    assert p.in_flight() == 200


def test_hysteresis_keeps_shedding_to_target_then_stops() -> None:
    p = Planner(
        RebalanceSettings(
            abs_threshold=50,
            rel_threshold=0.1,
            stop_within=0.01,
            settle_s=0,
            moves_per_s=10,
            per_donor_per_s=10,
        )
    )
    fleet = {"a": 1200, "b": 800}  # target 1000: a is a donor (+200)
    for t in range(40):
        d = p.tick(float(t), [GatewayLoad(g, n) for g, n in fleet.items()])
        for o in d.orders:
            fleet["a"] -= o.count
            fleet["b"] += o.count
    # it went on past the start threshold (+50) down to within 1% of target
    assert 1000 <= fleet["a"] <= 1010 and fleet["a"] + fleet["b"] == 2000
    assert p.round is None
    # within the start band a new round does not start
    q = Planner(RebalanceSettings(abs_threshold=50, rel_threshold=0.1))
    q.tick(0.0, [GatewayLoad("a", 1040), GatewayLoad("b", 960)])
    assert q.round is None


def test_min_age_shortfall_is_not_a_failure() -> None:
    p = Planner(FAST)
    d = p.tick(0.0, gws(1500, 500))
    order = d.orders[0]
    assert p.shed_result(order, 3, 0.0) is None  # only 3 sessions old enough
    assert p.moves_requested == 3 and not p.breaker.open


def test_breaker_opens_on_gateway_failure_and_resumes_after_cooldown() -> None:
    p = Planner(FAST)
    p.tick(0.0, gws(1500, 1500, 0))
    d = p.tick(
        1.0, [GatewayLoad("g1", 1500), GatewayLoad("g2", 1500, state="down"), GatewayLoad("g3", 0)]
    )
    assert p.breaker.open and not d.orders
    assert any("g2 went down" in e for e in d.events)
    assert p.in_flight() == 200  # still on their way: counted, never asked for again
    later = [GatewayLoad("g1", 1500), GatewayLoad("g2", 0, state="down"), GatewayLoad("g3", 0)]
    assert not p.tick(5.0, later).orders  # still cooling down
    d = p.tick(11.5, later)
    assert not p.breaker.open and any("resuming" in e for e in d.events)
    assert d.orders and d.orders[0].gateway == "g1"


@pytest.mark.parametrize(
    "kw, cause",
    [
        ({"panic": True}, "panic"),
        ({"dispatched": 80, "unavailable": 20}, "refused"),
    ],
)
def test_breaker_opens_on_panic_and_error_rate(kw: dict[str, object], cause: str) -> None:
    p = Planner(FAST)
    d = p.tick(0.0, gws(1500, 1500, 0), **kw)  # type: ignore[arg-type]
    assert p.breaker.open and not d.orders and any(cause in e for e in d.events)
    # few dispatches say nothing
    q = Planner(FAST)
    q.tick(0.0, gws(1500, 1500, 0), dispatched=5, unavailable=5)
    assert not q.breaker.open
    # at start-up, before any gateway was ever seen up, panic is not trouble
    s = Planner(FAST)
    s.tick(0.0, gws(0, 0, 0, state="down"), panic=True)
    assert not s.breaker.open


def test_breaker_opens_when_moved_clients_do_not_reappear() -> None:
    p = Planner(FAST)
    d = p.tick(0.0, gws(3000, 0, 0))
    for o in d.orders:
        p.shed_result(o, o.count, 0.0)
    # the 100 left g1 but never arrived anywhere
    d = p.tick(2.5, gws(2900, 0, 0))
    assert p.breaker.open and any("did not reappear" in e for e in d.events)


def test_failed_order_opens_breaker() -> None:
    p = Planner(FAST)
    d = p.tick(0.0, gws(1500, 500))
    event = p.shed_result(d.orders[0], None, 0.0, "HTTP 403")
    assert event and "did not accept" in event and p.breaker.open and p.moves_requested == 0


def test_slow_start_recipient_is_filled_at_its_ramp() -> None:
    p = Planner(FAST)
    d = p.tick(
        0.0, [GatewayLoad("a", 1500), GatewayLoad("b", 1500), GatewayLoad("c", 0, ramp=0.25)]
    )
    assert sum(o.count for o in d.orders) == 50  # 200/s x 0.25


def test_manual_mode_waits_for_trigger_and_off_does_nothing() -> None:
    m = Planner(RebalanceSettings(mode="manual"))
    assert not m.tick(0.0, gws(1500, 1500, 0)).orders
    m.trigger()
    d = m.tick(1.0, gws(1500, 1500, 0))
    assert d.orders and any("round 1 started" in e for e in d.events)
    off = Planner(RebalanceSettings(mode="off"))
    off.trigger()
    assert not off.tick(0.0, gws(1500, 1500, 0)).orders


def test_not_leader_and_paused_send_nothing() -> None:
    p = Planner(FAST)
    assert not p.tick(0.0, gws(1500, 1500, 0), leader=False).orders
    p.paused = True
    assert not p.tick(1.0, gws(1500, 1500, 0)).orders
    p.paused = False
    assert p.tick(2.0, gws(1500, 1500, 0)).orders


def test_draining_gateways_are_not_donors_and_shrink_the_room() -> None:
    p = Planner(FAST)
    d = p.tick(
        0.0, [GatewayLoad("a", 1000), GatewayLoad("b", 0), GatewayLoad("c", 1000, state="draining")]
    )
    assert not d.orders  # c's 1000 will fill b; a is at target 1000


def test_events_are_logged_once() -> None:
    p = Planner(FAST)
    first = p.tick(0.0, gws(1500, 1500, 0))
    assert sum("started" in e for e in first.events) == 1
    again = p.tick(1.0, gws(1500, 1500, 0))
    assert not any("started" in e for e in again.events)


def test_split_budget() -> None:
    assert split_budget(100, {"a": 500, "b": 500}, 1000) == {"a": 50, "b": 50}
    assert split_budget(100, {"a": 10, "b": 500}, 1000) == {"a": 2, "b": 98}
    assert split_budget(100, {"a": 10, "b": 20}, 1000) == {"a": 10, "b": 20}
    assert split_budget(100, {"a": 500, "b": 500}, 30) == {"a": 30, "b": 30}
    assert sum(split_budget(7, {"a": 5, "b": 5, "c": 5}, 99).values()) == 7


def test_settings_validate() -> None:
    with pytest.raises(ValueError, match="mode"):
        RebalanceSettings(mode="sometimes")
    with pytest.raises(ValueError, match="moves_per_s"):
        RebalanceSettings(moves_per_s=0)


def _cand(gid: str, current: int, limit: int | None = None) -> Candidate:
    return Candidate(gid, "127.0.0.1", 1, 1.0, limit, LoadCounter(reported=current))


def test_place_goes_to_recipients_by_room_never_donor_or_leaving() -> None:
    cands = [_cand("a", 1500), _cand("b", 1500), _cand("c", 0), _cand("d", 900)]
    goal = {"a": 1000.0, "b": 1000.0, "c": 1000.0, "d": 1000.0}
    rng = random.Random(1)
    counts = {"c": 0, "d": 0}
    for _ in range(1100):
        chosen = place(cands, goal, frozenset({"a"}), "b", 3, rng)
        assert chosen[0].id in counts
        assert "a" not in [c.id for c in chosen] and "b" not in [c.id for c in chosen]
        counts[chosen[0].id] += 1
    # issued tickets count against the room: c fills to 1000, d to 1000, then the least loaded
    assert abs(counts["c"] - 1000) <= 60 and abs(counts["d"] - 100) <= 60


def test_place_without_recipients_uses_least_loaded_non_donor() -> None:
    cands = [_cand("a", 1500), _cand("b", 1000), _cand("c", 1010, limit=1010)]
    goal = {"a": 1000.0, "b": 1000.0, "c": 1000.0}
    chosen = place(cands, goal, frozenset({"a"}), "x", 3, random.Random(0))
    assert [c.id for c in chosen] == ["b"]  # c is full, a is a donor
    assert place([_cand("a", 1)], goal, frozenset(), "a", 2, random.Random(0)) == []


def test_no_round_while_the_held_total_is_moving() -> None:
    p = Planner(FAST)  # settle_s 2
    p.tick(0.0, gws(300, 300, 300))
    d = p.tick(1.0, gws(1000, 600, 300))  # a ramp: clients arriving by the hundred
    assert p.round is None and not d.orders
    assert sum("settle" in e for e in d.events) == 1
    assert not any("settle" in e for e in p.tick(1.5, gws(1500, 900, 300)).events)  # logged once
    for t in (2.0, 3.0, 4.0):
        d = p.tick(t, gws(1500, 900, 300))
    assert p.round is not None and d.orders  # steady for settle_s: the round starts


def test_moves_stop_being_in_flight_once_the_donor_lost_them() -> None:
    p = Planner(FAST)
    d = p.tick(0.0, gws(3000, 0, 0))
    p.shed_result(d.orders[0], d.orders[0].count, 0.0)
    assert p.in_flight() == 100
    d = p.tick(0.5, gws(2900, 100, 0))  # all 100 left g1 (and landed)
    assert p.in_flight() == sum(o.count for o in d.orders) == 100  # only the new batch


def test_leaving_sessions_count_where_they_go() -> None:
    # g1 holds 1500 of which 500 are already moving (make-before-break: also counted on g3)
    view = [GatewayLoad("g1", 1500, leaving=500), GatewayLoad("g2", 1000), GatewayLoad("g3", 1000)]
    assert targets(view) == {"g1": 1000.0, "g2": 1000.0, "g3": 1000.0}
    p = Planner(FAST)
    assert not p.tick(0.0, view).orders and not p.donors


def test_no_round_while_clients_are_being_dispatched() -> None:
    p = Planner(FAST)
    d = p.tick(0.0, gws(1500, 1500, 0), dispatched=400, arrivals=400)  # a ramp under way
    assert p.round is None and not d.orders
    for t in (1.0, 2.0, 3.0):
        d = p.tick(t, gws(1500, 1500, 0), dispatched=3, arrivals=3)
    assert p.round is not None and d.orders


def test_clients_on_their_way_keep_their_share() -> None:
    p = Planner(FAST)
    p.tick(0.0, gws(1500, 1500, 0))
    assert p.round is not None and p.round.total == 3000
    # 200 chosen to move have left the donors' settled counts but not reached g3 yet
    p.tick(
        0.5,
        [
            GatewayLoad("g1", 1500, leaving=100),
            GatewayLoad("g2", 1500, leaving=100),
            GatewayLoad("g3", 0),
        ],
    )
    assert p.goal == {
        "g1": 1000.0,
        "g2": 1000.0,
        "g3": 1000.0,
    }  # not 933: nobody sheds for them twice


def test_round_waits_for_clients_on_their_way() -> None:
    p = Planner(FAST)
    p.tick(0.0, gws(1500, 500))
    assert p.round is not None
    # donors are done shedding, but 100 sessions are still leaving: the round stays open
    p.tick(10.0, [GatewayLoad("g1", 1100, leaving=100), GatewayLoad("g2", 900)])
    assert p.round is not None
    d = p.tick(11.0, gws(1000, 1000))
    assert p.round is None and any("done" in e for e in d.events)
    # and none starts while a gateway still reports sessions leaving (a drain's, say)
    q = Planner(FAST)
    q.tick(0.0, [GatewayLoad("g1", 1500, leaving=10), GatewayLoad("g2", 500)])
    assert q.round is None
