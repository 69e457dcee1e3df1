"""Seams for decisions whose real modules are not on this branch yet.

The simulator asks two questions that the product will answer with its own code:

* **Zone choice** (issue 16): which zone's gateways may a dispatch from a client
  in zone Z use? :class:`RealZones` answers with the product's own
  :class:`~tcpdispatch.balancing.zones.ZoneRouter` over the replica's per-zone pools
  (each replica keeps one real ``Pool`` per zone): the client's zone while it has room,
  else the other zones by headroom, the policy within the zone, panic per zone, the last
  alternate from another zone. The baselines' deciders (``least_conn`` twin, goim) keep
  :class:`SimZones`, the simulator's own rule: the client's zone first; when that zone's
  pool is in panic or has nothing to give, the other zones (spill).
* **Active rebalancing** (issue 13): which held connections should be asked to
  move? :class:`RealRebalancer` answers with the product's own code: each replica turns its
  pools into :class:`~tcpdispatch.rebalance.plan.GatewayLoad` values the way the dispatcher's
  loop does (``dispatcher.rebalancer.gateway_load``), ticks the real
  :class:`~tcpdispatch.rebalance.plan.Planner` (targets, donors, pacing, minimum session age,
  settle time, breaker), and only the replica holding the :class:`SimLease` sends its
  ``ShedOrder``s; every replica places moved clients with the real
  :func:`~tcpdispatch.rebalance.placement.place`. :class:`NoRebalancer` is the stand-in that
  moves none (kept for comparison); ``--baseline recycle`` recycles connections by age instead
  (see ``Recycler``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from tcpdispatch.balancing.base import Candidate, Picker, PickRequest
from tcpdispatch.balancing.snapshot import BalancerSettings
from tcpdispatch.balancing.zones import ZoneMap, ZoneRouter
from tcpdispatch.config import DEFAULT_SPILL_HEADROOM
from tcpdispatch.dispatcher.pool import Gateway
from tcpdispatch.dispatcher.rebalancer import gateway_load
from tcpdispatch.rebalance.placement import place
from tcpdispatch.rebalance.plan import GatewayLoad, Planner, ShedOrder
from tcpdispatch.rebalance.settings import RebalanceSettings


class ZonePool(Protocol):
    """What :class:`RealZones` reads of one zone's pool (a ``Pool``)."""

    @property
    def picker(self) -> Picker: ...

    panic: bool


class LoadPool(Protocol):
    """What :class:`RealRebalancer` reads of one zone's pool (a ``Pool``)."""

    gateways: dict[str, Gateway]
    panic: bool

    @property
    def balancing(self) -> BalancerSettings: ...


class ZoneChooser(Protocol):
    def order(self, client_zone: int, panicked: Sequence[bool], rng: random.Random) -> list[int]:
        """Zones to ask, best first, given which zone pools are in panic."""
        ...


@dataclass(frozen=True, slots=True)
class SimZones:
    """The simulator's stand-in for issue 16: own zone, then spill to the others (in random
    order, so a dark zone's clients spread over all the others instead of piling on the next)."""

    zones: int

    def order(self, client_zone: int, panicked: Sequence[bool], rng: random.Random) -> list[int]:
        own = client_zone % self.zones
        if self.zones == 1:
            return [own]
        rest = [(own + k) % self.zones for k in range(1, self.zones)]
        if not panicked[own]:
            return [own, *rest]
        rng.shuffle(rest)
        healthy = [z for z in rest if not panicked[z]]
        # Own zone mostly down: spill; if every zone is in panic, stay home (panic semantics).
        return [*healthy, own] if healthy else [own, *rest]


class RealZones:
    """Issue 16's zone choice: a :class:`ZoneRouter` over the replica's per-zone pools, rebuilt
    whenever one of them rebuilds (as the dispatcher rebuilds it with its snapshot). Zones are
    named ``z0``, ``z1``, ... and, as in the simulated fleet, no ``spill_to`` is configured: a
    zone without room spills to the others by headroom."""

    def __init__(self, zones: int, spill_headroom: float = DEFAULT_SPILL_HEADROOM) -> None:
        self.names = [f"z{z}" for z in range(zones)]
        self.spill_headroom = spill_headroom
        self._zone_map = ZoneMap(())
        self._built: tuple[int, ...] = ()
        self._router: ZoneRouter | None = None

    def router(self, pools: Sequence[ZonePool]) -> ZoneRouter:
        # A rebuild (or a restarted replica's new pools) publishes a new picker; the router holds
        # the old ones, so an id cannot be reused while it is compared.
        built = tuple(id(p.picker) for p in pools)
        if self._router is None or built != self._built:
            counters = self._router.counters if self._router is not None else None
            self._router = ZoneRouter(
                {n: (p.picker, p.panic) for n, p in zip(self.names, pools, strict=True)},
                zone_map=self._zone_map,
                declared=self.names,
                spill_to={},
                spill_headroom=self.spill_headroom,
                gateway_zone={},
                counters=counters,
            )
            self._built = built
        return self._router

    def pick(
        self, client_zone: int, pools: Sequence[ZonePool], request: PickRequest, k: int
    ) -> list[Candidate]:
        """The gateways for a client of ``client_zone``; when no zone can take it, the real
        dispatcher's pool-wide picker would decide: here each zone's own picker (in panic it hands
        out every gateway of its zone), the client's zone first."""
        own = client_zone % len(self.names)
        chosen = self.router(pools).pick(self.names[own], request, k)
        if chosen:
            return chosen
        for z in [own, *(i for i in range(len(pools)) if i != own)]:
            chosen = pools[z].picker.pick(request, k)
            if chosen:
                return chosen
        return []


class Rebalancer(Protocol):
    def shed(self, now: float, held: Sequence[int], weights: Sequence[float]) -> dict[int, int]:
        """Gateway index -> connections to ask to move now."""
        ...


class NoRebalancer:
    """The stand-in: held connections move only when their gateway fails or drains."""

    def shed(self, now: float, held: Sequence[int], weights: Sequence[float]) -> dict[int, int]:
        return {}


@dataclass(slots=True)
class SimLease:
    """The store's ``rebalance`` lease (``Store.lease``): held until it is not renewed for
    ``ttl`` seconds, so a crashed leader's successor takes over within about ``ttl``."""

    holder: int | None = None
    expires: float = 0.0

    def take(self, who: int, now: float, ttl: float) -> bool:
        if self.holder == who or self.holder is None or now >= self.expires:
            self.holder, self.expires = who, now + ttl
            return True
        return False


class RealRebalancer:
    """Issue 13's decision for one replica: the dispatcher loop's inputs and the real planner.

    :meth:`tick` does what ``dispatcher.rebalancer.Rebalancer.step`` does minus the I/O: the
    lease, the dispatch counts since the last tick, the pools as ``GatewayLoad`` values, the
    planner's tick; it returns the orders to send (the leader's only). The world answers each
    order with how many sessions the donor accepted (:meth:`shed_result`), as ``POST /shed``
    does. :meth:`place` is the dispatch path for a client that says which gateway it leaves.
    """

    def __init__(
        self,
        who: int,
        settings: RebalanceSettings,
        lease: SimLease,
        zone_names: Sequence[str],
        rng: random.Random,
    ) -> None:
        self.who = who
        self.settings = settings
        self.lease = lease
        self.zone_names = list(zone_names)
        self.rng = rng
        self.planner = Planner(settings)
        self.leader = False
        self.moves_placed = 0
        self._counts = (0, 0, 0)  # dispatched, unavailable, moves placed at the last tick

    def reset(self) -> None:
        """A restarted replica: a fresh planner (no round, no breaker history)."""
        self.planner = Planner(self.settings)
        self.leader = False

    def loads(self, pools: Sequence[LoadPool], now: float) -> list[GatewayLoad]:
        """Every zone pool's gateways as the planner sees them, tagged with their zone."""
        out: list[GatewayLoad] = []
        multi = len(pools) > 1
        for name, pool in zip(self.zone_names, pools, strict=True):
            for gw in pool.gateways.values():
                load = gateway_load(gw, pool.balancing, now)
                out.append(replace(load, zone=name) if multi else load)
        return out

    def tick(
        self, now: float, pools: Sequence[LoadPool], dispatched: int, unavailable: int
    ) -> tuple[ShedOrder, ...]:
        s = self.settings
        leader = s.mode != "off" and self.lease.take(self.who, now, s.lease_ttl_s)
        self.leader = leader
        placed = self.moves_placed
        d_ok, d_503 = dispatched - self._counts[0], unavailable - self._counts[1]
        arrivals = max(0, d_ok - (placed - self._counts[2]))
        self._counts = (dispatched, unavailable, placed)
        decision = self.planner.tick(
            now,
            self.loads(pools, now),
            leader=leader,
            panic=any(p.panic for p in pools),
            dispatched=d_ok,
            unavailable=d_503,
            arrivals=arrivals,
        )
        return decision.orders

    def shed_result(self, order: ShedOrder, accepted: int | None, now: float) -> None:
        self.planner.shed_result(order, accepted, now, "" if accepted is not None else "down")

    def place(self, candidates: Sequence[Candidate], leaving: str, k: int) -> list[Candidate]:
        """Gateways for a client leaving ``leaving``; empty: the picker decides."""
        p = self.planner
        chosen = place(candidates, p.goal, p.donors, leaving, k, self.rng)
        if chosen:
            self.moves_placed += 1
        return chosen


@dataclass(frozen=True, slots=True)
class Recycler:
    """The ``recycle`` baseline: every connection is closed (RECONNECT) at ``max_age_s``, +-10 %."""

    max_age_s: float = 600.0
