"""least_conn: lowest connections per weight, random among ties."""

from __future__ import annotations

import random
from collections import Counter

from tcpdispatch.balancing import PickRequest, make_picker

REQ = PickRequest()


def test_picks_the_least_loaded(pool) -> None:
    cands = pool([1, 1, 1], loads=[5, 1, 3])
    picker = make_picker("least_conn", cands, rng=random.Random(1))
    assert [picker.pick(REQ)[0].id for _ in range(2)] == ["g1", "g1"]
    # Now 5, 3, 3: a tie between g1 and g2.
    assert picker.pick(REQ)[0].id in {"g1", "g2"}


def test_load_is_per_weight(pool) -> None:
    # 10/1 vs 15/3: g1 is less loaded per unit of weight.
    cands = pool([1, 3], loads=[10, 15])
    picker = make_picker("least_conn", cands, rng=random.Random(2))
    assert picker.pick(REQ)[0].id == "g1"


def test_fills_towards_equal_load_per_weight(pool) -> None:
    cands = pool([1, 2, 2], loads=[30, 0, 40])
    picker = make_picker("least_conn", cands, rng=random.Random(3))
    for _ in range(150):
        picker.pick(REQ)
    assert [c.load.current for c in cands] == [44, 88, 88]


def test_ties_are_broken_randomly(pool) -> None:
    cands = pool([1] * 4)
    got: Counter[str] = Counter()
    for seed in range(400):
        picker = make_picker("least_conn", cands, rng=random.Random(seed))
        got[picker._choose(REQ, frozenset()).id] += 1
    assert set(got) == {"g0", "g1", "g2", "g3"}
    assert min(got.values()) > 60
