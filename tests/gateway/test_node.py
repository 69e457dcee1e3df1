"""Worker supervision helpers: exit reasons, restart backoff, live-worker accounting."""

from __future__ import annotations

import os

from tcpdispatch.gateway.node import RESTART_BACKOFF_MAX, exit_reason, restart_delay
from tcpdispatch.gateway.shm import NodeCounters


def test_exit_reason_names_the_signal() -> None:
    assert exit_reason(-9) == "killed by signal SIGKILL"
    assert exit_reason(-15) == "killed by signal SIGTERM"
    assert exit_reason(3) == "exited with code 3"


def test_restart_backoff_doubles_up_to_a_cap() -> None:
    delays = [restart_delay(n) for n in range(1, 12)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == RESTART_BACKOFF_MAX and delays == sorted(delays)


def test_live_workers_and_restarts_in_shared_counters() -> None:
    c = NodeCounters(3)
    assert c.snapshot().workers_live == 0
    for w in range(3):
        c.bind_worker(w)
    assert c.snapshot().workers_live == 3
    c.clear_worker(1)  # the supervisor saw worker 1 die
    assert c.snapshot().workers_live == 2 and list(c.worker_pids()) == [os.getpid()] * 2
    c.add_worker_restart()
    c.bind_worker(1)
    snap = c.snapshot()
    assert snap.workers_live == 3 and snap.worker_restarts == 1
