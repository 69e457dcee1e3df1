"""What the dashboard shows of one dispatcher replica, as one JSON-ready snapshot.

Built at most once per ``min_interval_s`` (0.25 s) however many dashboards watch (every
``/v1/events`` stream shares it): the pool row by row (state, held connections
against capacity and rebalancing target, weight, last probe), dispatch and 503
rates and answer time since the previous snapshot, the rebalancer's plan and
breaker, and which replica this is and which one leads rebalancing. Rates come
from the same plain counters ``/metrics`` exports, as differences between two
snapshots; a ring of the last ``HISTORY`` points lets a page that just opened
draw the last minutes at once.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tcpdispatch.balancing.snapshot import slow_start_factor
from tcpdispatch.dispatcher.events import PoolView
from tcpdispatch.metrics_common import DISPATCH_BUCKETS

if TYPE_CHECKING:
    from tcpdispatch.dispatcher.pool import Gateway, Pool
    from tcpdispatch.dispatcher.rebalancer import Rebalancer
    from tcpdispatch.dispatcher.service import Stats

_ENCODE = json.JSONEncoder(
    separators=(",", ":")
).encode  # one encoder for every row (no per-call set-up)
HISTORY = 300  # points (one per snapshot, about one a second: five minutes)
# (bucket counts, sum of seconds) of every dispatch answer so far, over DISPATCH_BUCKETS
Latency = Callable[[], tuple[Sequence[int], float]]


class Overview:
    """Snapshots of the pool, the rates and the rebalancer for the dashboard."""

    def __init__(
        self,
        pool: Pool,
        stats: Stats,
        latency: Latency,
        rebalancer: Callable[[], Rebalancer | None],
        *,
        min_interval_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.pool, self.stats, self.latency, self.rebalancer = pool, stats, latency, rebalancer
        self.min_interval_s = min_interval_s
        self.clock, self.wall = clock, wall
        self.history: deque[list[float | None]] = deque(maxlen=HISTORY)
        self._last: tuple[float, int, int, Sequence[int], float] | None = None
        self._cached: tuple[float, PoolView] | None = None
        self._rows: dict[str, tuple[dict[str, Any], bytes]] = {}  # id -> last row and its JSON

    def snapshot(self) -> PoolView:
        """The current view (shared by every stream: callers must not modify it)."""
        now = self.clock()
        if self._cached is not None and now - self._cached[0] < self.min_interval_s:
            return self._cached[1]
        doc = self._build(now)
        self._cached = (now, doc)
        return doc

    def _build(self, now: float) -> PoolView:
        pool = self.pool
        rb = self.rebalancer()
        goal = rb.planner.goal if rb is not None else {}
        rebalance: dict[str, Any] | None = None
        if rb is not None:
            rebalance = rb.describe()
            rebalance.pop("gateways", None)  # per-gateway targets are in the pool rows
        point = self._rates(now)
        head = {
            "at": round(self.wall(), 3),
            "replica": None
            if rb is None
            else {"id": rb.holder, "leader": rb.leader, "leader_id": rb.leader_id},
            "policy": pool.policy,
            "panic": pool.panic,
            "counts": pool.counts(),
            "rates": dict(
                zip(
                    ("at", "dispatch_per_s", "unavailable_per_s", "mean_ms", "p99_ms"),
                    point,
                    strict=True,
                )
            ),
            "rebalance": rebalance,
        }
        return PoolView(head, self._encode_rows(goal), list(self.history))

    def _encode_rows(self, goal: dict[str, float]) -> dict[str, bytes]:
        """Every row as JSON; a row equal to the last one keeps its bytes object (and its cost)."""
        at = self.pool.clock()
        old, fresh, out = self._rows, {}, {}
        for gid, gw in self.pool.gateways.items():
            row = self._row(gw, goal, at)
            hit = old.get(gid)
            if hit is None or hit[0] != row:
                hit = (row, _ENCODE(row).encode())
            fresh[gid] = hit
            out[gid] = hit[1]
        self._rows = fresh
        return out

    def _rates(self, now: float) -> list[float | None]:
        """One chart point: per-second rates and answer times since the previous snapshot."""
        s = self.stats
        counts, total = self.latency()
        counts = list(counts)
        point: list[float | None] = [round(self.wall(), 3), 0.0, 0.0, None, None]
        last = self._last
        if last is not None and now > last[0]:
            dt = now - last[0]
            point[1] = round((s.dispatched - last[1]) / dt, 2)
            point[2] = round((s.unavailable - last[2]) / dt, 2)
            diff = [a - b for a, b in zip(counts, last[3], strict=True)]
            n = sum(diff)
            if n > 0:
                point[3] = round((total - last[4]) / n * 1000, 4)
                point[4] = _quantile_ms(diff, 0.99)
            self.history.append(point)
        self._last = (now, s.dispatched, s.unavailable, counts, total)
        return point

    def _row(self, gw: Gateway, goal: dict[str, float], now: float) -> dict[str, Any]:
        """One pool row (``now`` on the pool's clock, for slow start)."""
        cfg = gw.config
        target = goal.get(gw.id)
        return {
            "id": gw.id,
            "zone": getattr(cfg, "zone", None) or "default",
            "address": cfg.address,
            "state": self._state(gw, now),
            "weight": cfg.weight,
            "held": gw.load.reported,
            "capacity": cfg.capacity if cfg.capacity is not None else gw.reported_capacity,
            "target": None if target is None else round(target, 1),
            "leaving": gw.leaving,
            "probe_ok": gw.last_probe_ok,
            "probe_ms": None if gw.last_probe_s is None else round(gw.last_probe_s * 1000, 2),
            "detail": gw.last_detail,
        }

    def _state(self, gw: Gateway, now: float) -> str:
        """up, down, draining, slow start, or panic (down but handed out: the pool is in panic)."""
        state = gw.state()
        if state == "down":
            return "panic" if self.pool.panic and gw.id in self.pool.in_rotation else "down"
        if (
            state == "up"
            and gw.up_since is not None
            and slow_start_factor(now - gw.up_since, self.pool.balancing) < 1.0
        ):
            return "slow start"
        return state


def _quantile_ms(counts: Sequence[int], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding quantile ``q`` (None past the last bound)."""
    need = q * sum(counts)
    seen = 0
    for bound, n in zip((*DISPATCH_BUCKETS, None), counts, strict=True):
        seen += n
        if seen >= need:
            return None if bound is None else bound * 1000
    return None


__all__ = ["HISTORY", "Overview"]
