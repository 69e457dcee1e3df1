"""One simulation run: build the world for a scenario, run it, summarize it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from math import isnan
from typing import Any

from tcpdispatch.sim.scenarios import SCENARIOS
from tcpdispatch.sim.world import SimConfig, World

JSON_FIELDS = (
    "scenario",
    "clients",
    "gateways",
    "replicas",
    "zones",
    "policy",
    "baseline",
    "rehomed_p50_s",
    "rehomed_p99_s",
    "rehomed_100_s",
    "lost",
    "peak_gateway_load_ratio",
    "balance_max_over_mean_end",
    "moves",
    "dispatch_peak_rps_per_replica",
    "wall_s",
)


@dataclass
class Result:
    """The summary (``summary`` holds exactly the issue's JSON fields) and the series for plots."""

    summary: dict[str, Any]
    series: list[dict[str, float]] = field(default_factory=list)
    per_gateway: list[list[int]] = field(default_factory=list)
    gateway_ids: list[str] = field(default_factory=list)
    capacity: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    world: World | None = None


def quantile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (q = 1.0 is the maximum), rounded to ms."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(q * len(sorted_values) + 0.999999) - 1))
    return round(sorted_values[k], 3)


def build(cfg: SimConfig) -> World:
    """The world for ``cfg.scenario`` with its events scheduled (ValueError on bad input)."""
    try:
        scenario = SCENARIOS[cfg.scenario]
    except KeyError:
        raise ValueError(
            f"unknown scenario {cfg.scenario!r}; valid: {', '.join(SCENARIOS)}"
        ) from None
    cfg.check()
    if cfg.zones < scenario.min_zones:
        raise ValueError(f"scenario {cfg.scenario} needs --zones >= {scenario.min_zones}")
    world = World(cfg, scenario.duration(cfg), scenario.extra_gateways(cfg))
    world.start()
    scenario.schedule(world)
    return world


def simulate(
    cfg: SimConfig, progress: Callable[[float, float], None] | None = None, keep_world: bool = False
) -> Result:
    """Run ``cfg`` to the end of its scenario; ``progress(now, end)`` now and then."""
    world = build(cfg)
    world.run(None if progress is None else (lambda now: progress(now, world.end)))
    return summarize(world, keep_world)


def summarize(world: World, keep_world: bool = False) -> Result:
    cfg, pop = world.cfg, world.pop
    times = sorted(world.rehome)
    live = [g for g in world.gateways if g.state == "up" and not g.draining]
    ratios = [g.held / g.weight for g in live]
    mean = sum(ratios) / len(ratios) if ratios else 0.0
    lost = sum(
        1
        for i in range(pop.n)
        if pop.online[i] and pop.gateway[i] < 0 and not isnan(pop.lost_at[i])
    )
    summary: dict[str, Any] = {
        "scenario": cfg.scenario,
        "clients": cfg.clients,
        "gateways": cfg.gateways,
        "replicas": cfg.replicas,
        "zones": cfg.zones,
        "policy": cfg.policy,
        "baseline": cfg.baseline,
        "rehomed_p50_s": quantile(times, 0.5),
        "rehomed_p99_s": quantile(times, 0.99),
        "rehomed_100_s": quantile(times, 1.0),
        "lost": lost,
        "peak_gateway_load_ratio": round(max(g.peak / g.capacity for g in world.gateways), 4),
        "balance_max_over_mean_end": round(max(ratios) / mean, 4) if mean else None,
        "moves": world.moves,
        "dispatch_peak_rps_per_replica": max((r.peak_rps() for r in world.replicas), default=0),
        "wall_s": None,
    }
    by_zone: dict[int, list[float]] = {}
    for g in live:
        by_zone.setdefault(g.zone, []).append(g.held / g.weight)
    # With zones, targets are per zone (clients stay in theirs): the worst zone's own max/mean.
    in_zone = [max(v) * len(v) / sum(v) for v in by_zone.values() if sum(v) > 0]
    extra = {
        "balance_in_zone_end": round(max(in_zone), 4) if in_zone else None,
        "connected_end": pop.connected(),
        "online_end": sum(pop.online),
        "failed_rounds": world.failed_rounds,
        "fallback_rounds": world.fallbacks,
        "events": world.engine.events,
        "refusals_503": sum(r.refusals for r in world.replicas),
        "shed_sent": world.shed_sent,
        "rebalance_rounds": sum(
            r.rebalancer.planner.rounds for r in world.replicas if r.rebalancer is not None
        ),
        "modelled_s": world.end,
    }
    return Result(
        summary,
        world.series,
        world.per_gateway_series,
        [g.id for g in world.gateways],
        cfg.per_gateway_capacity,
        extra,
        world if keep_world else None,
    )
