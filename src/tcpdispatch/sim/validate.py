"""The simulator's side of the validation against the real benchmarks (``bench/sim_validate.py``).

* :func:`failover_model` — ``bench/failover.py`` on the testbed: 10,000 clients on
  3 gateways (capacity 6,000) behind one dispatcher, started at 1,000/s, the busiest
  gateway killed 4 s after the last one connected. On loopback the clients, the
  dispatcher and the gateways share 2 cores, so the model has no RTT and one
  machine-wide queue of ``reconnect_s`` per reconnect, measured separately.
* :func:`balance_model` — ``bench/balance.py``'s p2c rows: dispatch-only requests
  at the measured rate, gateways reporting 0 connections every 0.25 s each at its
  own phase (the benchmark's clients never connect).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from tcpdispatch.balancing.snapshot import BalancerSettings
from tcpdispatch.health.settings import HealthSettings
from tcpdispatch.sim.constants import testbed
from tcpdispatch.sim.engine import Engine
from tcpdispatch.sim.fleet import make_gateways
from tcpdispatch.sim.replica import Replica
from tcpdispatch.sim.run import quantile, summarize
from tcpdispatch.sim.scenarios import SCENARIOS, T0
from tcpdispatch.sim.world import SimConfig, World


def failover_model(
    reconnect_s: float,
    *,
    clients: int = 10_000,
    capacity: int = 6000,
    rate: float = 1000.0,
    settle_s: float = 4.0,
    seed: int = 1,
) -> dict[str, Any]:
    """Re-home times and shares the model predicts for bench/failover.py's run."""
    cfg = SimConfig(
        scenario="gateway-crash",
        clients=clients,
        gateways=3,
        replicas=1,
        zones=1,
        capacity=capacity,
        net=testbed(reconnect_s),
        offline_mean_s=0.0,
        seed=seed,
    )
    scenario = SCENARIOS["gateway-crash"]
    world = World(cfg, 30.0)
    world.start()
    # The loadgen connected client k at k / rate; the kill came settle_s after the last one.
    last = T0 - settle_s
    pop = world.pop
    for i in range(pop.n):
        pop.since[i] = last - (pop.n - 1 - i) / rate
    before: dict[str, int] = {}
    world.engine.at(T0 - 1e-6, lambda: before.update({g.id: g.held for g in world.gateways}))
    scenario.schedule(world)
    world.run()
    world.check_invariants()
    s = summarize(world).summary
    times = sorted(world.rehome)
    survivors = {g.id: g.held for g in world.gateways if g.state == "up"}
    return {
        "moved_clients": len(times),
        "time_to_pct_s": {
            "50": quantile(times, 0.5),
            "99": quantile(times, 0.99),
            "100": quantile(times, 1.0),
        },
        "before_kill": before,
        "survivors_end": survivors,
        "lost": s["lost"],
        "survivor_peak": {g.id: g.peak for g in world.gateways if g.state == "up"},
    }


def balance_model(
    weights: list[float], *, dispatches: int = 60_000, rate: float = 18_000.0, seed: int = 1
) -> list[float]:
    """Shares (%) of the primaries p2c answers over 3 gateways reporting 0 connections."""
    engine = Engine(seed)
    gateways = make_gateways(len(weights), 1, 10**9)
    for g, w in zip(gateways, weights):
        g.weight = w
    health = HealthSettings()
    rep = Replica(
        0,
        engine,
        gateways,
        zones=1,
        policy="p2c",
        decider="pool",
        alternates=2,
        report_every=1,
        service_s=0.0,
        health=health,
        balancing=BalancerSettings(),
    )
    rep.warm()
    end = dispatches / rate
    rep.start_probes(end + 1.0)
    counts: Counter[str] = Counter()

    def one() -> None:
        gws, _ = rep.dispatch(0)
        if gws:
            counts[gws[0].id] += 1

    engine.every(1.0 / rate, 0.0, end - 0.5 / rate, one)
    engine.run(end + 1.0)
    total = sum(counts.values())
    return [round(100 * counts[g.id] / total, 2) for g in gateways]


def shares(counts: dict[str, int]) -> list[float]:
    total = sum(max(0, v) for v in counts.values()) or 1
    return [round(100 * max(0, v) / total, 2) for _, v in sorted(counts.items())]


def with_seed(cfg: SimConfig, seed: int) -> SimConfig:
    return replace(cfg, seed=seed)
