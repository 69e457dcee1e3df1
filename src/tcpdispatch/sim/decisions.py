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
  move? :class:`NoRebalancer` moves none (what this branch ships);
  ``--baseline recycle`` instead recycles connections by age (see
  ``Recycler``). When the planner lands, an adapter turning the replica's view into
  its ``GatewayLoad`` list and its ``ShedOrder``s into RECONNECTs plugs in here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tcpdispatch.balancing.base import Candidate, Picker, PickRequest
from tcpdispatch.balancing.zones import ZoneMap, ZoneRouter
from tcpdispatch.config import DEFAULT_SPILL_HEADROOM


class ZonePool(Protocol):
    """What :class:`RealZones` reads of one zone's pool (a ``Pool``)."""

    @property
    def picker(self) -> Picker: ...

    panic: bool


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
    """This branch: held connections move only when their gateway fails or drains."""

    def shed(self, now: float, held: Sequence[int], weights: Sequence[float]) -> dict[int, int]:
        return {}


@dataclass(frozen=True, slots=True)
class Recycler:
    """The ``recycle`` baseline: every connection is closed (RECONNECT) at ``max_age_s``, +-10 %."""

    max_age_s: float = 600.0
