"""Deciders for the baselines users would pick instead of tcpdispatch's p2c.

Both run over the candidates of the replica's real ``Pool`` (so health, drain,
weights and the load counters come from the real code) but choose differently:

* :class:`LeastConnTwin` — the rule of ``balancing.least_conn.LeastConnPicker``
  (lowest ``(reported + issued) / weight``, uniform among ties, full ones skipped),
  kept in a heap so a pick costs O(log n) instead of the real picker's O(n) scan;
  ``tests/sim/test_baselines.py`` checks it hands out the same counts as the real picker.
* :class:`GoimDecider` — goim's ``internal/logic/balancer.go`` (``NodeAddrs``):
  score = ``fixed + round((w/W - 0.5 * conns/C) * C)`` clamped to [1, 2^20], the
  5 best in order, the first one's count + 1. It knows no capacity.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence

from tcpdispatch.balancing.base import Candidate

GOIM_MAX_NODES = 5
GOIM_MIN_WEIGHT = 1
GOIM_MAX_WEIGHT = 1 << 20


class _LazyHeap:
    """Min-heap of candidates on a key that changes; stale entries are skipped on pop."""

    def __init__(self, candidates: Sequence[Candidate], rng: random.Random) -> None:
        self.rng = rng
        self.by_id = {c.id: c for c in candidates}
        self.heap: list[tuple[float, float, str]] = []
        for c in candidates:
            self.heap.append((self.key(c), rng.random(), c.id))
        heapq.heapify(self.heap)

    def key(self, c: Candidate) -> float:
        return c.load.current / c.weight

    def touch(self, gid: str) -> None:
        c = self.by_id.get(gid)
        if c is not None:
            heapq.heappush(self.heap, (self.key(c), self.rng.random(), gid))
            if len(self.heap) > 4 * len(self.by_id) + 64:
                self.heap = [(self.key(c), self.rng.random(), c.id) for c in self.by_id.values()]
                heapq.heapify(self.heap)

    def smallest(self, k: int, skip_full: bool) -> list[Candidate]:
        """Up to ``k`` distinct current entries, smallest key first (left in the heap)."""
        out: list[Candidate] = []
        kept: list[tuple[float, float, str]] = []
        seen: set[str] = set()
        heap = self.heap
        while heap and len(out) < k:
            entry = heapq.heappop(heap)
            c = self.by_id[entry[2]]
            if entry[2] in seen or entry[0] != self.key(c):
                continue  # stale (a newer entry exists) or duplicate
            seen.add(entry[2])
            kept.append(entry)
            if skip_full and c.full:
                continue
            out.append(c)
        for entry in kept:
            heapq.heappush(heap, entry)
        return out


class LeastConnTwin:
    """``least_conn`` over the pool's candidates in O(log n) per pick."""

    def __init__(self, candidates: Sequence[Candidate], rng: random.Random) -> None:
        self.heap = _LazyHeap(candidates, rng)

    def touch(self, gid: str) -> None:
        self.heap.touch(gid)

    def pick(self, k: int) -> list[Candidate]:
        out = self.heap.smallest(k, skip_full=True)
        if out:
            out[0].load.issued += 1
            self.heap.touch(out[0].id)
        return out


class GoimDecider:
    """goim's weighted top-5 over the pool's candidates
    (counts from its last 10 s report + picks)."""

    def __init__(self, candidates: Sequence[Candidate], rng: random.Random) -> None:
        self.rng = rng
        groups: dict[float, list[Candidate]] = {}
        for c in candidates:
            groups.setdefault(c.base_weight or c.weight, []).append(c)
        self.groups = {w: _ConnHeap(cs, rng) for w, cs in groups.items()}
        self.group_of = {c.id: c.base_weight or c.weight for c in candidates}
        self.total_weight = sum(w * len(cs) for w, cs in groups.items())
        self.last = {c.id: c.load.current for c in candidates}
        self.total_conns = sum(self.last.values())

    def touch(self, gid: str) -> None:
        w = self.group_of.get(gid)
        if w is not None:
            c = self.groups[w].by_id[gid]
            self.total_conns += c.load.current - self.last[gid]
            self.last[gid] = c.load.current
            self.groups[w].touch(gid)

    def pick(self, k: int) -> list[Candidate]:
        total = self.total_conns
        scored: list[tuple[float, float, Candidate]] = []
        for w, heap in self.groups.items():
            for c in heap.smallest(GOIM_MAX_NODES, skip_full=False):
                scored.append(
                    (
                        -_goim_weight(w, c.load.current, self.total_weight, total),
                        self.rng.random(),
                        c,
                    )
                )
        scored.sort(key=lambda s: (s[0], s[1]))
        out = [s[2] for s in scored[: max(k, 1)]]
        if out:
            out[0].load.issued += 1
            self.touch(out[0].id)
        return out


class _ConnHeap(_LazyHeap):
    def key(self, c: Candidate) -> float:
        return float(c.load.current)


def _goim_weight(fixed: float, conns: int, total_weight: float, total_conns: int) -> float:
    """goim's ``calcuateWeight`` (region gain 1)."""
    if total_conns <= 0:
        return 0.0
    diff = fixed / total_weight - conns / total_conns * 0.5
    multiple = diff * total_conns
    floor = math.floor(multiple)
    current = fixed + floor if floor - multiple >= -0.5 else fixed + math.ceil(multiple)
    if diff < 0:
        return max(current, GOIM_MIN_WEIGHT)
    return min(current, GOIM_MAX_WEIGHT)
