"""The C hot path and the Python one are the same algorithm: same seed and clock, same bytes.

Each test builds the app under test for its ``hot_path`` ("python" or "c", the conftest
fixture) and a reference app on the pure-Python path whose generator is the pure-Python
splitmix64 twin, feeds both the same requests and pool changes, and compares every
answer byte for byte, then the counters, the loads and the generator state.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from dispatcher_stack import Stack
from helpers import require_speedups

from tcpdispatch import tickets
from tcpdispatch.balancing.p2c import P2CPicker
from tcpdispatch.balancing.registry import POLICIES
from tcpdispatch.dispatcher import fastpath
from tcpdispatch.dispatcher.httpserver import _JSON_HEAD, _status_line
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.dispatcher.service import DispatchService
from tcpdispatch.health import ProbeResult
from tcpdispatch.rng import CSplitMix64, PySplitMix64, SplitMixRandom
from tcpdispatch.tickets import TicketVerifier

from .conftest import SECRET, FakeClock, bring_up

WALL = 1_767_225_600.75  # 2026-01-01, with a fraction that int() must drop
DATE = b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
# splitmix64 from state 1234567: the reference outputs of Vigna's splitmix64.c
SPLITMIX_1234567 = [
    6457827717110365317,
    3203168211198807973,
    9817491932198370423,
    4593380528125082431,
    16408922859458223821,
]


class Twins:
    """The app under test and a pure-Python reference built alike."""

    def __init__(
        self, make_config: Callable[..., Any], hot_path: str, seed: int, *args: Any, **sections: Any
    ) -> None:
        self.wall = FakeClock(WALL)
        d = sections.pop("dispatcher", {})
        self.app = self._build(
            make_config(*args, dispatcher={**d, "speedups": hot_path == "c"}, **sections),
            SplitMixRandom(seed),
        )
        self.ref = self._build(
            make_config(*args, dispatcher={**d, "speedups": False}, **sections),
            SplitMixRandom(seed, pure=True),
        )
        assert not self.ref.draws.in_c and self.ref.hot_path == "python"
        self.hot_path = hot_path
        self.answered_in_c = 0
        if self.app.fast is not None:  # count the answers C built (the rest fell back to Python)
            self.app.fast = _Counting(self.app.fast, self)
            self.app._install_fast()

    def _build(self, cfg: Any, rng: SplitMixRandom) -> DispatchService:
        pool = Pool(cfg, clock=FakeClock(), rng=rng)
        app = DispatchService(cfg, pool, rng=random.Random(3), clock=self.wall)
        app.set_date(DATE)
        return app

    @property
    def apps(self) -> tuple[DispatchService, DispatchService]:
        return self.app, self.ref

    def each(self, fn: Callable[[DispatchService], Any]) -> None:
        for a in self.apps:
            fn(a)

    def dispatch(self, query: bytes) -> tuple[int, str | None, bytes]:
        got = _answer(self.app, query)
        want = _answer(self.ref, query)
        assert got == want, (query, got, want)
        return got

    def check_path(self) -> None:
        assert self.app.hot_path == self.hot_path, self.app.hot_path_reason()

    def same_state(self) -> None:
        a, r = self.apps
        assert (a.stats.dispatched, a.stats.unavailable, a.stats.bad_request) == (
            r.stats.dispatched,
            r.stats.unavailable,
            r.stats.bad_request,
        )
        assert a.stats.per_gateway == r.stats.per_gateway
        loads = [
            {g: (gw.load.reported, gw.load.issued) for g, gw in x.pool.gateways.items()}
            for x in (a, r)
        ]
        assert loads[0] == loads[1]
        assert a.draws.getstate() == r.draws.getstate()  # the same number of draws, too


class _Counting:
    """The C accelerator, with its answers counted."""

    def __init__(self, fast: Any, twins: Twins) -> None:
        self._fast, self._twins = fast, twins

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fast, name)

    def body(self, client_id: bytes) -> bytes | None:
        out = self._fast.body(client_id)
        self._twins.answered_in_c += out is not None
        return out


def _answer(app: DispatchService, query: bytes) -> tuple[int, str | None, bytes] | tuple[str, str]:
    try:
        return app.dispatch_bytes(query, "10.0.0.1", [])
    except ValueError as exc:  # a ticket too long: both paths must refuse alike
        return "error", str(exc)


@pytest.fixture
def twins(make_config: Callable[..., Any], hot_path: str) -> Callable[..., Twins]:
    return lambda *args, seed=7, **sections: Twins(make_config, hot_path, seed, *args, **sections)


# ------------------------------------------------------------------ the generator


def test_splitmix64_gives_the_reference_outputs_in_python_and_in_c() -> None:
    assert [PySplitMix64(1234567).next64() for _ in range(1)] == SPLITMIX_1234567[:1]
    py = PySplitMix64(1234567)
    assert [py.next64() for _ in range(5)] == SPLITMIX_1234567
    if CSplitMix64 is not None:
        c = CSplitMix64(1234567)
        assert [c.next64() for _ in range(5)] == SPLITMIX_1234567


def test_the_c_core_and_the_python_core_draw_alike() -> None:
    require_speedups()
    c, py = SplitMixRandom(99), SplitMixRandom(99, pure=True)
    assert c.in_c and not py.in_c
    for k in (0, 1, 7, 53, 63, 64):
        assert c.getrandbits(k) == py.getrandbits(k)
    assert [c.random() for _ in range(1000)] == [py.random() for _ in range(1000)]
    assert [c.randint(2, 7) for _ in range(100)] == [py.randint(2, 7) for _ in range(100)]
    assert c.getstate() == py.getstate()
    with pytest.raises(ValueError):
        c.getrandbits(65)
    with pytest.raises(ValueError):
        py.getrandbits(65)
    c.seed(b"x")
    py.seed(b"x")
    assert c.next64() == py.next64()


def test_seeding_is_reproducible_and_unseeded_generators_differ() -> None:
    assert SplitMixRandom(5).next64() == SplitMixRandom(5).next64()
    assert SplitMixRandom("a").random() == SplitMixRandom(b"a").random()
    assert SplitMixRandom().next64() != SplitMixRandom().next64()


# ------------------------------------------------------------------ answers, byte for byte


@pytest.mark.parametrize("policy", ["p2c", "random"])
def test_a_fresh_pool_gives_the_same_answers(twins: Callable[..., Twins], policy: str) -> None:
    t = twins(dispatcher={"policy": policy})
    t.each(lambda a: bring_up(a.pool))
    t.check_path()
    for i in range(50):
        status, _, _ = t.dispatch(b"client_id=c%d" % i)
        assert status == 200
    t.same_state()


def test_several_hundred_dispatches_over_changing_pools_are_byte_identical(
    twins: Callable[..., Twins],
) -> None:
    """600 dispatches, the pool changing every 20: loads, full gateways, headroom, weights,
    gateways down and back, alternates, and 400/503 answers in between."""
    gws = [
        {"id": f"gw-{i}", "address": f"127.0.0.1:{9100 + i}", "weight": 1 + i % 3} for i in range(8)
    ]
    t = twins(gws, dispatcher={"alternates": 3, "retry_after_min": 1, "retry_after_max": 9})
    t.each(lambda a: bring_up(a.pool, capacity=40))
    t.check_path()
    script = random.Random(2024)  # what happens to the pool, the same for both apps
    queries = [
        b"client_id=",
        b"client_id=" + b"x" * 200,
        b"client_id=a%0A",
        b"client_id=%zz",
        b"v=2&client_id=caf%C3%A9",
        b"client_id=a+b",
        b"client_id=moved&leaving=gw-1",
    ]
    statuses: dict[int, int] = {}
    for step in range(600):
        if step % 20 == 0:
            _change_pool(t, script, step)
        if step % 37 == 5:
            query = queries[step % len(queries)]
        else:
            query = b"client_id=client-%d" % script.randrange(10_000)
        if step % 50 == 0:
            t.wall.t += 1.5  # tickets dated later, by the injected clock on both paths
        status = t.dispatch(query)[0]
        statuses[status] = statuses.get(status, 0) + 1
    t.same_state()
    assert (t.answered_in_c > 300) if t.hot_path == "c" else (t.answered_in_c == 0)
    assert statuses[200] > 300 and statuses.get(400, 0) >= 10 and statuses.get(503, 0) >= 10, (
        statuses
    )


def _change_pool(t: Twins, script: random.Random, step: int) -> None:
    ids = [f"gw-{i}" for i in range(8)]
    kind = (step // 20) % 6
    if kind == 0:  # fresh reports: new loads, some gateways nearly full
        reports = {g: script.randrange(0, 40) for g in ids}
        t.each(
            lambda a: [
                a.pool.on_result(g, ProbeResult(ok=True, connections=c, capacity=40))
                for g, c in reports.items()
            ]
        )
    elif kind == 1:  # an agent caps some gateways by headroom
        heads = {g: script.choice([None, 0, 1, 3]) for g in ids}
        t.each(
            lambda a: [
                a.pool.gateways[g].load.report(a.pool.gateways[g].load.reported, headroom=h)
                for g, h in heads.items()
            ]
        )
    elif kind == 2:  # weights change (a new picker, a new alias table)
        g, w = script.choice(ids), script.choice([0.5, 1.0, 4.0, 9.0])
        t.each(lambda a: a.pool.set_weight(g, w))
    elif kind == 3:  # everything full: 503 answers
        t.each(
            lambda a: [
                a.pool.on_result(g, ProbeResult(ok=True, connections=40, capacity=40)) for g in ids
            ]
        )
    elif kind == 4:  # room again, on a few gateways only
        room = set(script.sample(ids, 3))
        t.each(
            lambda a: [
                a.pool.on_result(
                    g, ProbeResult(ok=True, connections=0 if g in room else 40, capacity=40)
                )
                for g in ids
            ]
        )
    else:  # drain one (a rebuild without it), undrain another
        out, back = script.sample(ids, 2)
        t.each(lambda a: (a.pool.set_drain(out, True), a.pool.set_drain(back, False)))
    t.each(lambda a: a.pool.rebuild())


@pytest.mark.parametrize("alternates", [0, 1, 2, 5])
def test_alternates_and_small_pools_give_the_same_answers(
    twins: Callable[..., Twins], alternates: int
) -> None:
    gws = [{"id": f"g{i}", "address": f"127.0.0.1:{9000 + i}", "weight": i} for i in (1, 2, 3, 4)]
    t = twins(gws, dispatcher={"alternates": alternates})
    t.each(lambda a: bring_up(a.pool, capacity=30))
    t.check_path()
    for i in range(150):
        t.dispatch(b"client_id=%d" % i)
    t.same_state()


def test_a_ticket_over_the_limit_is_refused_alike(
    twins: Callable[..., Twins], monkeypatch: Any
) -> None:
    """Over tickets.MAX_TICKET both paths raise and count alike (the limit lowered on both, so
    that short client ids pass and long ones do not; C reads it from fastpath at configure)."""
    t = twins()
    monkeypatch.setattr(tickets, "MAX_TICKET", 80)
    monkeypatch.setattr(fastpath, "MAX_TICKET", 80)
    t.each(lambda a: a.configure(a.config))
    t.each(lambda a: bring_up(a.pool))
    t.check_path()
    outcomes = [t.dispatch(b"client_id=" + b"c" * n)[0] for n in (1, 30, 2, 40, 3)]
    assert outcomes == [200, "error", 200, "error", 200]
    t.same_state()


def test_the_c_answer_is_the_python_answer_as_the_server_frames_it(
    twins: Callable[..., Twins],
) -> None:
    """request() (the whole raw request in C) against dispatch_bytes() plus the built-in server's
    framing."""
    require_speedups()
    t = twins()
    t.each(lambda a: bring_up(a.pool))
    for i in range(100):
        close = i % 3 == 0
        raw = b"GET /v1/dispatch?client_id=r%d HTTP/1.1\r\nHost: x\r\n%b\r\n" % (
            i,
            b"Connection: close\r\n" if close else b"",
        )
        got = t.app.fast.request(raw) if t.app.fast is not None else None
        status, _, body = t.ref.dispatch_bytes(b"client_id=r%d" % i, "10.0.0.1", [])
        assert status == 200
        if t.hot_path == "python":
            assert got is None
            continue
        want = b"%b%b%b%bcontent-length: %d\r\n\r\n%b" % (
            _status_line(200),
            DATE,
            _JSON_HEAD,
            b"connection: close\r\n" if close else b"",
            len(body),
            body,
        )
        assert got == (want, close)
    if t.hot_path == "c":
        t.same_state()


def test_when_c_declines_it_has_drawn_nothing(
    make_app: Callable[..., Stack], hot_path: str
) -> None:
    """All gateways full: C returns None with the generator as it was, so Python draws the same."""
    app = make_app(up=False).service
    bring_up(app.pool, connections=5, capacity=5)
    before = app.draws.getstate()
    if hot_path == "c":
        assert app.fast.body(b"a") is None
        assert app.fast.request(b"GET /v1/dispatch?client_id=a HTTP/1.1\r\n\r\n") is None
    assert app.draws.getstate() == before
    assert app.dispatch_bytes(b"client_id=a", "10.0.0.1", [])[0] == 503


# ------------------------------------------------------------------ clock, constants, policies


def test_an_injected_clock_dates_c_tickets_too(
    make_app: Callable[..., Stack], hot_path: str
) -> None:
    wall = FakeClock(WALL)
    app = make_app(wall=wall).service
    assert app.hot_path == hot_path, (
        app.hot_path_reason()
    )  # an injected clock no longer turns C off
    verifier = TicketVerifier([SECRET.encode()], clock=wall)
    for t in (WALL, WALL + 100.9):
        wall.t = t
        _, _, body = app.dispatch_bytes(b"client_id=a", "10.0.0.1", [])
        ticket = body.split(b'"ticket":"')[1].split(b'"')[0].decode()
        assert verifier.verify(
            ticket, body.split(b'"id":"')[1].split(b'"')[0].decode()
        ).issued_at == int(t)


def test_c_takes_its_limits_from_python(make_app: Callable[..., Stack], monkeypatch: Any) -> None:
    """No copy of MAX_TICKET in C: the value fastpath hands over is the one that holds."""
    require_speedups()
    app = make_app().service
    assert app.fast.body(b"a") is not None
    monkeypatch.setattr(fastpath, "MAX_TICKET", 50)  # shorter than any three-gateway ticket
    app.configure(app.config)
    assert app.fast.body(b"a") is None


def test_the_picker_says_which_c_rule_it_is() -> None:
    codes = {name: fastpath.policy_code(cls) for name, cls in POLICIES.items()}
    assert codes == {**{n: fastpath.OFF for n in POLICIES}, "p2c": 0, "random": 1}

    class Fancier(P2CPicker):  # a subclass that changes the rule must say so
        c_policy = None

    assert fastpath.policy_code(Fancier) == fastpath.OFF
    assert not hasattr(fastpath, "POLICIES")


def test_a_picker_without_c_rule_keeps_the_python_path(make_app: Callable[..., Stack]) -> None:
    require_speedups()
    app = make_app().service
    assert app.hot_path == "c"

    class Fancier(P2CPicker):
        c_policy = None

    app.pool._factory = Fancier  # type: ignore[attr-defined]
    app.pool.rebuild()
    assert app.hot_path == "python"


def test_a_generator_c_cannot_share_keeps_the_python_path_and_says_why(
    make_config: Callable[..., Any],
) -> None:
    require_speedups()
    cfg = make_config()
    pool = Pool(
        cfg, clock=FakeClock(), rng=random.Random(1)
    )  # a Mersenne Twister: C cannot draw from it
    bring_up(pool)
    app = DispatchService(cfg, pool)
    assert app.hot_path == "python" and "SplitMixRandom" in app.hot_path_reason()
    assert app.dispatch_bytes(b"client_id=a", "10.0.0.1", [])[0] == 200
