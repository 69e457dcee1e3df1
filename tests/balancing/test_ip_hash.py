"""ip_hash: stable by client address."""

from __future__ import annotations

import random

from tcpdispatch.balancing import PickRequest, make_picker

IPS = [f"10.{i >> 8 & 255}.{i & 255}.{(i * 7) & 255}" for i in range(10_000)]


def lookup(picker, ip: str) -> str:
    return picker.pick(PickRequest(client_ip=ip))[0].id


def test_same_address_same_gateway_whatever_the_load(pool) -> None:
    cands = pool([1, 1, 1, 1])
    picker = make_picker("ip_hash", cands, rng=random.Random(1))
    home = lookup(picker, "203.0.113.5")
    for _ in range(300):  # no load bound: affinity wins over balance
        assert lookup(picker, "203.0.113.5") == home
    assert picker.pick(PickRequest(client_ip="203.0.113.5", client_id="other"))[0].id == home


def test_ipv4_mapped_ipv6_hashes_as_ipv4(pool) -> None:
    picker = make_picker("ip_hash", pool([1] * 8))
    for ip in IPS[:200]:
        assert lookup(picker, "::ffff:" + ip) == lookup(picker, ip)


def test_adding_a_gateway_moves_about_one_in_n_plus_one(pool) -> None:
    n = 12
    before = make_picker("ip_hash", pool([1] * n))
    after = make_picker("ip_hash", pool([1] * (n + 1)))
    moved = [ip for ip in IPS if lookup(before, ip) != lookup(after, ip)]
    assert {lookup(after, ip) for ip in moved} == {f"g{n}"}
    assert abs(len(moved) / len(IPS) - 1 / (n + 1)) < 0.3 / (n + 1)


def test_full_owner_sends_to_a_stable_next_gateway(pool) -> None:
    cands = pool([1] * 6, limits=[100] * 6)
    picker = make_picker("ip_hash", cands)
    home = lookup(picker, "192.0.2.1")
    owner = next(c for c in cands if c.id == home)
    owner.load.report(100)
    second = lookup(picker, "192.0.2.1")
    assert second != home
    assert all(lookup(picker, "192.0.2.1") == second for _ in range(20))
    owner.load.report(0)
    assert lookup(picker, "192.0.2.1") == home
