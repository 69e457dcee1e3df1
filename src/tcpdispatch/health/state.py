"""Pure health bookkeeping: the rise/fall state machine and push-mode TTLs (no I/O)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class HealthState:
    """HAProxy-style rise/fall state machine for one gateway; no I/O, no clock.

    Active probe results go to :meth:`observe`: ``rise`` consecutive successes bring a
    down gateway up, ``fall`` consecutive failures take an up gateway down, so a gateway
    failing every other probe keeps whatever state it had instead of flapping.

    Client reports go to :meth:`passive_failure`. They count towards ``fall`` but
    never reset the success streak, so active successes still bring a gateway up after
    ``rise`` whatever clients say. Between two active results at most ``max_passive``
    passive failures are counted, by default ``min(1, fall - 1)``: an unauthenticated
    client (or one on a broken network) can speed up detection of a gateway the probes
    already see failing, but reports alone never reach ``fall`` (with ``fall = 1`` they
    are not counted at all), so they cannot take down one the probes keep seeing
    healthy. An explicit ``max_passive >= fall`` opts into letting them.
    """

    __slots__ = (
        "_passive_since_probe",
        "failures",
        "fall",
        "max_passive",
        "rise",
        "successes",
        "up",
    )

    def __init__(
        self, rise: int, fall: int, *, up: bool = False, max_passive: int | None = None
    ) -> None:
        if rise < 1 or fall < 1:
            raise ValueError(f"rise and fall must be >= 1, got rise={rise} fall={fall}")
        if max_passive is not None and max_passive < 0:
            raise ValueError(f"max_passive must be >= 0, got {max_passive}")
        self.rise = rise
        self.fall = fall
        self.up = up
        self.max_passive = max_passive
        self.successes = 0  # consecutive active successes
        self.failures = 0  # consecutive failures (active, plus counted passive ones)
        self._passive_since_probe = 0

    def observe(self, ok: bool) -> bool:
        """Record an active probe result; True when ``up`` changed."""
        self._passive_since_probe = 0
        if ok:
            self.successes += 1
            self.failures = 0
            if not self.up and self.successes >= self.rise:
                self.up = True
                return True
            return False
        self.successes = 0
        self.failures += 1
        return self._maybe_fall()

    def passive_failure(self) -> bool:
        """Record a client's failed connect; True when ``up`` changed (went down)."""
        limit = min(1, self.fall - 1) if self.max_passive is None else self.max_passive
        if not self.up or self._passive_since_probe >= limit:
            return False
        self._passive_since_probe += 1
        self.failures += 1
        return self._maybe_fall()

    def _maybe_fall(self) -> bool:
        if self.up and self.failures >= self.fall:
            self.up = False
            return True
        return False

    def __repr__(self) -> str:
        return (
            f"HealthState(up={self.up}, successes={self.successes}/{self.rise}, "
            f"failures={self.failures}/{self.fall})"
        )


class PushTracker:
    """Push-mode TTL bookkeeping: which gateways have stopped sending heartbeats.

    Pure apart from the injected ``clock``; the owner calls :meth:`expired` periodically
    (e.g. every ``ttl / 4``) and marks the ids it returns down.
    """

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0, got {ttl!r}")
        self.ttl = ttl
        self._clock = clock
        self._last: dict[str, float] = {}
        self._reported: set[str] = set()  # expired ids already returned by expired()

    def record(self, gateway_id: str) -> None:
        """A heartbeat from ``gateway_id`` arrived now."""
        self._last[gateway_id] = self._clock()
        self._reported.discard(gateway_id)

    def restart(self, ttl: float, gateway_ids: Iterable[str]) -> None:
        """A new ``ttl``: every listed gateway gets one full ``ttl`` of grace from now."""
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0, got {ttl!r}")
        self.ttl = ttl
        now = self._clock()
        self._last = dict.fromkeys(gateway_ids, now)
        self._reported.clear()

    def forget(self, gateway_id: str) -> None:
        """Stop tracking ``gateway_id`` (removed from the pool)."""
        self._last.pop(gateway_id, None)
        self._reported.discard(gateway_id)

    def expired(self) -> list[str]:
        """Ids whose last heartbeat is older than ``ttl``; each expiry is reported once."""
        now = self._clock()
        out = [
            gid
            for gid, last in self._last.items()
            if gid not in self._reported and now - last > self.ttl
        ]
        self._reported.update(out)
        return out

    def alive(self, gateway_id: str) -> bool:
        """True when ``gateway_id`` sent a heartbeat within the last ``ttl`` seconds."""
        last = self._last.get(gateway_id)
        return last is not None and self._clock() - last <= self.ttl

    def last_seen(self, gateway_id: str) -> float | None:
        """Clock value of the last heartbeat, or None when never seen (or forgotten)."""
        return self._last.get(gateway_id)

    def __contains__(self, gateway_id: object) -> bool:
        return gateway_id in self._last
