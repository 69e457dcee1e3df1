"""The pure client policy: backoff, failure memory, answers, candidate order."""

from __future__ import annotations

import random
import statistics

import pytest

from tcpdispatch.client.policy import (
    Backoff,
    BackoffConfig,
    DispatchAnswer,
    Endpoint,
    FailureMemory,
    order_candidates,
    parse_retry_after,
    parse_static,
)
from tcpdispatch.errors import DispatchError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_by_multiplier_up_to_max() -> None:
    b = Backoff(BackoffConfig(), random.Random(1))
    assert [round(b.base(n), 4) for n in (1, 2, 3, 4)] == [1.0, 1.6, 2.56, 4.096]
    assert b.base(50) == 120.0
    assert b.base(10_000) == 120.0  # no float overflow after a very long outage


def test_backoff_jitter_distribution_is_uniform_within_20_percent() -> None:
    samples = {}
    for n in (1, 3, 6):
        values = []
        for seed in range(2000):
            b = Backoff(BackoffConfig(), random.Random(seed))
            b.failures = n - 1
            values.append(b.failure_delay())
        base = Backoff().base(n)
        assert min(values) >= base * 0.8 and max(values) <= base * 1.2
        # uniform on [0.8, 1.2] * base: mean = base, stdev = 0.4*base/sqrt(12)
        assert statistics.mean(values) == pytest.approx(base, rel=0.02)
        assert statistics.pstdev(values) == pytest.approx(0.4 * base / 12**0.5, rel=0.08)
        # spread over the whole interval, not clustered: every fifth of it is hit
        buckets = {min(int((v / base - 0.8) / 0.08), 4) for v in values}
        assert buckets == {0, 1, 2, 3, 4}
        samples[n] = statistics.mean(values)
    assert samples[1] < samples[3] < samples[6]


def test_backoff_sequence_is_monotonic_in_expectation_and_capped() -> None:
    b = Backoff(BackoffConfig(max=5.0), random.Random(7))
    delays = [b.failure_delay() for _ in range(20)]
    assert delays[0] < 1.21 and max(delays) <= 5.0 * 1.2
    assert delays[-1] >= 5.0 * 0.8


def test_hint_is_a_floor() -> None:
    b = Backoff(BackoffConfig(), random.Random(3))
    for _ in range(50):
        b.reset()
        assert b.failure_delay(hint=7.0) >= 7.0
    assert Backoff(rng=random.Random(0)).loss_delay(up_for=100, hint=2.5) >= 2.5


def test_loss_of_stable_connection_resets_and_uses_full_jitter() -> None:
    b = Backoff(BackoffConfig(reset_after=10), random.Random(5))
    for _ in range(6):
        b.failure_delay()
    values = [b.loss_delay(up_for=60) for _ in range(1000)]
    assert b.failures == 0
    assert 0 <= min(values) < 0.05 and 0.95 < max(values) < 1.0


def test_short_lived_connection_counts_as_failure() -> None:
    b = Backoff(BackoffConfig(reset_after=10), random.Random(5))
    delays = [b.loss_delay(up_for=0.1) for _ in range(5)]
    assert b.failures == 5
    assert delays[-1] > 0.8 * 1.6**4


def test_retry_hints_are_applied_and_clamped() -> None:
    c = BackoffConfig().with_hints({"initial_s": 0.5, "multiplier": 2, "jitter": 5, "max_s": 10})
    assert (c.initial, c.multiplier, c.jitter, c.max) == (0.5, 2.0, 1.0, 10.0)
    c = BackoffConfig().with_hints({"initial_s": -1, "max_s": "x", "multiplier": True})
    assert c.initial == 0.05 and c.max == 120.0 and c.multiplier == 1.6
    assert BackoffConfig().with_hints(None) == BackoffConfig()


def test_failure_memory_ban_grows_and_expires() -> None:
    clock = FakeClock()
    m = FailureMemory(clock, base=1.0, factor=2.0, max_ban=5.0)
    assert [m.failed("a") for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert m.banned("a") and not m.banned("b")
    clock.now += 5.01
    assert not m.banned("a") and m.failures("a") == 5
    m.succeeded("a")
    assert m.failures("a") == 0 and m.failed("a") == 1.0


def test_failure_memory_order_puts_banned_last_soonest_first() -> None:
    clock = FakeClock()
    m = FailureMemory(clock)
    m.failed("a")
    m.failed("a")
    m.failed("c")  # banned 1 s
    assert m.order(["a", "b", "c", "d", "b"]) == ["b", "d", "c", "a"]
    assert m.usable(["a", "b", "c"]) == ["b"]


def _answer(**over: object) -> dict:
    obj = {
        "gateway": {"id": "g1", "host": "127.0.0.1", "port": 9001},
        "ticket": "T",
        "alternates": [{"id": "g2", "host": "127.0.0.1", "port": 9002, "ticket": "T"}],
        "heartbeat_s": 5,
        "retry": {"initial_s": 1.0},
    }
    obj.update(over)
    return obj


def test_dispatch_answer_parses_contract_json() -> None:
    a = DispatchAnswer.from_json(_answer())
    assert [(e.id, e.address, e.ticket) for e in a.endpoints] == [
        ("g1", "127.0.0.1:9001", "T"),
        ("g2", "127.0.0.1:9002", "T"),
    ]
    assert a.heartbeat_s == 5.0 and a.retry == {"initial_s": 1.0}
    assert a.with_source("cache").gateway.source == "cache"


@pytest.mark.parametrize(
    "bad, what",
    [
        ([], "not a JSON object"),
        (_answer(gateway=None), "gateway is not an object"),
        (_answer(gateway={"id": "g", "host": "h", "port": 0}), "gateway.port"),
        (_answer(gateway={"id": "g", "port": 1}), "gateway.host"),
        (_answer(alternates="x"), "'alternates' is not a list"),
        (_answer(ticket=5), "'ticket' is not a string"),
    ],
)
def test_dispatch_answer_rejects_malformed(bad: object, what: str) -> None:
    with pytest.raises(DispatchError, match=what):
        DispatchAnswer.from_json(bad)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3", now=0) == 3.0
    assert parse_retry_after(None, now=0, default=1.5) == 1.5
    assert parse_retry_after("garbage", now=0) == 1.0
    assert parse_retry_after("-5", now=0) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(
        10.0
    )


def test_static_list_and_candidate_order() -> None:
    eps = parse_static(["127.0.0.1:1", " 127.0.0.1:2 ", "", "[::1]:3"])
    assert [e.address for e in eps] == ["127.0.0.1:1", "127.0.0.1:2", "[::1]:3"]
    assert all(e.source == "static" and e.ticket == "" for e in eps)
    with pytest.raises(ValueError, match="fallback address"):
        parse_static(["nohost"])
    clock = FakeClock()
    m = FailureMemory(clock)
    m.failed("127.0.0.1:1")
    dup = Endpoint("127.0.0.1", 2, "g2", "T", "dispatcher")
    ordered = order_candidates([dup, *eps], m)
    assert [e.address for e in ordered] == ["127.0.0.1:2", "[::1]:3", "127.0.0.1:1"]
    assert ordered[0].ticket == "T"  # first occurrence wins
    firsts = {
        order_candidates(eps, FailureMemory(clock), shuffle=True, rng=random.Random(s))[0].port
        for s in range(30)
    }
    assert firsts == {1, 2, 3}
