"""Simulator invariants at small sizes: nobody lost or counted twice, capacity holds,
determinism."""

from __future__ import annotations

import json

import pytest

from tcpdispatch.sim.run import JSON_FIELDS, build, simulate, summarize
from tcpdispatch.sim.scenarios import SCENARIOS
from tcpdispatch.sim.world import BASELINES, SimConfig

SMALL: dict[str, int] = {"clients": 900, "gateways": 6, "replicas": 2, "zones": 3}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_scenario_keeps_every_client_once_and_within_capacity(scenario: str) -> None:
    world = build(SimConfig(scenario=scenario, seed=3, **SMALL))
    checked = 0
    # Check mid-run (right after the scenario's event) and at the end, not only at the end.
    for until in (12.0, 25.0, world.end):
        world.engine.run(until)
        world.check_invariants()
        checked += 1
    r = summarize(world)
    assert checked == 3
    assert r.summary["lost"] == 0
    assert r.summary["peak_gateway_load_ratio"] <= 1.0
    assert r.extra["connected_end"] == r.extra["online_end"]


@pytest.mark.parametrize("baseline", [b for b in BASELINES if b != "none"])
def test_baselines_keep_the_invariants_through_a_crash(baseline: str) -> None:
    world = build(SimConfig(scenario="gateway-crash", baseline=baseline, seed=4, **SMALL))
    world.engine.run(world.end)
    world.check_invariants()
    assert summarize(world).summary["lost"] == 0


def test_capacity_holds_when_the_fleet_is_nearly_full() -> None:
    # 1,000 clients on 4 x 300 slots; one gateway dies: the 3 left have 900 slots for ~970 online.
    world = build(
        SimConfig(
            scenario="gateway-crash", clients=1000, gateways=4, replicas=2, capacity=300, seed=5
        )
    )
    world.engine.run(world.end)
    world.check_invariants()
    r = summarize(world)
    assert r.summary["peak_gateway_load_ratio"] == 1.0
    assert all(g.held <= g.capacity for g in world.gateways)
    # Those who found no room are still trying (503 + Retry-After), not dropped from the books.
    assert r.extra["refusals_503"] > 0
    assert r.extra["connected_end"] + r.summary["lost"] <= r.extra["online_end"]


def test_same_seed_same_json_and_another_seed_differs() -> None:
    cfg = SimConfig(scenario="gateway-crash", seed=11, **SMALL)
    a, b = simulate(cfg).summary, simulate(cfg).summary
    assert list(a) == list(JSON_FIELDS)
    assert json.dumps(a) == json.dumps(b)
    c = simulate(SimConfig(scenario="gateway-crash", seed=12, **SMALL)).summary
    assert json.dumps(c) != json.dumps(a)


def test_crash_rehomes_every_client_of_the_dead_gateway_within_seconds() -> None:
    r = simulate(SimConfig(scenario="gateway-crash", clients=3000, gateways=3, replicas=1, seed=2))
    s = r.summary
    # A third of ~97 % online; all back; loss_delay spreads them over 1 s (full jitter).
    assert 900 < s["moves"] < 1100
    assert s["lost"] == 0
    assert 0.3 < s["rehomed_p50_s"] < 1.0 < s["rehomed_100_s"] < 2.0
    assert s["balance_max_over_mean_end"] < 1.05


def test_dark_zone_is_noticed_by_heartbeats_and_spills_to_the_other_zones() -> None:
    world = build(SimConfig(scenario="zone-outage", seed=6, **SMALL))
    world.engine.run(world.end)
    s = summarize(world).summary
    assert s["lost"] == 0
    # Clients notice a dark gateway after 2 missed pongs at 10 s (20-30 s).
    assert 20.0 <= s["rehomed_p50_s"] <= 31.0
    zone0 = [g for g in world.gateways if g.zone == 0]
    assert all(g.held == 0 for g in zone0)


def test_static_random_never_uses_gateways_added_later() -> None:
    world = build(SimConfig(scenario="scale-out", baseline="static-random", seed=7, **SMALL))
    world.engine.run(world.end)
    new = world.gateways[SMALL["gateways"] :]
    assert new and all(g.held == 0 for g in new)
    world2 = build(SimConfig(scenario="scale-out", seed=7, **SMALL))
    world2.engine.run(world2.end)
    assert sum(g.held for g in world2.gateways[SMALL["gateways"] :]) > 0


def test_dispatcher_outage_falls_back_to_cache_and_static_list() -> None:
    r = simulate(SimConfig(scenario="dispatcher-outage", seed=8, **SMALL))
    assert r.extra["fallback_rounds"] > 0
    assert r.summary["lost"] == 0
    assert r.summary["moves"] > 0  # the gateway that crashed during the outage: its clients moved


def test_bad_input_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        build(SimConfig(scenario="nope"))
    with pytest.raises(ValueError, match="zones"):
        build(SimConfig(scenario="zone-outage", zones=1))
    with pytest.raises(ValueError, match="baseline"):
        build(SimConfig(baseline="nope"))
    with pytest.raises(ValueError, match="cannot exceed"):
        build(SimConfig(gateways=2, zones=3))
