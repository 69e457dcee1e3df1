"""The scenarios: what happens to the fleet, and when (modelled seconds).

Every scenario starts from a fleet long in service (clients placed, replicas warm)
and lets 10 s pass before its event, then runs long enough for the effect to
settle (``tail`` seconds after the last event).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from tcpdispatch.sim.fleet import SimGateway
from tcpdispatch.sim.world import SimConfig, World

T0 = 10.0


@dataclass(frozen=True)
class Scenario:
    name: str
    help: str
    duration: Callable[[SimConfig], float]
    schedule: Callable[[World], None]
    extra_gateways: Callable[[SimConfig], int] = lambda cfg: 0
    min_zones: int = 1


def _busiest(world: World) -> int:
    return max(range(world.cfg.gateways), key=lambda k: (world.gateways[k].held, -k))


def _crash(world: World) -> None:
    world.engine.at(T0, lambda: world.crash(world.gateways[_busiest(world)]))


def _zone_outage(world: World) -> None:
    def dark() -> None:
        for g in world.gateways:
            if g.zone == 0 and g.state == "up":
                world.go_dark(g)

    world.engine.at(T0, dark)


def _scale_out(world: World) -> None:
    def add() -> None:
        for g in world.gateways[world.cfg.gateways :]:
            world.add_gateway(g)

    world.engine.at(T0, add)


def _weight_change(world: World) -> None:
    n = max(1, world.cfg.gateways // 10)

    def change() -> None:
        for g in world.gateways[:n]:
            world.set_weight(g, 2.0)

    world.engine.at(T0, change)


def wave_size(cfg: SimConfig) -> int:
    return max(1, math.ceil(cfg.gateways / 5))


def _wave_period(cfg: SimConfig) -> float:
    return cfg.drain_window_s + cfg.net.restart_s + 5.0


def _rolling(world: World) -> None:
    cfg = world.cfg
    size = wave_size(cfg)
    for w, first in enumerate(range(0, cfg.gateways, size)):
        batch = world.gateways[first : first + size]
        world.engine.at(T0 + w * _wave_period(cfg), _drain_all, world, batch)


def _drain_all(world: World, batch: list[SimGateway]) -> None:
    for g in batch:
        world.drain(g)


def _dispatcher_outage(world: World) -> None:
    def down() -> None:
        for r in world.replicas:
            r.crash()

    def up() -> None:
        for r in world.replicas:
            r.restart()

    world.engine.at(T0, down)
    world.engine.at(T0 + 5.0, lambda: world.crash(world.gateways[_busiest(world)]))
    world.engine.at(T0 + 60.0, up)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "steady",
            "churn only: sessions end and start (mean 30 min online, 1 min offline)",
            lambda cfg: 120.0,
            lambda w: None,
        ),
        Scenario(
            "gateway-crash", "the busiest gateway is killed at t=10 s", lambda cfg: 70.0, _crash
        ),
        Scenario(
            "zone-outage",
            "zone 0 goes dark (packets dropped) at t=10 s",
            lambda cfg: 100.0,
            _zone_outage,
            min_zones=2,
        ),
        Scenario(
            "scale-out",
            "10 % more gateways join at t=10 s",
            lambda cfg: 130.0,
            _scale_out,
            extra_gateways=lambda cfg: max(1, cfg.gateways // 10),
        ),
        Scenario(
            "rolling-restart",
            "gateways drained (30 s window) and restarted, 20 % at a time",
            lambda cfg: T0 + math.ceil(cfg.gateways / wave_size(cfg)) * _wave_period(cfg) + 30.0,
            _rolling,
        ),
        Scenario(
            "dispatcher-outage",
            "every replica down from t=10 s to t=70 s (restarted "
            "fresh); the busiest gateway crashes at t=15 s",
            lambda cfg: 130.0,
            _dispatcher_outage,
        ),
        Scenario(
            "weight-change",
            "10 % of the gateways get weight 2 at t=10 s",
            lambda cfg: 130.0,
            _weight_change,
        ),
    )
}
