"""The discrete-event core: one heap of timed callbacks on modelled time.

No wall clock, no asyncio, no sockets: ``now`` only moves when the next event is
popped, and every random draw comes from generators seeded from one integer, so a
run is a pure function of its inputs and seed.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any


class Engine:
    """Events are ``(time, sequence, callback, args)``;
    ties run in the order they were scheduled."""

    def __init__(self, seed: int) -> None:
        self.now = 0.0
        self.seed = seed
        self.events = 0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0

    def rng(self, name: str) -> random.Random:
        """An independent generator for one part of the model (same seed + name -> same stream)."""
        return random.Random(f"{self.seed}:{name}")

    def clock(self) -> float:
        """The modelled time, as the injected ``clock`` of the real code."""
        return self.now

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` at modelled time ``when`` (never before ``now``)."""
        heapq.heappush(self._heap, (max(when, self.now), self._seq, fn, args))
        self._seq += 1

    def after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def every(self, interval: float, start: float, until: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` at ``start``, ``start + interval``,
        ... while the time is below ``until``."""

        def tick() -> None:
            fn()
            nxt = self.now + interval
            if nxt < until:
                self.at(nxt, tick)

        if start < until:
            self.at(start, tick)

    def run(self, until: float, progress: Callable[[float], None] | None = None) -> None:
        """Process events up to and including ``until``;
        ``progress(now)`` every 65,536 events and at the end."""
        heap = self._heap
        pop = heapq.heappop
        n = self.events
        while heap and heap[0][0] <= until:
            when, _, fn, args = pop(heap)
            self.now = when
            fn(*args)
            n += 1
            if progress is not None and not n & 0xFFFF:
                progress(when)
        self.events = n
        self.now = max(self.now, until)
        if progress is not None:
            progress(self.now)

    def pending(self) -> int:
        return len(self._heap)
