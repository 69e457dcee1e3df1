"""Node-wide shared state across real processes: capacity, the per-IP sketch, worker slots,
and the ticket replay guard."""

from __future__ import annotations

import multiprocessing
import random
import time

import pytest

from tcpdispatch.errors import ErrorCode, TicketError
from tcpdispatch.gateway.shm import NodeCounters, ip_cells
from tcpdispatch.tickets import NonceCache, TicketClaims


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


# --- node-wide ticket replay guard ------------------------------------------------------

T0 = 1_700_000_000


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def claims(nonce: int, expires_at: int = T0 + 60) -> TicketClaims:
    return TicketClaims(("g1",), "c1", expires_at - 60, expires_at, nonce.to_bytes(8, "big"))


def refusal(cache: NonceCache, c: TicketClaims) -> ErrorCode | None:
    try:
        cache.admit(c)
    except TicketError as exc:
        return exc.code
    return None


def _admit_all(c: NodeCounters, w: int, nonces: list[int], out: object) -> None:
    c.bind_worker(w)
    cache = c.nonce_cache()
    admitted, codes = [], set()
    for n in nonces:
        code = refusal(cache, claims(n, int(time.time()) + 60))
        if code is None:
            admitted.append(n)
        else:
            codes.add(code)
    out.put((admitted, codes))  # type: ignore[attr-defined]


def test_replay_guard_admits_each_nonce_once_node_wide() -> None:
    ctx = multiprocessing.get_context("fork")
    c = NodeCounters(3, lock=ctx.Lock(), replay_slots=1 << 12)
    q = ctx.Queue()
    rng = random.Random(7)
    nonces = list({rng.getrandbits(64) for _ in range(300)})
    orders = [random.Random(w).sample(nonces, len(nonces)) for w in range(3)]  # real races
    ps = [ctx.Process(target=_admit_all, args=(c, w, orders[w], q)) for w in range(3)]
    for p in ps:
        p.start()
    results = [q.get(timeout=30) for _ in ps]
    for p in ps:
        p.join(timeout=30)
    admitted = [n for got, _ in results for n in got]
    assert sorted(admitted) == sorted(nonces)  # each nonce exactly once, whichever process
    assert all(codes <= {ErrorCode.TICKET_REPLAYED} for _, codes in results)
    # the supervisor (another view of the same table) sees them too
    assert (
        refusal(c.nonce_cache(), claims(nonces[0], int(time.time()) + 60))
        is ErrorCode.TICKET_REPLAYED
    )


def _late_worker(c: NodeCounters, fresh: list[int], kept: int, refused: int, out: object) -> None:
    cache = c.nonce_cache(clock=Clock(T0 + 66))  # first tickets expired (60 s + 5 s leeway)
    out.put(
        [refusal(cache, claims(n, T0 + 200)) for n in fresh]  # type: ignore[attr-defined]
        + [refusal(cache, claims(kept, T0 + 200)), refusal(cache, claims(refused, T0 + 200))]
    )


def test_replay_guard_full_table_refuses_and_expiry_frees_slots() -> None:
    ctx = multiprocessing.get_context("fork")
    c = NodeCounters(2, lock=ctx.Lock(), replay_slots=32)
    cache = c.nonce_cache(clock=Clock(T0))
    assert refusal(cache, claims(999, T0 + 600)) is None  # outlives the rest
    for n in range(30):
        assert refusal(cache, claims(n)) is None
    # 31 live entries in 32 slots (one always stays empty): a new ticket is refused,
    # rather than admitted without being remembered
    assert refusal(cache, claims(1000)) is ErrorCode.OVERLOADED
    assert refusal(cache, claims(5)) is ErrorCode.TICKET_REPLAYED  # replays still named as such
    assert len(cache) == 31 and (1000).to_bytes(8, "big") not in cache
    # another process, later: the expired slots are free again, the long-lived entry is not
    q = ctx.Queue()
    p = ctx.Process(target=_late_worker, args=(c, list(range(100, 130)), 999, 1000, q))
    p.start()
    got = q.get(timeout=30)
    p.join(timeout=30)
    assert got == [None] * 30 + [ErrorCode.TICKET_REPLAYED, ErrorCode.OVERLOADED]
    # its admissions are this process's too
    late = c.nonce_cache(clock=Clock(T0 + 66))
    assert len(late) == 31 and all(n.to_bytes(8, "big") in late for n in range(100, 130))
    assert refusal(late, claims(100, T0 + 200)) is ErrorCode.TICKET_REPLAYED


@pytest.mark.parametrize("seed", range(4))
def test_replay_table_matches_a_reference_model(seed: int) -> None:
    """Random admissions and clock steps on a tiny table: same answers as a dict of live nonces.

    With slots <= PROBES a nonce's probe window is the whole table, so OVERLOADED
    may only come when the table is full: one slot is always kept empty, and
    expired entries count until the sweep (or a reuse) takes them.
    """
    rng = random.Random(seed)
    clock = Clock()
    cache = NonceCache(clock=clock, leeway=0, slots=16)
    model: dict[int, int] = {}  # nonce -> forget at
    overloaded = 0
    for _ in range(3000):
        clock.now += rng.choice((0, 0, 0, 0.5, 1, 3))
        n = rng.randrange(40)
        exp = int(clock.now) + rng.randrange(1, 12)
        live = {k: v for k, v in model.items() if v >= clock.now}
        got = refusal(cache, claims(n, exp))
        if n in live:
            assert got is ErrorCode.TICKET_REPLAYED
        elif got is ErrorCode.OVERLOADED:
            overloaded += 1
            assert sum(1 for e in cache._exp if e) == 15
        else:
            assert got is None
            live[n] = exp
        model = live
        assert len(cache) == len(model)
    assert cache.prune() >= 0 and len(cache) == len(model)
    assert 0 < overloaded < 1000  # the table did fill up, and recovered


def test_single_process_table_is_private_and_default_sized() -> None:
    c = NodeCounters(1)
    assert c.replay_slots == NonceCache.SLOTS == 1 << 18
    a, b = c.nonce_cache(), c.nonce_cache()
    a.admit(claims(1, int(time.time()) + 60))
    assert refusal(b, claims(1, int(time.time()) + 60)) is ErrorCode.TICKET_REPLAYED  # one table
    assert refusal(NonceCache(), claims(1, int(time.time()) + 60)) is None  # a standalone one
