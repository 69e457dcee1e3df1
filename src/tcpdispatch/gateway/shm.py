"""Node-wide counters in shared memory, so ``--workers N`` processes act as one gateway.

One anonymous ``MAP_SHARED`` mmap is created before the workers fork and is
inherited by them. Layout (all signed 64-bit, native order)::

    header: state (0 serving, 1 draining), started_at (unix ms), worker restarts
    per worker slot: pid, connections, accepted, messages_in, messages_out,
                     shed (sessions sent a rebalancing RECONNECT), leaving (shed, still open),
                     shed order (count, window ms, minimum age ms: supervisor -> worker),
                     handshakes[len(HANDSHAKES)], rejected[len(CODES)], errors[len(CODES)],
                     busy (ppm), loop lag (us)
    per worker sketch: DEPTH rows x WIDTH counters (a count-min sketch of source IPs)
    replay guard: a tickets.NonceCache table (REPLAY_SLOTS x (u64 nonce, u32 forget_at))

Each worker writes only its own slot and sketch; readers sum over slots. The
admission check (node capacity and per-IP limit) reads every slot and must be
atomic with the increment, so it runs under one lock shared by the node. A
worker that dies without cleaning up is cleared by the supervisor
(:meth:`NodeCounters.clear_worker`), which is why counts live per worker
instead of in one node-wide cell.

The ticket replay guard is one node-wide table behind the same lock, so a
ticket nonce is admitted once per node whichever worker the kernel hands the
connection to (:meth:`NodeCounters.nonce_cache`).

The per-IP limit uses a count-min sketch: an IP's count is the minimum over
its DEPTH counters, which can only over-estimate (on hash collisions), so the
limit errs on the safe side and memory stays fixed however many IPs connect.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from tcpdispatch.errors import ErrorCode
from tcpdispatch.tickets import NonceCache

CODES: tuple[ErrorCode, ...] = tuple(ErrorCode)
_CODE_INDEX = {c: i for i, c in enumerate(CODES)}

_HEADER = 3
_H_RESTARTS = 2
_F_PID, _F_CONN, _F_ACCEPTED, _F_MSG_IN, _F_MSG_OUT = range(5)
HANDSHAKES = ("plain", "full", "resumed")  # how connections started (encrypted gateways)
_F_SHED, _F_ORDER_COUNT, _F_ORDER_WINDOW_MS, _F_ORDER_MIN_AGE_MS, _F_LEAVING = range(5, 10)
_F_HANDSHAKES = 10
_F_REJECTED = _F_HANDSHAKES + len(HANDSHAKES)
_F_ERRORS = _F_REJECTED + len(CODES)
_F_BUSY = _F_ERRORS + len(CODES)  # loadmeter.LoopMeter: CPU busy fraction x 1e6
_F_LAG = _F_BUSY + 1  # loadmeter.LoopMeter: event-loop lag in microseconds
SLOT = _F_LAG + 1
WIDTH = 4096
DEPTH = 2
_SKETCH = WIDTH * DEPTH
_SEEDS = (0x9E3779B1, 0x85EBCA77)
REPLAY_SLOTS = NonceCache.SLOTS  # 2**18 slots, 3 MiB: ~130,000 live tickets node-wide


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Node totals at one moment."""

    draining: bool
    started_at: float
    connections: int
    accepted: int
    messages_in: int
    messages_out: int
    rejected: dict[str, int]
    errors: dict[str, int]
    worker_connections: tuple[int, ...]
    handshakes: dict[str, int]  # on an encrypted gateway: plain | full | resumed starts
    workers_live: int = 1  # worker slots whose process is listening (pid set by bind_worker)
    worker_restarts: int = 0  # workers restarted by the supervisor after dying
    worker_busy: tuple[float, ...] = ()  # per worker, 0..1 of one core (loadmeter.LoopMeter)
    worker_lag: tuple[float, ...] = ()  # per worker, seconds
    shed: int = 0
    leaving: int = 0


def ip_cells(ip: str) -> tuple[int, ...]:
    """The sketch columns of ``ip`` (one per row); stable across processes."""
    raw = ip.encode()
    return tuple(zlib.crc32(raw, seed) % WIDTH for seed in _SEEDS)


class NodeCounters:
    """Shared counters for ``workers`` processes; create before forking."""

    def __init__(
        self, workers: int, lock: Any | None = None, *, replay_slots: int = REPLAY_SLOTS
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self.replay_slots = replay_slots
        words = _HEADER + workers * (SLOT + _SKETCH)
        self._mm = mmap.mmap(-1, words * 8 + NonceCache.nbytes(replay_slots))
        self._v = memoryview(self._mm)[: words * 8].cast("q")
        self._replay = memoryview(self._mm)[words * 8 :]
        # Fault the replay table in now: random nonces would otherwise touch its pages one by one,
        # and RSS would creep up by the table's size over the first minutes (it looks like a leak).
        self._replay[:] = bytes(len(self._replay))
        self._lock_arg = lock
        # A single process needs no cross-process lock.
        self._lock: AbstractContextManager[Any] = (
            lock if lock is not None else contextlib.nullcontext()
        )
        self._v[1] = int(time.time() * 1000)
        self.worker = 0

    # -- layout ------------------------------------------------------------
    def _slot(self, w: int) -> int:
        return _HEADER + w * SLOT

    def _sketch(self, w: int) -> int:
        return _HEADER + self.workers * SLOT + w * _SKETCH

    def bind_worker(self, worker: int) -> None:
        """Called in a worker process once it listens: later updates go to this worker's slot,
        and the slot counts as live (its pid is set) until :meth:`clear_worker`."""
        self.worker = worker
        self._v[self._slot(worker) + _F_PID] = os.getpid()

    def nonce_cache(
        self, *, clock: Callable[[], float] = time.time, leeway: float = 5.0
    ) -> NonceCache:
        """The node-wide replay guard: every worker's cache is a view of one shared table.

        Admission checks and records a nonce under the node lock, so two workers
        racing with the same ticket admit it once.
        """
        return NonceCache(
            clock=clock,
            leeway=leeway,
            slots=self.replay_slots,
            buffer=self._replay,
            lock=self._lock_arg,
        )

    # -- state -------------------------------------------------------------
    @property
    def draining(self) -> bool:
        return self._v[0] == 1

    def set_draining(self) -> None:
        self._v[0] = 1

    # -- admission ----------------------------------------------------------
    def admit(self, capacity: int, ip: str | None, per_ip_limit: int) -> ErrorCode | None:
        """Count one new connection, or return why it is refused (nothing counted then)."""
        v = self._v
        with self._lock:
            total = 0
            for w in range(self.workers):
                total += v[self._slot(w) + _F_CONN]
            if total >= capacity:
                return ErrorCode.OVERLOADED
            if per_ip_limit > 0 and ip is not None:
                cells = ip_cells(ip)
                if self._ip_count(cells) >= per_ip_limit:
                    return ErrorCode.IP_LIMIT
                base = self._sketch(self.worker)
                for row, col in enumerate(cells):
                    v[base + row * WIDTH + col] += 1
            v[self._slot(self.worker) + _F_CONN] += 1
        return None

    def _ip_count(self, cells: tuple[int, ...]) -> int:
        v = self._v
        best = None
        for row, col in enumerate(cells):
            n = 0
            for w in range(self.workers):
                n += v[self._sketch(w) + row * WIDTH + col]
            best = n if best is None else min(best, n)
        return best or 0

    def ip_count(self, ip: str) -> int:
        """Estimated open connections from ``ip`` on the node (never under the truth)."""
        return self._ip_count(ip_cells(ip))

    def release(self, ip: str | None, per_ip_limit: int) -> None:
        """Undo :meth:`admit` when the connection closes."""
        v = self._v
        with self._lock:
            v[self._slot(self.worker) + _F_CONN] -= 1
            if per_ip_limit > 0 and ip is not None:
                base = self._sketch(self.worker)
                for row, col in enumerate(ip_cells(ip)):
                    v[base + row * WIDTH + col] -= 1

    # -- plain counters (own slot only, no lock needed) ----------------------
    def add_accepted(self) -> None:
        self._v[self._slot(self.worker) + _F_ACCEPTED] += 1

    def add_rejected(self, code: ErrorCode) -> None:
        self._v[self._slot(self.worker) + _F_REJECTED + _CODE_INDEX[code]] += 1

    def add_error(self, code: ErrorCode) -> None:
        self._v[self._slot(self.worker) + _F_ERRORS + _CODE_INDEX[code]] += 1

    def add_handshake(self, kind: str) -> None:
        """One connection started: ``plain`` (on an encrypted gateway), ``full`` or ``resumed``."""
        self._v[self._slot(self.worker) + _F_HANDSHAKES + HANDSHAKES.index(kind)] += 1

    def add_shed(self, n: int) -> None:
        self._v[self._slot(self.worker) + _F_SHED] += n

    def set_leaving(self, n: int) -> None:
        """This worker's sessions chosen by shed orders that are still connected."""
        self._v[self._slot(self.worker) + _F_LEAVING] = n

    # -- shed orders (supervisor -> worker) ------------------------------------
    def post_shed(self, worker: int, count: int, window_s: float, min_age_s: float) -> None:
        """Supervisor side: ask ``worker`` to shed ``count``
        more sessions (added to any not yet taken)."""
        base = self._slot(worker)
        with self._lock:
            self._v[base + _F_ORDER_WINDOW_MS] = int(window_s * 1000)
            self._v[base + _F_ORDER_MIN_AGE_MS] = int(min_age_s * 1000)
            self._v[base + _F_ORDER_COUNT] += count

    def take_shed(self) -> tuple[int, float, float] | None:
        """Worker side: the order posted for this worker,
        if any, as (count, window_s, min_age_s)."""
        base = self._slot(self.worker)
        v = self._v
        if v[base + _F_ORDER_COUNT] <= 0:
            return None
        with self._lock:
            count = v[base + _F_ORDER_COUNT]
            v[base + _F_ORDER_COUNT] = 0
            return count, v[base + _F_ORDER_WINDOW_MS] / 1000, v[base + _F_ORDER_MIN_AGE_MS] / 1000

    def add_messages(self, received: int, sent: int) -> None:
        base = self._slot(self.worker)
        self._v[base + _F_MSG_IN] += received
        self._v[base + _F_MSG_OUT] += sent

    def set_loop_load(self, busy: float, lag_s: float) -> None:
        """This worker's event-loop busy fraction (0..1) and lag (seconds), from its LoopMeter."""
        base = self._slot(self.worker)
        self._v[base + _F_BUSY] = round(min(1.0, max(0.0, busy)) * 1e6)
        self._v[base + _F_LAG] = round(max(0.0, lag_s) * 1e6)

    def clear_worker(self, worker: int) -> None:
        """Forget a dead worker's open connections and pid (supervisor side)."""
        with self._lock:
            self._v[self._slot(worker) + _F_CONN] = 0
            self._v[self._slot(worker) + _F_PID] = 0
            self._v[self._slot(worker) + _F_BUSY] = 0
            self._v[self._slot(worker) + _F_LAG] = 0
            self._v[self._slot(worker) + _F_LEAVING] = 0
            base = self._sketch(worker)
            self._v[base : base + _SKETCH] = memoryview(bytes(_SKETCH * 8)).cast("q")

    def add_worker_restart(self) -> None:
        """Count one worker restarted by the supervisor."""
        self._v[_H_RESTARTS] += 1

    # -- reading -----------------------------------------------------------
    def snapshot(self) -> Snapshot:
        v = self._v
        conns, rej, err = [], [0] * len(CODES), [0] * len(CODES)
        hs = [0] * len(HANDSHAKES)
        busy, lag = [], []
        acc = m_in = m_out = live = shed = leaving = 0
        for w in range(self.workers):
            base = self._slot(w)
            live += v[base + _F_PID] != 0
            conns.append(v[base + _F_CONN])
            busy.append(v[base + _F_BUSY] / 1e6)
            lag.append(v[base + _F_LAG] / 1e6)
            shed += v[base + _F_SHED]
            leaving += v[base + _F_LEAVING]
            acc += v[base + _F_ACCEPTED]
            m_in += v[base + _F_MSG_IN]
            m_out += v[base + _F_MSG_OUT]
            for i in range(len(HANDSHAKES)):
                hs[i] += v[base + _F_HANDSHAKES + i]
            for i in range(len(CODES)):
                rej[i] += v[base + _F_REJECTED + i]
                err[i] += v[base + _F_ERRORS + i]
        return Snapshot(
            draining=self.draining,
            started_at=v[1] / 1000,
            connections=sum(conns),
            accepted=acc,
            messages_in=m_in,
            messages_out=m_out,
            rejected={c.slug: n for c, n in zip(CODES, rej) if n},
            errors={c.slug: n for c, n in zip(CODES, err) if n},
            worker_connections=tuple(conns),
            workers_live=live,
            worker_restarts=v[_H_RESTARTS],
            handshakes={k: n for k, n in zip(HANDSHAKES, hs, strict=True) if n},
            worker_busy=tuple(busy),
            worker_lag=tuple(lag),
            shed=shed,
            leaving=leaving,
        )

    def worker_pids(self) -> Iterator[int]:
        for w in range(self.workers):
            pid = self._v[self._slot(w) + _F_PID]
            if pid:
                yield pid
