"""Where a client that was asked to move goes: a gateway below its target, never back to a donor.

Pure: the dispatcher calls :func:`place` from the dispatch path with the current
picker's candidates, the targets and donors of the last planner tick and the
gateway the client says it leaves. Every replica can answer it (the targets are
computed from the status every replica pulls itself), so a moved client may ask
any dispatcher.

The primary is drawn at random in proportion to each recipient's room
(``target - current``, ``current`` counting the tickets this dispatcher issued since
the last report), so recipients fill evenly and none is pushed past its target by
a burst of arrivals between two reports. Alternates are the other recipients by
room, then the other gateways that are neither donors nor the one being left,
least loaded against target first.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from tcpdispatch.balancing.base import Candidate


def place(
    candidates: Sequence[Candidate],
    goal: Mapping[str, float],
    donors: frozenset[str] | set[str],
    leaving: str,
    k: int,
    rng: random.Random,
) -> list[Candidate]:
    """Primary and up to ``k - 1`` alternates for a moving client; empty when no gateway fits.

    The primary's issued counter is incremented, as :meth:`Picker.pick` does.
    """
    usable = [c for c in candidates if c.id != leaving and c.id not in donors and not c.full]
    if not usable:
        return []
    rooms = [(c, goal.get(c.id, 0.0) - c.load.current) for c in usable]
    recipients = [(c, r) for c, r in rooms if r >= 1.0]
    if recipients:
        total = sum(r for _, r in recipients)
        x = rng.random() * total
        first = recipients[-1][0]
        for c, r in recipients:
            x -= r
            if x < 0:
                first = c
                break
    else:  # nobody is below target (the plan is stale): the least loaded against target
        first = min(rooms, key=lambda cr: (_ratio(cr[0], goal), cr[0].id))[0]
    first.load.issued += 1
    if k <= 1:
        return [first]
    rest = [c for c in usable if c is not first]
    rest.sort(key=lambda c: (_ratio(c, goal), c.id))
    return [first, *rest[: k - 1]]


def _ratio(c: Candidate, goal: Mapping[str, float]) -> float:
    t = goal.get(c.id, 0.0)
    return c.load.current / t if t > 0 else float("inf")


__all__ = ["place"]
