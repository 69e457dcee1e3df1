"""Shedding: RECONNECT a given number of a worker's oldest sessions, spread over a window.

The dispatcher's rebalancer asks a donor gateway (``POST /shed`` on the status
port) to move exactly its excess. Only sessions older than a minimum age are
chosen, oldest first, so a client that just arrived (perhaps moved here a moment
ago) is never asked to move again.

Ages cost no memory per connection: sessions are numbered in admission order and
the connection table keeps that order, so the gateway only records, at each sweep,
the pair (time, last number handed out). The sessions admitted at least ``A``
seconds ago are those numbered up to the last pair recorded at least ``A`` seconds
ago (:class:`AgeIndex`; the resolution is one sweep interval, at most 1 s).

The RECONNECT reason is ``"rebalance"``: the SDK then tells the dispatcher which
gateway it leaves (``leaving=ID&reason=rebalance`` on its next dispatch) so it is
placed on a gateway below its target (docs/protocol.md, docs/rebalancing.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

log = logging.getLogger("tcpdispatch.gateway.shed")

REASON = "rebalance"
MAX_DELAY_MS = 250  # each RECONNECT carries a random delay below this (as the drain's do)
LEAVE_GRACE_S = (
    30.0  # a shed session still open this long after its RECONNECT no longer counts as leaving
)


class AgeIndex:
    """Checkpoints ``(time, last session number)``; bounded, oldest dropped first."""

    def __init__(self, clock: Callable[[], float], keep: int = 4096) -> None:
        self._clock = clock
        self._marks: deque[tuple[float, int]] = deque(maxlen=keep)
        self._marks.append((clock(), 0))

    def record(self, last_number: int) -> None:
        now = self._clock()
        if self._marks and self._marks[-1][1] == last_number:
            return  # nothing admitted since: the older mark already says it
        self._marks.append((now, last_number))

    def cutoff(self, min_age: float) -> int:
        """Highest session number admitted at least ``min_age`` seconds ago (0: none known)."""
        if min_age <= 0:
            return 1 << 62
        limit = self._clock() - min_age
        best = 0
        for at, num in self._marks:
            if at > limit:
                break
            best = num
        return best


class Sheddable(Protocol):
    """What the shedder needs of one connection (``GatewayConnection`` provides it)."""

    def reconnect(self, delay_ms: int, reason: str) -> bool: ...


def pick_oldest(
    conns: dict[int, Any], cutoff: int, count: int, usable: Callable[[Any], bool]
) -> list[Any]:
    """Up to ``count`` connections numbered ``<= cutoff``
    (oldest first) for which ``usable`` holds."""
    out: list[Any] = []
    for num, p in conns.items():  # admission order: oldest first
        if num > cutoff or len(out) >= count:
            break
        if usable(p):
            out.append(p)
    return out


async def send_spread(
    targets: list[Sheddable],
    window: float,
    clock: Callable[[], float],
    rand_ms: Callable[[], int],
    on_sent: Callable[[int], None],
) -> int:
    """RECONNECT ``targets`` evenly over ``window`` seconds; returns how many were still open."""
    n = len(targets)
    start = clock()
    sent = done = 0
    while sent < n:
        elapsed = clock() - start
        due = n if window <= 0 else min(n, math.floor(n * elapsed / window) + 1)
        batch = 0
        for p in targets[sent:due]:
            if p.reconnect(rand_ms(), REASON):
                batch += 1
        if batch:
            on_sent(batch)
            done += batch
        sent = due
        if sent < n:
            await asyncio.sleep(max(0.005, start + window * sent / n - clock()))
    return done


def split_by_worker(count: int, connections: Iterable[int]) -> list[int]:
    """Split ``count`` over workers in proportion to their connections (largest remainder)."""
    conns = list(connections)
    total = sum(conns)
    if total <= 0:
        return [0] * len(conns)
    count = min(count, total)
    shares = [count * c / total for c in conns]
    out = [math.floor(s) for s in shares]
    for i in sorted(range(len(conns)), key=lambda i: out[i] - shares[i])[: count - sum(out)]:
        out[i] += 1
    return out


__all__ = [
    "LEAVE_GRACE_S",
    "MAX_DELAY_MS",
    "REASON",
    "AgeIndex",
    "pick_oldest",
    "send_spread",
    "split_by_worker",
]
