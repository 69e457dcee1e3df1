"""consistent_hash: stable by client id, weighted, with bounded loads."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from tcpdispatch.balancing import PickRequest, make_picker
from tcpdispatch.balancing._ring import points_per_gateway

KEYS = [f"user-{i}" for i in range(20_000)]


def mapping(picker, keys=KEYS) -> dict[str, str]:
    # _choose issues nothing, so with zero load this is the pure ring lookup.
    return {k: picker._choose(PickRequest(client_id=k), frozenset()).id for k in keys}


@pytest.mark.parametrize("n", [10, 40])
def test_adding_one_gateway_moves_about_one_in_n_plus_one(n: int, pool) -> None:
    before = mapping(make_picker("consistent_hash", pool([1] * n)))
    after = mapping(make_picker("consistent_hash", pool([1] * (n + 1))))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert {after[k] for k in moved} == {f"g{n}"}  # keys only move to the newcomer
    assert abs(len(moved) / len(KEYS) - 1 / (n + 1)) < 0.3 / (n + 1)


def test_removing_a_gateway_moves_only_its_keys(pool) -> None:
    # Mean weight 1.8 -> 1.5: both round to the same weight unit, so no rescale.
    cands = pool([1, 2, 3, 1, 2])
    before = mapping(make_picker("consistent_hash", cands))
    after = mapping(make_picker("consistent_hash", [c for c in cands if c.id != "g2"]))
    for k in KEYS:
        if before[k] != "g2":
            assert after[k] == before[k]


def test_ring_is_the_same_in_every_process(pool) -> None:
    # Replicas must agree: positions must not depend on Python's per-process hash seed.
    keys = KEYS[:200]
    here = mapping(make_picker("consistent_hash", pool([1, 2, 3, 4])), keys)
    code = (
        "from tcpdispatch.balancing import Candidate, LoadCounter, PickRequest, make_picker\n"
        "c=[Candidate(f'g{i}','h',1,float(w),None,LoadCounter()) for i,w in enumerate([1,2,3,4])]\n"
        "p=make_picker('consistent_hash', c)\n"
        "ids = (p._choose(PickRequest(client_id=f'user-{i}'), frozenset()).id"
        f" for i in range({len(keys)}))\n"
        "print(','.join(ids))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split(",") == [here[k] for k in keys]


def test_same_client_sticks_exactly_while_under_bound(pool) -> None:
    cands = pool([1] * 5)
    picker = make_picker("consistent_hash", cands, rng=random.Random(1))
    home = picker._choose(PickRequest(client_id="alice"), frozenset())
    stayed = 0
    for i in range(1000):  # background traffic from other clients
        picker.pick(PickRequest(client_id=f"bg-{i}"))
        bound = math.ceil(1.25 * (i + 2) / 5)
        now = picker._choose(PickRequest(client_id="alice"), frozenset())
        assert (now is home) == (home.load.current < bound)
        stayed += now is home
    assert stayed > 900


def test_client_moves_on_when_its_gateway_is_over_bound(pool) -> None:
    cands = pool([1] * 5, loads=[0] * 5)
    picker = make_picker("consistent_hash", cands, rng=random.Random(1))
    home = picker._choose(PickRequest(client_id="alice"), frozenset())
    home.load.report(100)  # 100 of 100: bound is ceil(1.25 * 101 / 5) = 26
    second = picker._choose(PickRequest(client_id="alice"), frozenset())
    assert second.id != home.id
    # The second choice is itself stable (next point on the ring), not random.
    assert all(
        picker._choose(PickRequest(client_id="alice"), frozenset()) is second for _ in range(20)
    )


@pytest.mark.parametrize(
    ("weights", "epsilon"), [([1] * 8, 0.25), ([1, 2, 3, 1, 2, 3], 0.1), ([1] * 64, 0.25)]
)
def test_no_gateway_exceeds_its_bound(weights: list[int], epsilon: float, pool) -> None:
    # Eight hot client ids: a plain ring would put everything on <= 8 gateways.
    cands = pool(weights)
    picker = make_picker("consistent_hash", cands, rng=random.Random(2), epsilon=epsilon)
    wsum = sum(weights)
    for i in range(3000):
        picker.pick(PickRequest(client_id=f"hot-{i % 8}"))
        total = i + 1
        for c in cands:
            assert c.load.current <= math.ceil((1 + epsilon) * total * c.weight / wsum)


def test_without_bound_hot_keys_pile_up(pool) -> None:
    cands = pool([1] * 8)
    picker = make_picker("consistent_hash", cands, rng=random.Random(3), epsilon=None)
    for i in range(800):
        picker.pick(PickRequest(client_id=f"hot-{i % 2}"))
    assert max(c.load.current for c in cands) >= 400


def test_bound_sees_reports_between_refreshes(pool) -> None:
    # 64 gateways: the total is re-summed every 4 picks; a report in between
    # (g0 dropped its connections) is picked up at the next refresh.
    cands = pool([1] * 64, loads=[100] * 64)
    picker = make_picker("consistent_hash", cands, rng=random.Random(4))
    for i in range(64):
        picker.pick(PickRequest(client_id=f"c{i}"))
    for c in cands:
        c.load.report(0)
    for i in range(8):
        picker.pick(PickRequest(client_id=f"d{i}"))
    assert picker._total_load() <= 16


def test_weighted_ring_sizes(pool) -> None:
    picker = make_picker("consistent_hash", pool([1, 2, 3]))
    owners = Counter(int(k) & 0xFFFFF for k in picker._ring.keys)
    ppg = points_per_gateway(3)
    assert [owners[i] for i in range(3)] == [ppg // 2, ppg, ppg * 3 // 2]  # unit: mean 2
