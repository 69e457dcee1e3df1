"""From the dispatcher's view of its gateways to the candidates a picker chooses from.

``build_candidates(gateways, now, settings)`` is pure: the dispatcher calls it
whenever health, drain state, weights or capacity change (and at
``Snapshot.rebuild_at`` while a gateway ramps up), then builds a new picker
over ``Snapshot.candidates``. Load needs no rebuild: each candidate shares the
gateway's long-lived ``LoadCounter``.

Rules, in order:

1. Draining gateways (admin or self-reported) never get new clients, not even
   in panic. Neither do gateways with weight 0.
2. Panic (Envoy's panic threshold): if fewer than ``panic_threshold`` of the
   non-draining gateways are healthy, every non-draining gateway is handed out
   (unhealthy ones at their static weight): when most of the pool "fails" at
   once, the likelier story is that the health checker is the one cut off, and
   sending clients to all gateways beats refusing them all.
3. Overload (performance collapse, see ``health/overload.py``): an overloaded
   gateway gets no new clients, whatever the policy, unless every gateway
   that could be handed out is overloaded (then none is excluded: refusing
   everyone would protect nothing, and the capacity limits still hold).
4. Slow start: a gateway ``elapsed`` seconds after ``up_since`` (joined or
   recovered) gets ``weight * (min + (1 - min) * elapsed / slow_start_s)``,
   ``min`` = ``slow_start_min``.
5. Limit: ``floor(capacity * high_water)`` connections, capacity being the
   configured one or else the reported one; no capacity known -> no limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from tcpdispatch.balancing.base import Candidate, LoadCounter
from tcpdispatch.settings import setting, validate

# While a gateway ramps, the snapshot asks to be rebuilt this many times per
# slow-start window (a staircase close enough to the line, and cheap).
RAMP_STEPS = 20


@dataclass(frozen=True, slots=True)
class GatewayView:
    """One gateway as the dispatcher knows it, the input of ``build_candidates``."""

    id: str
    host: str
    port: int
    weight: float = 1.0  # static (configured or admin-set); 0 = take no new clients
    capacity: int | None = None  # configured; None -> use reported_capacity
    reported_capacity: int | None = None
    healthy: bool = True
    draining: bool = False  # admin-drained or reporting state "draining"
    up_since: float | None = (
        None  # joined or last recovered (same clock as ``now``); None = long ago
    )
    load: LoadCounter = field(default_factory=LoadCounter, compare=False)
    overloaded: bool = False  # performance collapse reported or seen (health/overload.py)


@dataclass(frozen=True, slots=True)
class BalancerSettings:
    """Pool-wide balancing knobs, the ``[balancing]`` config section (SettingError names a field).

    ``slow_start_s`` defaults to 10 s: long enough that a recovered gateway is not
    handed a whole reconnect storm in its first second (caches cold, JIT/TLS
    warm-up), short enough that a rolling restart of many gateways is not held
    back by the ramp (HAProxy's ``slowstart`` is commonly set to 10-60 s, Envoy's
    slow start window has no default; 10 s sits at the short end on purpose).
    """

    high_water: float = setting(
        1.0,
        gt=0,
        le=10,
        help="a gateway is not handed out once its load reaches "
        "`capacity x high_water` (e.g. 0.9 keeps 10 % headroom)",
    )
    slow_start_s: float = setting(
        10.0,
        ge=0,
        le=3600,
        unit="s",
        help="ramp window for a gateway that joins or recovers (0 = off)",
    )
    slow_start_min: float = setting(
        0.1, gt=0, le=1, help="weight fraction at the start of the ramp"
    )
    panic_threshold: float = setting(
        0.5,
        ge=0,
        le=1,
        help="if fewer than this fraction of the non-draining "
        "gateways are healthy, hand out all of them (0 = never)",
    )
    hash_epsilon: float = setting(
        0.25,
        gt=0,
        le=10,
        help="`consistent_hash` bound: no gateway above `(1 + epsilon) x` its weighted fair share",
    )
    load_floor: float = setting(
        0.1,
        gt=0,
        le=1,
        help="`load` policy: the lowest utilization a gateway is scored with (docs/policies.md)",
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The candidates for one picker, and why they are what they are."""

    candidates: tuple[Candidate, ...]
    panic: bool = False
    rebuild_at: float | None = None  # rebuild no later than this (a gateway is ramping up)
    healthy: int = 0  # healthy non-draining gateways
    serving: int = 0  # non-draining gateways (the panic denominator)
    draining: int = 0
    ramping: tuple[str, ...] = ()  # ids still in slow start
    overloaded: tuple[str, ...] = ()  # ids left out for overload


def slow_start_factor(elapsed: float, settings: BalancerSettings) -> float:
    """Weight multiplier ``elapsed`` seconds after a gateway came up (1.0 once ramped)."""
    window = settings.slow_start_s
    if window <= 0 or elapsed >= window:
        return 1.0
    lo = settings.slow_start_min
    return lo + (1.0 - lo) * max(elapsed, 0.0) / window


def _limit(g: GatewayView, high_water: float) -> int | None:
    capacity = g.capacity if g.capacity is not None else g.reported_capacity
    if capacity is None:
        return None
    # The 1e-9 keeps 0.29 * 100 = 28.999999999999996 from losing a slot.
    return max(0, math.floor(capacity * high_water + 1e-9))


def build_candidates(
    gateways: Iterable[GatewayView], now: float, settings: BalancerSettings | None = None
) -> Snapshot:
    """The candidates for a new picker (see the module docstring for the rules)."""
    settings = settings or BalancerSettings()
    pool = list(gateways)
    seen: set[str] = set()
    for g in pool:
        if g.id in seen:
            raise ValueError(f"duplicate gateway id {g.id!r}")
        seen.add(g.id)
        if not (g.weight >= 0 and math.isfinite(g.weight)):
            raise ValueError(f"gateway {g.id!r}: weight must be a number >= 0, got {g.weight!r}")

    serving = [g for g in pool if not g.draining]
    healthy = sum(1 for g in serving if g.healthy)
    panic = bool(serving) and healthy < settings.panic_threshold * len(serving)

    window = settings.slow_start_s
    step = window / RAMP_STEPS
    eligible = [g for g in serving if g.weight > 0 and (g.healthy or panic)]
    overloaded = tuple(g.id for g in eligible if g.overloaded)
    if len(overloaded) == len(eligible):
        overloaded = ()  # all of them: exclude none
    candidates: list[Candidate] = []
    ramping: list[str] = []
    rebuild_at: float | None = None
    for g in eligible:
        if overloaded and g.overloaded:
            continue
        factor = 1.0
        if g.healthy and g.up_since is not None:
            factor = slow_start_factor(now - g.up_since, settings)
            if factor < 1.0:
                ramping.append(g.id)
                due = min(g.up_since + window, now + step)
                rebuild_at = due if rebuild_at is None else min(rebuild_at, due)
        candidates.append(
            Candidate(
                id=g.id,
                host=g.host,
                port=g.port,
                weight=g.weight * factor,
                limit=_limit(g, settings.high_water),
                load=g.load,
                base_weight=g.weight,
            )
        )
    return Snapshot(
        candidates=tuple(candidates),
        panic=panic,
        rebuild_at=rebuild_at,
        healthy=healthy,
        serving=len(serving),
        draining=len(pool) - len(serving),
        ramping=tuple(ramping),
        overloaded=overloaded,
    )
