"""``random``: weighted random choice.

Each pick draws a gateway with probability weight / total weight from an alias
table built once per snapshot.

Complexity: build O(n); pick O(1) expected (one alias draw, redrawn when the
gateway is full or excluded); O(n) only when ATTEMPTS redraws in a row hit
unusable gateways (most of the pool full).

Ignores load entirely, so shares follow the weights exactly in expectation,
whatever the (possibly stale) reports say; capacity limits still apply.
"""

from __future__ import annotations

from collections.abc import Collection

from tcpdispatch.balancing._sampling import C_ONE_DRAW, WeightedSamplingPicker
from tcpdispatch.balancing.base import Candidate, PickRequest


class RandomPicker(WeightedSamplingPicker):
    """Weighted random over the usable candidates."""

    name = "random"
    c_policy = C_ONE_DRAW

    def _choose(self, request: PickRequest, exclude: Collection[str]) -> Candidate | None:
        i = self._draw_one(exclude)
        return self.candidates[i] if i >= 0 else None
