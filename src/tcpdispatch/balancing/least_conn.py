"""``least_conn``: the gateway with the fewest connections per unit of weight.

Scans every candidate for the lowest ``load.current / weight``; ties are broken
uniformly at random (reservoir sampling over the tied ones), so an empty pool
is not filled in list order.

Complexity: build O(n) (input checks only); pick O(n) — loads change under
the picker (reports and issued tickets), so no ordered structure could stay
valid without locking.

Use it with one dispatcher and fresh load. With several replicas or stale
reports every replica sends all its requests to the same "least loaded"
gateway until the next report (herding); p2c avoids that.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

from tcpdispatch.balancing._validate import check_candidates
from tcpdispatch.balancing.base import Candidate, Picker, PickRequest


class LeastConnPicker(Picker):
    """Weighted least connections, random among ties."""

    name = "least_conn"

    def __init__(
        self, candidates: Sequence[Candidate], *, rng: random.Random | None = None
    ) -> None:
        super().__init__(candidates, rng=rng)
        check_candidates(self.candidates)

    def _choose(self, request: PickRequest, exclude: Collection[str]) -> Candidate | None:
        rand = self.rng.random
        best: Candidate | None = None
        best_ratio = 0.0
        ties = 0
        for c in self.candidates:
            if exclude and c.id in exclude:
                continue
            if c.full:
                continue
            load = c.load.current
            ratio = load / c.weight
            if best is None or ratio < best_ratio:
                best, best_ratio, ties = c, ratio, 1
            elif ratio == best_ratio:
                ties += 1
                if rand() * ties < 1.0:
                    best = c
        return best
