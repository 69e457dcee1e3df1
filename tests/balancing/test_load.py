"""load: ORCA-style weights from reported utilization, combined with connections."""

from __future__ import annotations

import random
from collections import Counter

from tcpdispatch.balancing import PickRequest, make_picker

REQ = PickRequest()


def test_low_utilization_gateway_is_preferred_until_it_catches_up(pool) -> None:
    cands = pool([1, 1], loads=[100, 100])
    cands[0].load.utilization = 0.2
    cands[1].load.utilization = 0.8
    picker = make_picker("load", cands, rng=random.Random(1))
    # g0 wins while (c0 + 1) * 0.2 <= 101 * 0.8, i.e. for its first ~300 picks.
    assert all(picker.pick(REQ)[0].id == "g0" for _ in range(300))
    for _ in range(200):
        picker.pick(REQ)
    assert cands[1].load.issued > 0


def test_floor_caps_how_attractive_idle_looks(pool) -> None:
    # 0.0 and 0.1 both count as the floor (0.1): a balanced split, not a flood to g0.
    cands = pool([1, 1])
    cands[0].load.utilization = 0.0
    cands[1].load.utilization = 0.1
    picker = make_picker("load", cands, rng=random.Random(2))
    got = Counter(picker.pick(REQ)[0].id for _ in range(1000))
    assert abs(got["g0"] - got["g1"]) <= 2


def test_unreported_utilization_uses_the_mean_of_the_others(pool) -> None:
    cands = pool([1, 1, 1], loads=[100, 100, 100])
    cands[1].load.utilization = 0.2
    cands[2].load.utilization = 0.6
    cands[0].load.utilization = None  # scored at 0.4
    picker = make_picker("load", cands, rng=random.Random(3))
    assert picker._score(cands[0]) == 101 * 0.4
    cands[0].load.utilization = float("nan")  # garbage counts as unreported
    assert picker._score(cands[0]) == 101 * 0.4


def test_no_utilization_anywhere_behaves_like_p2c(pool) -> None:
    cands = pool([1, 2], loads=[90, 100])
    picker = make_picker("load", cands, rng=random.Random(4))
    assert all(picker.pick(REQ)[0].id == "g1" for _ in range(40))


def test_weights_and_utilization_combine(pool) -> None:
    # Same utilization: static weights decide (1:3). Same weights are tested above.
    cands = pool([1, 3])
    for c in cands:
        c.load.utilization = 0.5
    picker = make_picker("load", cands, rng=random.Random(5))
    for _ in range(4000):
        picker.pick(REQ)
    assert abs(cands[1].load.issued / 4000 - 0.75) < 0.01
