"""Behaviour every policy shares: full, excluded and empty pools, alternates, determinism."""

from __future__ import annotations

import random

import pytest

from tcpdispatch.balancing import POLICIES, LoadCounter, PickRequest, make_picker

ALL = sorted(POLICIES)
REQ = PickRequest(client_id="alice", client_ip="192.0.2.7")


@pytest.mark.parametrize("policy", ALL)
def test_empty_pool_gives_nothing(policy: str) -> None:
    assert make_picker(policy, []).pick(REQ, k=3) == []


@pytest.mark.parametrize("policy", ALL)
def test_all_full_gives_nothing(policy: str, pool) -> None:
    cands = pool([1, 2, 3], loads=[10, 20, 30], limits=[10, 20, 30])
    picker = make_picker(policy, cands, rng=random.Random(1))
    for i in range(50):
        assert picker.pick(PickRequest(client_id=f"c{i}"), k=2) == []
    assert all(c.load.issued == 0 for c in cands)


@pytest.mark.parametrize("policy", ALL)
def test_full_gateways_are_skipped_until_they_free_up(policy: str, pool) -> None:
    # g1 has nearly all the weight but is full: only g0 and g2 may be picked.
    cands = pool([1, 50, 1], loads=[0, 5, 0], limits=[None, 5, None])
    picker = make_picker(policy, cands, rng=random.Random(2))
    seen = {
        picker.pick(PickRequest(client_id=f"c{i}", client_ip=f"10.0.0.{i}"))[0].id
        for i in range(200)
    }
    assert seen <= {"g0", "g2"}
    assert seen
    cands[1].load.report(0)  # a report frees g1; the same picker sees it at once
    seen = {
        picker.pick(PickRequest(client_id=f"d{i}", client_ip=f"10.0.1.{i}"))[0].id
        for i in range(200)
    }
    assert "g1" in seen


@pytest.mark.parametrize("policy", ALL)
def test_fills_up_to_the_limit_then_refuses(policy: str, pool) -> None:
    cands = pool([1, 2, 3], limits=[3, 4, 5])
    picker = make_picker(policy, cands, rng=random.Random(3))
    got = [picker.pick(PickRequest(client_id=f"c{i}", client_ip=f"10.0.0.{i}")) for i in range(20)]
    assert sum(1 for g in got if g) == 12
    assert all(not g for g in got[12:])
    assert [c.load.current for c in cands] == [3, 4, 5]


@pytest.mark.parametrize("policy", ALL)
def test_alternates_are_distinct_usable_and_not_counted(policy: str, pool) -> None:
    cands = pool([1, 2, 3, 4, 5], loads=[0, 7, 0, 0, 0], limits=[None, 7, None, None, None])
    picker = make_picker(policy, cands, rng=random.Random(4))
    for i in range(100):
        before = sum(c.load.issued for c in cands)
        got = picker.pick(PickRequest(client_id=f"c{i}", client_ip=f"10.0.0.{i}"), k=3)
        assert len(got) == 3
        assert len({c.id for c in got}) == 3
        assert "g1" not in {c.id for c in got}
        assert sum(c.load.issued for c in cands) == before + 1  # only the primary counts
    # Fewer usable gateways than k: as many as there are.
    assert len(picker.pick(REQ, k=10)) == 4


@pytest.mark.parametrize("policy", ALL)
def test_exclude_is_honoured(policy: str, pool) -> None:
    cands = pool([1, 1, 1])
    picker = make_picker(policy, cands, rng=random.Random(5))
    for i in range(50):
        got = picker._choose(PickRequest(client_id=f"c{i}"), {"g0", "g2"})
        assert got is not None and got.id == "g1"
    assert picker._choose(REQ, {"g0", "g1", "g2"}) is None


@pytest.mark.parametrize("policy", ALL)
def test_seeded_rng_is_deterministic(policy: str, pool) -> None:
    def run() -> list[str]:
        picker = make_picker(policy, pool([1, 2, 3, 4]), rng=random.Random(42))
        # No client key: the hash policies fall back to a random ring position.
        return [picker.pick(PickRequest(), k=2)[0].id for _ in range(300)]

    first = run()
    assert run() == first
    assert len(set(first)) > 1


@pytest.mark.parametrize("policy", ALL)
def test_load_counters_outlive_picker_swaps(policy: str, pool) -> None:
    cands = pool([1, 1])
    counters = [c.load for c in cands]
    make_picker(policy, cands, rng=random.Random(6)).pick(REQ)
    make_picker(policy, cands, rng=random.Random(6)).pick(REQ)
    assert sum(c.issued for c in counters) == 2
    assert isinstance(counters[0], LoadCounter)
