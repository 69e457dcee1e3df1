"""Weighted sampling shared by the random-based policies (``random``, ``p2c``, ``load``).

Walker/Vose alias table: O(n) to build once per snapshot, O(1) per draw with a
single ``rng.random()`` call, so a draw costs the same over 10 or 10,000
gateways. Candidates that cannot take a client (full or excluded) are rejected
and redrawn a bounded number of times; only when that keeps failing (most of
the pool full, or one gateway holding nearly all the weight) do we fall back to
an O(n) scan over the eligible candidates, which is exact.
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_right
from collections.abc import Collection, Sequence
from itertools import accumulate

from tcpdispatch.balancing._validate import check_candidates
from tcpdispatch.balancing.base import Candidate, Picker, PickRequest

# Rejection draws before the exact O(n) fallback. With a fraction f of the
# weight unusable, the fallback runs with probability f**ATTEMPTS.
ATTEMPTS = 8

# ``Picker.c_policy`` codes: the drawing rules tcpdispatch._speedups implements as twins of
# the pickers below (same draws from the same generator, so the same picks).
C_TWO_CHOICES = 0  # two weight-drawn candidates, the lower load per weight wins (P2CPicker)
C_ONE_DRAW = 1  # one weight-drawn candidate (RandomPicker)


def build_alias(weights: Sequence[float]) -> tuple[list[float], list[int]]:
    """Vose's alias table for ``weights`` (all > 0): (probability, alias) per slot."""
    n = len(weights)
    total = float(sum(weights))
    scaled = [w * n / total for w in weights]
    prob = [1.0] * n
    alias = list(range(n))
    small = [i for i, s in enumerate(scaled) if s < 1.0]
    large = [i for i, s in enumerate(scaled) if s >= 1.0]
    while small and large:
        s = small.pop()
        g = large.pop()
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = scaled[g] + scaled[s] - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    # Leftovers (float rounding) keep probability 1: they are their own alias.
    return prob, alias


def eligible(candidates: Sequence[Candidate], exclude: Collection[str]) -> list[int]:
    """Indexes of the candidates that are neither full nor excluded (O(n))."""
    return [i for i, c in enumerate(candidates) if not c.full and c.id not in exclude]


def weighted_index(
    candidates: Sequence[Candidate], indexes: Sequence[int], rng: random.Random
) -> int:
    """One of ``indexes`` drawn by candidate weight (O(len(indexes)))."""
    cum = list(accumulate(candidates[i].weight for i in indexes))
    pos = bisect_right(cum, rng.random() * cum[-1])
    return indexes[min(pos, len(indexes) - 1)]


class WeightedSamplingPicker(Picker):
    """Base for policies that draw candidates in proportion to their weight."""

    def __init__(
        self, candidates: Sequence[Candidate], *, rng: random.Random | None = None
    ) -> None:
        super().__init__(candidates, rng=rng)
        check_candidates(self.candidates)
        self._n = len(self.candidates)
        prob, alias = build_alias([c.weight for c in self.candidates]) if self._n else ([], [])
        # Flat arrays rather than lists of boxed numbers: a draw then touches one
        # cache line per table instead of chasing a pointer to a scattered object,
        # which is most of what makes a draw over 10,000 gateways dearer than over 10.
        self._prob = array("d", prob)
        self._alias = array("q", alias)

    @property
    def alias_table(self) -> tuple[array[float], array[int]]:
        """(probability, alias) per candidate slot, as
        drawn by ``_draw`` (read by the C hot path)."""
        return self._prob, self._alias

    def _draw(self, exclude: Collection[str], avoid: int = -1) -> int:
        """Index of a weight-drawn usable candidate other than ``avoid``, or -1 after ATTEMPTS."""
        n = self._n
        if n == 0:
            return -1
        rand = self.rng.random
        prob = self._prob
        cands = self.candidates
        for _ in range(ATTEMPTS):
            u = rand() * n
            i = int(u)
            if i >= n:  # rand()*n can round up to n for large n
                i = n - 1
            if u - i >= prob[i]:
                i = self._alias[i]
            if i == avoid:
                continue
            c = cands[i]
            if c.full or (exclude and c.id in exclude):
                continue
            return i
        return -1

    def _draw_exact(self, exclude: Collection[str], avoid: int = -1) -> int:
        """Like ``_draw`` but exact, by an O(n) scan; -1 when nothing is usable."""
        idx = [i for i in eligible(self.candidates, exclude) if i != avoid]
        if not idx:
            return -1
        return weighted_index(self.candidates, idx, self.rng)

    def _draw_one(self, exclude: Collection[str], avoid: int = -1) -> int:
        """``_draw``, falling back to ``_draw_exact`` when the rejection draws keep failing."""
        i = self._draw(exclude, avoid)
        return i if i >= 0 else self._draw_exact(exclude, avoid)

    def _draw_two(self, exclude: Collection[str]) -> tuple[Candidate, Candidate | None] | None:
        """Two distinct usable candidates drawn by weight; the second is None when only one
        is usable, and the whole is None when none is."""
        a = self._draw_one(exclude)
        if a < 0:
            return None
        b = self._draw_one(exclude, avoid=a)
        return self.candidates[a], (self.candidates[b] if b >= 0 else None)


class TwoChoicePicker(WeightedSamplingPicker):
    """Weighted power of two choices: subclasses only say which of two draws is better."""

    def _better(self, a: Candidate, b: Candidate) -> bool:
        """True when ``a`` should be taken over ``b`` (ties should favour ``a``)."""
        raise NotImplementedError

    def _choose(self, request: PickRequest, exclude: Collection[str]) -> Candidate | None:
        pair = self._draw_two(exclude)
        if pair is None:
            return None
        a, b = pair
        return a if b is None or self._better(a, b) else b
