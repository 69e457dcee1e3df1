"""p2c (default) and random: weighted draws, load comparison, stale load."""

from __future__ import annotations

import random
from collections import Counter

from tcpdispatch.balancing import PickRequest, make_picker

REQ = PickRequest(client_id="c")


def test_p2c_prefers_the_less_loaded_per_weight(pool) -> None:
    # g0: 90 conns / weight 1; g1: 100 conns / weight 2 -> g1 is the lighter per weight.
    cands = pool([1, 2], loads=[90, 100])
    picker = make_picker("p2c", cands, rng=random.Random(1))
    for _ in range(40):  # g1 wins every comparison until 2 * 90 <= 100 + issued
        assert picker.pick(REQ)[0].id == "g1"


def test_p2c_never_picks_the_most_loaded_of_many(pool) -> None:
    # With two distinct draws the single most loaded gateway can never win.
    cands = pool([1] * 10, loads=[0] * 9 + [10_000])
    picker = make_picker("p2c", cands, rng=random.Random(2))
    got = Counter(picker.pick(REQ)[0].id for _ in range(3000))
    assert "g9" not in got


def test_p2c_with_stale_load_stays_balanced_through_issued_counters(pool) -> None:
    # A report arrived long ago (g0 was busy then); no report since. The issued
    # counters make up the difference first, then keep the shares by weight.
    cands = pool([1, 1, 2], loads=[400, 100, 0])
    picker = make_picker("p2c", cands, rng=random.Random(3))
    first = Counter(picker.pick(REQ)[0].id for _ in range(500))
    assert first["g0"] == 0  # still the most loaded per weight throughout
    for _ in range(11_500):
        picker.pick(REQ)
    cur = [c.load.current / c.weight for c in cands]
    assert max(cur) - min(cur) <= 3  # per-weight loads level out


def test_p2c_does_not_herd_when_counters_do_not_move(pool) -> None:
    # Another replica's view: its issued counters never move between reports
    # (it cannot see the others' tickets). least_conn sends every request to
    # the one "least loaded" gateway; p2c spreads them over the lighter half.
    loads = [100 + i for i in range(10)]
    for policy, max_share in (("least_conn", 1.0), ("p2c", 0.25)):
        cands = pool([1] * 10, loads=loads)
        picker = make_picker(policy, cands, rng=random.Random(4))
        got: Counter[str] = Counter()
        for _ in range(2000):
            got[picker.pick(REQ)[0].id] += 1
            for c in cands:
                c.load.issued = 0
        top = max(got.values()) / 2000
        if policy == "least_conn":
            assert top == max_share
        else:
            assert top <= max_share
            assert len(got) >= 8


def test_p2c_skewed_weight_still_compares_two(pool) -> None:
    # g0 has 99.9 % of the weight: the second distinct draw needs the exact fallback.
    cands = pool([999, 1], loads=[50, 0])
    picker = make_picker("p2c", cands, rng=random.Random(5))
    assert picker.pick(REQ)[0].id == "g1"


def test_random_ignores_load(pool) -> None:
    cands = pool([1, 1], loads=[1000, 0])
    picker = make_picker("random", cands, rng=random.Random(6))
    got = Counter(picker.pick(REQ)[0].id for _ in range(4000))
    assert abs(got["g0"] / 4000 - 0.5) < 0.05


def test_random_skips_full_when_most_of_the_weight_is_full(pool) -> None:
    # 99 of 100 gateways full: rejection sampling gives up, the exact scan finds g99.
    cands = pool([1] * 100, loads=[5] * 99 + [0], limits=[5] * 100)
    for policy in ("random", "p2c", "load"):
        picker = make_picker(policy, cands, rng=random.Random(7))
        assert picker.pick(REQ)[0].id == "g99"
        cands[99].load.issued = 0
