"""Seams for decisions whose real modules are not on this branch yet.

The simulator asks two questions that the product will answer with its own code:

* **Zone choice** (issue 16): which zone's gateways may a dispatch from a client
  in zone Z use? Until ``tcpdispatch`` has zones, :class:`SimZones` answers with the
  simulator's own rule: the client's zone first; when that zone's pool is in panic
  (most of it down) or has nothing to give, the other zones in order (spill).
  Each replica keeps one real ``Pool`` per zone.
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
