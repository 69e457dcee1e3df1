"""The baselines' deciders against the rules they stand for."""

from __future__ import annotations

import random
from collections import Counter

from tcpdispatch.balancing.base import Candidate, LoadCounter, PickRequest
from tcpdispatch.balancing.least_conn import LeastConnPicker
from tcpdispatch.sim.baselines import GoimDecider, LeastConnTwin, _goim_weight


def _cands(
    loads: list[int], weights: list[float] | None = None, limit: int | None = None
) -> list[Candidate]:
    weights = weights or [1.0] * len(loads)
    return [
        Candidate(f"g{k}", "h", 1, w, limit, LoadCounter(reported=n), base_weight=w)
        for k, (n, w) in enumerate(zip(loads, weights))
    ]


def test_least_conn_twin_hands_out_what_the_real_picker_does() -> None:
    loads, weights = [50, 0, 20, 35, 5, 90], [1.0, 1.0, 2.0, 1.0, 1.0, 3.0]
    real = LeastConnPicker(_cands(loads, weights), rng=random.Random(1))
    twin_cands = _cands(loads, weights)
    twin = LeastConnTwin(twin_cands, random.Random(1))
    a: Counter[str] = Counter(real.pick(PickRequest())[0].id for _ in range(600))
    b: Counter[str] = Counter(twin.pick(1)[0].id for _ in range(600))
    for gid in a | b:
        assert abs(a[gid] - b[gid]) <= 1, (gid, a, b)


def test_least_conn_twin_skips_full_and_follows_reports() -> None:
    cands = _cands([0, 0, 0], limit=2)
    twin = LeastConnTwin(cands, random.Random(2))
    picked = [twin.pick(1) for _ in range(7)]
    assert [len(p) for p in picked] == [1] * 6 + [0]  # 3 x 2 slots, then all full
    cands[1].load.report(0)
    twin.touch("g1")
    assert twin.pick(3)[0].id == "g1"


def test_goim_weight_matches_the_published_formula() -> None:
    # weightRatio 1/3, connRatio 100/300 * 0.5 -> diff 1/6, x 300 = 50 -> 1 + 50
    assert _goim_weight(1, 100, 3, 300) == 51
    # far over its share: clamped to the minimum weight 1
    assert _goim_weight(1, 300, 3, 300) == 1
    assert _goim_weight(1, 0, 3, 0) == 0.0


def test_goim_gives_five_in_order_and_favours_the_emptier() -> None:
    cands = _cands([10, 40, 30, 20, 50, 60, 0])
    goim = GoimDecider(cands, random.Random(3))
    out = goim.pick(5)
    assert [c.id for c in out] == ["g6", "g0", "g3", "g2", "g1"]
    assert cands[6].load.issued == 1
