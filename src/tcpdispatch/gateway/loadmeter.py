"""How saturated one worker's event loop is: busy fraction and loop lag, per worker.

A gateway worker is one event loop, so it saturates at one core. Process CPU as a
share of *all* the node's cores (what ``cpu`` in ``/status`` reports) hides that: a
worker kept busy 85 % of the time reads 0.42 on a 2-core machine. Two per-worker
signals do not:

- **busy**: the share of the last window in which the loop's thread wanted a CPU:
  running on one, or runnable and waiting for one (Linux ``schedstat``: run time
  plus run-queue wait, over wall time; 0..1 of one core). A handler that burns CPU
  drives it to 1, and so does a CPU hog on the worker's core: the worker then
  runs only part of the time, but waits to run the rest, and its clients wait
  with it. CPU time alone would read 0.5 there. Where ``schedstat`` is missing
  the meter falls back to the thread's CPU time.
- **lag**: how late a periodic timer fires, the longest delay seen in the last
  window: a loop stalled by one long callback shows here.

:class:`LoopMeter` samples both with one timer per worker (every ``period``,
20 callbacks a second by default) and publishes them once per ``window``
through ``publish(busy, lag_s)`` (the gateway writes them to its worker's slot
in the node's shared counters).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

PERIOD_S = 0.05
WINDOW_S = 0.25
_SCHEDSTAT = Path("/proc/thread-self/schedstat")


def demand_seconds() -> float:
    """Seconds this thread has run or waited to run (schedstat), else its CPU time."""
    try:
        run_ns, wait_ns, _ = _SCHEDSTAT.read_text().split()
        return (int(run_ns) + int(wait_ns)) / 1e9
    except (OSError, ValueError):
        return time.thread_time()


class LoopMeter:
    """Measures one event loop's busy fraction and lag; see the module docstring."""

    def __init__(
        self,
        publish: Callable[[float, float], None],
        *,
        period: float = PERIOD_S,
        window: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = demand_seconds,
    ) -> None:
        if not 0 < period <= window:
            raise ValueError(f"need 0 < period <= window, got period={period!r} window={window!r}")
        self._publish = publish
        self.period = period
        self.window = window
        self._clock = clock
        self._cpu = cpu
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._win_start = 0.0
        self._win_cpu = 0.0
        self._win_lag = 0.0
        self.busy = 0.0
        self.lag = 0.0
        self._windows = 0

    def start(self) -> None:
        """Start sampling on the running loop."""
        now = self._clock()
        self._win_start, self._win_cpu, self._win_lag = now, self._cpu(), 0.0
        self._schedule(now)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        self._due = now + self.period
        self._handle = asyncio.get_running_loop().call_later(self.period, self._tick)

    def _tick(self) -> None:
        now = self._clock()
        self.sample(now, self._cpu())
        self._schedule(now)

    def sample(self, now: float, cpu: float) -> bool:
        """Account one timer firing at ``now`` (due at the last schedule); True when published."""
        self._win_lag = max(self._win_lag, now - self._due)
        elapsed = now - self._win_start
        if elapsed < self.window:
            return False
        self.busy = min(1.0, max(0.0, (cpu - self._win_cpu) / elapsed))
        self.lag = max(0.0, self._win_lag)
        self._win_start, self._win_cpu, self._win_lag = now, cpu, 0.0
        self._windows += 1
        if self._windows == 1:
            return False  # the first window still carries start-up work
        self._publish(self.busy, self.lag)
        return True


__all__ = ["PERIOD_S", "WINDOW_S", "LoopMeter", "demand_seconds"]
