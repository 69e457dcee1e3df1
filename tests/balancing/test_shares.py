"""Every policy honours weights proportionally: 1:2:3 -> 1/6, 2/6, 3/6 within 2 points.

Load only grows by the issued counter (no reports arrive), as between two
status reports. goim's formula would give 0 : 1/3 : 2/3 here.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tcpdispatch.balancing import POLICIES, PickRequest, make_picker

PICKS = 60_000


def shares(policy: str, weights: list[float], pool, seed: int = 7) -> list[float]:
    cands = pool(weights)
    picker = make_picker(policy, cands, rng=random.Random(seed))
    counts: Counter[str] = Counter()
    for i in range(PICKS):
        # Distinct client ids/addresses, so the hash policies see many keys.
        req = PickRequest(
            client_id=f"client-{i}", client_ip=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        )
        (chosen,) = picker.pick(req)
        counts[chosen.id] += 1
    assert sum(c.load.issued for c in cands) == PICKS
    return [counts[c.id] / PICKS for c in cands]


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_weights_1_2_3(policy: str, pool) -> None:
    got = shares(policy, [1, 2, 3], pool)
    for share, want in zip(got, [1 / 6, 2 / 6, 3 / 6]):
        assert abs(share - want) <= 0.02, (policy, got)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_equal_weights(policy: str, pool) -> None:
    got = shares(policy, [5, 5, 5, 5], pool)
    for share in got:
        assert abs(share - 0.25) <= 0.02, (policy, got)
