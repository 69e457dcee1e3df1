"""The client population, each client driven by the real client policy.

Clients are kept in flat arrays (gateway, connected-since, loss time, backoff
failure count) so a million fit in a few hundred MB; per-client ban memories
(``FailureMemory``, one for gateways and one for dispatchers, the real class) exist
only while a client has something to remember. Every decision the SDK's
supervisor makes is made here by the same functions, in the same order
(``client/client.py``): ``Backoff.loss_delay`` after a loss, ``Backoff.failure_delay``
after a failed round (with Retry-After as the floor), ``FailureMemory`` bans of a
failed dispatcher and of each gateway that failed or was left, the cached
answer then the static list when no dispatcher answers, and ``order_candidates``
for the race order. What is modelled is the I/O: how long each step takes and
whether the gateway answers (see ``World.race``).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

from tcpdispatch.client.policy import Backoff, BackoffConfig, FailureMemory

NAN = math.nan


@dataclass(slots=True)
class Memory:
    """One client's ban memories (created on its first failure, dropped when harmless)."""

    gateways: FailureMemory
    dispatchers: FailureMemory
    failed: list[str] = field(default_factory=list)  # addresses with a strike

    def harmless(self, dispatcher: str) -> bool:
        """Only single strikes left (forgetting them
        shortens a later repeat ban from 2 s to 1 s)."""
        return self.dispatchers.failures(dispatcher) == 0 and all(
            self.gateways.failures(a) <= 1 for a in self.failed
        )


class Population:
    """``n`` clients: index -> state arrays. ``gateway[i] == -1``: not connected."""

    def __init__(self, n: int, zones: int, clock: object, backoff_rng: object) -> None:
        self.n = n
        self.zone = array("b", (i % zones for i in range(n)))
        self.gateway = array("i", [-1]) * n
        self.since = array("d", [0.0]) * n
        self.lost_at = array("d", [NAN]) * n  # involuntary loss not yet repaired
        self.failures = array("I", [0]) * n  # Backoff.failures
        self.online = bytearray(n)  # 1: wants a connection (0: churned out, offline)
        self.moving = bytearray(n)  # 1: told to move, still on the old gateway (make-before-break)
        self.leaving = array("i", [-1]) * n  # gateway that shed it (rebalance RECONNECT), or -1
        self.queued = bytearray(n)  # 1: waiting for its turn in the testbed queue
        self.round_at = array("d", [NAN]) * n  # time of the pending round, if any
        self.cache: list[tuple[int, ...] | None] = [
            None
        ] * n  # last dispatch answer (gateway indexes)
        self.memories: dict[int, Memory] = {}
        self.clock = clock
        self.backoff = Backoff(BackoffConfig(), backoff_rng)  # type: ignore[arg-type]
        self.empty = FailureMemory(clock)  # type: ignore[arg-type]  # read-only stand-in

    def memory(self, i: int) -> Memory:
        m = self.memories.get(i)
        if m is None:
            m = self.memories[i] = Memory(
                FailureMemory(self.clock, base=1.0, factor=2.0, max_ban=60.0),  # type: ignore[arg-type]
                FailureMemory(self.clock, base=1.0, factor=2.0, max_ban=30.0),  # type: ignore[arg-type]
            )
        return m

    def loss_delay(self, i: int, up_for: float, hint: float | None = None) -> float:
        b = self.backoff
        b.failures = self.failures[i]
        d = b.loss_delay(up_for, hint)
        self.failures[i] = b.failures
        return d

    def failure_delay(self, i: int, hint: float | None = None) -> float:
        b = self.backoff
        b.failures = self.failures[i]
        d = b.failure_delay(hint)
        self.failures[i] = min(b.failures, 4_000_000_000)
        return d

    def connected(self) -> int:
        return sum(1 for g in self.gateway if g >= 0)
