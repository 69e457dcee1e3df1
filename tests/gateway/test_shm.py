"""Node-wide shared counters: capacity, the per-IP sketch, worker slots, across real processes."""

from __future__ import annotations

import multiprocessing

from tcpdispatch.errors import ErrorCode
from tcpdispatch.gateway.shm import NodeCounters, ip_cells


def test_capacity_and_release() -> None:
    c = NodeCounters(1)
    assert c.admit(2, "1.1.1.1", 0) is None
    assert c.admit(2, "1.1.1.1", 0) is None
    assert c.admit(2, "1.1.1.1", 0) is ErrorCode.OVERLOADED
    c.release("1.1.1.1", 0)
    assert c.admit(2, "1.1.1.1", 0) is None
    assert c.snapshot().connections == 2


def test_per_ip_sketch_never_undercounts() -> None:
    c = NodeCounters(1)
    ips = [f"10.0.{i // 256}.{i % 256}" for i in range(3000)]
    for ip in ips:
        assert c.admit(100_000, ip, 1) is None or c.ip_count(ip) >= 1
    for ip in ips[:50]:
        assert c.ip_count(ip) >= 1
    assert c.admit(100_000, ips[0], 1) is ErrorCode.IP_LIMIT
    assert len(set(ip_cells("1.2.3.4"))) >= 1 and ip_cells("1.2.3.4") == ip_cells("1.2.3.4")


def test_worker_slots_sum_and_clear() -> None:
    c = NodeCounters(3)
    for w, n in ((0, 2), (1, 3), (2, 1)):
        c.bind_worker(w)
        for _ in range(n):
            assert c.admit(10, "9.9.9.9", 10) is None
            c.add_accepted()
        c.add_rejected(ErrorCode.TICKET_FORGED)
    snap = c.snapshot()
    assert snap.connections == 6 and snap.worker_connections == (2, 3, 1) and snap.accepted == 6
    assert snap.rejected == {"ticket_forged": 3}
    assert c.ip_count("9.9.9.9") == 6
    c.clear_worker(1)  # a dead worker's connections are forgotten, not its history
    assert c.snapshot().connections == 3 and c.ip_count("9.9.9.9") == 3
    c.set_draining()
    assert c.snapshot().draining


def _hammer(c: NodeCounters, w: int, out: object) -> None:
    c.bind_worker(w)
    got = sum(c.admit(500, "7.7.7.7", 0) is None for _ in range(400))
    out.put(got)  # type: ignore[attr-defined]


def test_capacity_is_exact_across_processes() -> None:
    ctx = multiprocessing.get_context("fork")
    c = NodeCounters(3, lock=ctx.Lock())
    q = ctx.Queue()
    ps = [ctx.Process(target=_hammer, args=(c, w, q)) for w in range(3)]
    for p in ps:
        p.start()
    got = [q.get(timeout=30) for _ in ps]
    for p in ps:
        p.join(timeout=30)
    assert sum(got) == 500 and c.snapshot().connections == 500
