"""``round_robin``: nginx's smooth weighted round robin.

Every pick adds each usable gateway's weight to its ``current`` weight, takes
the gateway with the highest ``current`` (first in list order on a tie) and
subtracts the total weight from it (ngx_http_upstream_get_peer). Weights 5:1:1
give ``a a b a c a a`` rather than ``a a a a a b c``: the heavy gateway's turns
are spread out, which matters here because a burst of reconnects would
otherwise land on one gateway. Full and excluded gateways take no part in a
round (their ``current`` is left alone), as nginx skips down peers.

The ``current`` weights are the picker's own mutable state; they restart at 0
when the dispatcher swaps in a new snapshot. It needs no rng: the order is
deterministic.

Complexity: build O(n); pick O(n) (one pass over the pool), alternates
O(n log k). Fine up to a few hundred gateways; use p2c or random beyond.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Collection, Sequence

from tcpdispatch.balancing._validate import check_candidates
from tcpdispatch.balancing.base import Candidate, Picker, PickRequest


class RoundRobinPicker(Picker):
    """Smooth weighted round robin over the usable candidates."""

    name = "round_robin"

    def __init__(
        self, candidates: Sequence[Candidate], *, rng: random.Random | None = None
    ) -> None:
        super().__init__(candidates, rng=rng)
        check_candidates(self.candidates)
        self._current = [0.0] * len(self.candidates)

    def _choose(self, request: PickRequest, exclude: Collection[str]) -> Candidate | None:
        current = self._current
        total = 0.0
        best = -1
        for i, c in enumerate(self.candidates):
            if c.full or (exclude and c.id in exclude):
                continue
            current[i] += c.weight
            total += c.weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        current[best] -= total
        return self.candidates[best]

    def pick(self, request: PickRequest, k: int = 1) -> list[Candidate]:
        """As ``Picker.pick``; alternates are the gateways next in turn, without using their turn.

        Drawing the alternates through the round would give them turns (and
        skew the shares of the primaries) whenever k > 1.
        """
        first = self._choose(request, frozenset())
        if first is None:
            return []
        first.load.issued += 1
        if k <= 1:
            return [first]
        cands = self.candidates
        current = self._current
        nxt = (i for i, c in enumerate(cands) if c is not first and not c.full)
        best = heapq.nlargest(k - 1, nxt, key=lambda i: (current[i] + cands[i].weight, -i))
        return [first, *(cands[i] for i in best)]
