"""Picker contract shared by every balancing policy.

The dispatcher keeps one mutable ``LoadCounter`` per gateway (it outlives
picker swaps) and, whenever health, weights or reported load change, builds
an immutable list of ``Candidate`` (see ``snapshot.build_candidates``) and a
new picker over it. The dispatch hot path only calls ``picker.pick(request)``:
synchronous, no locks, no I/O.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class LoadCounter:
    """Live load of one gateway as this dispatcher sees it.

    ``current`` = connections in the gateway's last report + tickets this
    dispatcher issued for it since that report.
    """

    reported: int = 0
    issued: int = 0
    utilization: float | None = None  # 0..1 as reported (CPU or the gateway's own load figure)
    headroom: int | None = None  # slots left per the last agent reply; ``issued`` counts against it

    @property
    def current(self) -> int:
        return self.reported + self.issued

    def report(
        self, connections: int, utilization: float | None = None, *, headroom: int | None = None
    ) -> None:
        """A fresh status report replaces the estimate."""
        self.reported = connections
        self.issued = 0
        self.headroom = headroom
        if utilization is not None:
            self.utilization = utilization


@dataclass(frozen=True, slots=True)
class Candidate:
    """One gateway as a picker sees it (immutable apart from its shared ``load``)."""

    id: str
    host: str
    port: int
    weight: float  # effective weight (static weight x slow-start factor), > 0
    limit: int | None  # most connections it may hold (capacity x high-water), None = unbounded
    load: LoadCounter = field(compare=False)
    base_weight: float | None = None  # static weight before slow start; None = same as ``weight``

    @property
    def full(self) -> bool:
        load = self.load
        if self.limit is not None and load.reported + load.issued >= self.limit:
            return True
        return load.headroom is not None and load.issued >= load.headroom


@dataclass(frozen=True, slots=True)
class PickRequest:
    """What a policy may key on."""

    client_id: str = ""
    client_ip: str = ""


class Picker(ABC):
    """Chooses gateways from one immutable snapshot.

    Subclasses implement ``_choose``; this base handles alternates, full
    gateways and the issued-ticket counter. ``rng`` is injectable so tests are
    deterministic.
    """

    name: str = ""
    keyed: bool = (
        False  # reads the PickRequest; False lets the caller pass one shared empty request
    )
    ordered_alternates: bool = False  # alternates come in a meaningful order (the ring walk)
    # The C twin of this picker's ``_choose`` (a code from balancing._sampling, read by the
    # dispatcher's C hot path); None: no twin, the Python path answers. A subclass that changes
    # ``_choose`` or ``_better`` must set it back to None.
    c_policy: int | None = None
    # Constructor keyword -> the BalancerSettings field ([balancing] key) it is fed from.
    options: tuple[tuple[str, str], ...] = ()

    def __init__(
        self, candidates: Sequence[Candidate], *, rng: random.Random | None = None
    ) -> None:
        self.candidates: tuple[Candidate, ...] = tuple(candidates)
        self.rng = rng or random.Random()

    @abstractmethod
    def _choose(self, request: PickRequest, exclude: frozenset[str] | set[str]) -> Candidate | None:
        """One candidate that is not full and not in ``exclude``, or None."""

    def choose(
        self, request: PickRequest, exclude: frozenset[str] | set[str] = frozenset()
    ) -> Candidate | None:
        """One candidate not full and not in ``exclude``,
        counting no ticket (an extra alternate)."""
        return self._choose(request, exclude)

    def pick(self, request: PickRequest, k: int = 1) -> list[Candidate]:
        """The chosen gateway followed by up to ``k - 1`` distinct alternates.

        Empty when no gateway can take the client (all full or none up). The
        primary's issued counter is incremented.
        """
        first = self._choose(request, frozenset())
        if first is None:
            return []
        first.load.issued += 1
        out = [first]
        if k > 1:
            exclude = {first.id}
            for _ in range(k - 1):
                alt = self._choose(request, exclude)
                if alt is None:
                    break
                out.append(alt)
                exclude.add(alt.id)
        return out


PickerFactory = Callable[..., Picker]
