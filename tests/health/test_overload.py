"""Overload protection: the pure hysteresis, and the snapshot rule that applies it to every
policy."""

from __future__ import annotations

import pytest

from tcpdispatch.balancing.snapshot import GatewayView, build_candidates
from tcpdispatch.health import HealthSettings
from tcpdispatch.health.overload import OverloadState, OverloadThresholds

T = OverloadThresholds()  # busy 0.9/0.7, lag 0.1/0.03 s, latency 0.25/0.1 s x2


def test_busy_enters_after_two_statuses_and_leaves_only_under_the_exit_threshold() -> None:
    s = OverloadState()
    assert not s.observe(T, 0.85, 0.01, 0.0)  # the 85 % worker is busy, not collapsing
    assert not s.observe(T, 0.97, 0.01, 0.0)  # one status: a blip so far
    assert s.observe(T, 0.97, 0.01, 0.0) and s.over and "busy 0.97" in s.reason
    assert (
        not s.observe(T, 0.8, 0.01, 0.0) and s.over
    )  # between exit and enter: stays (no flapping)
    assert s.observe(T, 0.5, 0.01, 0.0) and not s.over and "busy 0.50" in s.reason


def test_lag_alone_enters_a_starved_worker_but_one_stall_does_not() -> None:
    s = OverloadState()
    assert not s.observe(T, 0.0, 1.2, 0.0)  # the first status after a SIGSTOP carries the stall
    assert not s.observe(T, 0.0, 0.0, 0.0)
    assert not s.observe(T, 0.4, 0.15, 0.0)
    assert s.observe(T, 0.4, 0.15, 0.0) and "lag 150 ms" in s.reason
    assert not s.observe(T, 0.4, 0.05, 0.0)  # 50 ms: above the 30 ms exit
    assert s.observe(T, 0.4, 0.02, 0.0)


def test_one_late_status_is_a_blip_two_in_a_row_are_not() -> None:
    s = OverloadState()
    assert not s.observe(T, None, None, 0.3)
    assert not s.observe(T, None, None, 0.0)
    assert not s.observe(T, None, None, 0.3)
    assert s.observe(T, None, None, 0.4) and "2 statuses in a row" in s.reason
    assert not s.observe(T, None, None, 0.15)
    assert s.observe(T, None, None, 0.05) and not s.over


def test_settings_validate_and_carry_the_thresholds() -> None:
    t = HealthSettings(overload_busy=0.95, overload_busy_exit=0.6).overload_thresholds
    assert (t.busy, t.busy_exit, t.samples) == (0.95, 0.6, 2)
    with pytest.raises(ValueError, match="must not be below overload_busy_exit"):
        HealthSettings(overload_busy=0.8, overload_busy_exit=0.9)
    with pytest.raises(ValueError, match="overload_lag"):
        HealthSettings(overload_lag=0)
    with pytest.raises(ValueError, match="watch: must be true or false"):
        HealthSettings(watch=1)  # type: ignore[arg-type]


def view(gid: str, **kw: object) -> GatewayView:
    return GatewayView(id=gid, host="h", port=1, **kw)  # type: ignore[arg-type]


def test_overloaded_gateways_are_left_out_unless_all_are() -> None:
    snap = build_candidates([view("a", overloaded=True), view("b"), view("c", draining=True)], 0.0)
    assert [c.id for c in snap.candidates] == ["b"] and snap.overloaded == ("a",)
    snap = build_candidates([view("a", overloaded=True), view("b", overloaded=True)], 0.0)
    assert [c.id for c in snap.candidates] == ["a", "b"] and snap.overloaded == ()
