"""HealthState (rise/fall, flapping, passive reports) and PushTracker with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpdispatch.health import HealthState, PushTracker


def feed(state: HealthState, events: str) -> list[bool]:
    """Apply events: '+' active ok, '-' active failure, 'p' passive failure."""
    out = []
    for e in events:
        if e == "+":
            out.append(state.observe(True))
        elif e == "-":
            out.append(state.observe(False))
        else:
            out.append(state.passive_failure())
    return out


def test_starts_down_and_rises_after_rise_successes() -> None:
    s = HealthState(rise=2, fall=2)
    assert not s.up
    assert feed(s, "+") == [False]
    assert not s.up
    assert feed(s, "+") == [True]
    assert s.up
    assert feed(s, "++") == [False, False]


def test_falls_after_fall_consecutive_failures() -> None:
    s = HealthState(rise=2, fall=3, up=True)
    assert feed(s, "--") == [False, False]
    assert s.up
    assert feed(s, "-") == [True]
    assert not s.up
    assert feed(s, "-") == [False]


def test_a_success_resets_the_failure_streak_and_vice_versa() -> None:
    s = HealthState(rise=2, fall=2, up=True)
    feed(s, "-+-+-+")
    assert s.up
    s = HealthState(rise=2, fall=2, up=False)
    feed(s, "+-+-+-")
    assert not s.up


@pytest.mark.parametrize("start_up", [True, False])
def test_gateway_failing_every_other_probe_does_not_flap(start_up: bool) -> None:
    s = HealthState(rise=2, fall=2, up=start_up)
    changes = feed(s, "+-" * 200)
    assert not any(changes)
    assert s.up is start_up


def test_rise_and_fall_of_one_follow_every_probe() -> None:
    s = HealthState(rise=1, fall=1)
    assert feed(s, "+-+") == [True, True, True]


def test_passive_reports_alone_cannot_take_down_a_gateway_active_checks_pass() -> None:
    s = HealthState(rise=2, fall=2, up=True)
    for _ in range(50):
        assert feed(s, "pppp+") == [False] * 5
    assert s.up


def test_passive_report_counts_towards_fall_with_an_active_failure() -> None:
    s = HealthState(rise=2, fall=2, up=True)
    assert feed(s, "-p") == [False, True]
    assert not s.up
    s = HealthState(rise=2, fall=2, up=True)
    assert feed(s, "p-") == [False, True]
    assert not s.up


def test_passive_reports_cannot_hold_a_gateway_down() -> None:
    s = HealthState(rise=2, fall=2, up=False)
    # Clients keep reporting it while every active probe passes: it still comes up
    # after exactly `rise` successes.
    assert feed(s, "ppp+ppp+") == [False, False, False, False, False, False, False, True]
    assert s.up


def test_max_passive_lets_reports_alone_take_it_down_when_configured() -> None:
    s = HealthState(rise=2, fall=2, up=True, max_passive=2)
    assert feed(s, "pp") == [False, True]
    assert not s.up
    # ...but even then they cannot keep it down.
    assert feed(s, "pp+pp+") == [False, False, False, False, False, True]


def test_passive_failure_on_a_down_gateway_is_a_no_op() -> None:
    s = HealthState(rise=2, fall=2)
    assert s.passive_failure() is False
    assert s.failures == 0


def test_rejects_bad_thresholds() -> None:
    with pytest.raises(ValueError):
        HealthState(rise=0, fall=1)
    with pytest.raises(ValueError):
        HealthState(rise=1, fall=0)


@settings(max_examples=200, deadline=None)
@given(
    rise=st.integers(1, 4),
    fall=st.integers(1, 4),
    start_up=st.booleans(),
    prefix=st.text(alphabet="+-p", max_size=30),
    noise=st.lists(st.integers(0, 5), min_size=4, max_size=4),
)
def test_property_active_successes_always_win(
    rise: int, fall: int, start_up: bool, prefix: str, noise: list[int]
) -> None:
    """Whatever happened before, `rise` active successes with any passive noise between -> up."""
    s = HealthState(rise=rise, fall=fall, up=start_up)
    feed(s, prefix)
    events = "".join("p" * noise[i % len(noise)] + "+" for i in range(rise))
    feed(s, events)
    assert s.up


@settings(max_examples=200, deadline=None)
@given(rise=st.integers(1, 4), fall=st.integers(2, 4), events=st.text(alphabet="+p", max_size=60))
def test_property_passive_alone_never_downs_a_healthy_gateway(
    rise: int, fall: int, events: str
) -> None:
    s = HealthState(rise=rise, fall=fall, up=True)
    assert not any(feed(s, events))
    assert s.up


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_push_tracker_expiry_is_reported_once_and_clears_on_heartbeat() -> None:
    clock = FakeClock()
    t = PushTracker(3.0, clock=clock)
    assert not t.alive("g1")
    t.record("g1")
    t.record("g2")
    assert t.alive("g1") and "g1" in t
    clock.now += 3.0
    assert t.expired() == []  # exactly ttl old: still alive
    assert t.alive("g1")
    clock.now += 0.5
    t.record("g2")
    assert sorted(t.expired()) == ["g1"]
    assert t.expired() == []  # reported once per expiry
    assert not t.alive("g1") and t.alive("g2")
    t.record("g1")  # back
    assert t.alive("g1")
    clock.now += 3.1
    assert sorted(t.expired()) == ["g1", "g2"]
    assert t.last_seen("g1") == pytest.approx(1003.5)


def test_push_tracker_forget() -> None:
    clock = FakeClock()
    t = PushTracker(1.0, clock=clock)
    t.record("g1")
    t.forget("g1")
    t.forget("never-seen")
    clock.now += 5
    assert t.expired() == []
    assert not t.alive("g1") and t.last_seen("g1") is None


def test_push_tracker_rejects_bad_ttl() -> None:
    with pytest.raises(ValueError):
        PushTracker(0)


def test_with_fall_1_reports_alone_never_count() -> None:
    # Regression: with fall = 1 one unauthenticated report used to take the gateway down.
    s = HealthState(rise=1, fall=1, up=True)
    assert feed(s, "p" * 10 + "+" + "p" * 10) == [False] * 21
    assert s.up and s.failures == 0
    assert feed(s, "-") == [True]  # an active failure still does


def test_with_fall_2_one_report_counts_only_next_to_an_active_failure() -> None:
    s = HealthState(rise=1, fall=2, up=True)
    assert feed(s, "pppp+pppp+") == [False] * 10 and s.up
    assert feed(s, "-p") == [False, True]


@settings(max_examples=200, deadline=None)
@given(rise=st.integers(1, 4), fall=st.integers(1, 4), events=st.text(alphabet="+p", max_size=60))
def test_property_reports_alone_never_down_for_any_fall(rise: int, fall: int, events: str) -> None:
    s = HealthState(rise=rise, fall=fall, up=True)
    assert not any(feed(s, events)) and s.up
