"""The simulator's stand-ins for zone choice (issue 16) and rebalancing (issue 13)."""

import random

from tcpdispatch.sim.decisions import NoRebalancer, SimZones


def test_own_zone_first_while_it_is_healthy() -> None:
    z = SimZones(3)
    assert z.order(1, [False, False, False], random.Random(1)) == [1, 2, 0]


def test_a_zone_in_panic_spills_over_every_other_zone() -> None:
    z = SimZones(3)
    rng = random.Random(1)
    firsts = {z.order(0, [True, False, False], rng)[0] for _ in range(50)}
    assert firsts == {1, 2}  # spread over both, not piled on the next one
    assert z.order(0, [True, False, False], rng)[-1] == 0
    assert z.order(0, [True, True, False], rng) == [2, 0]


def test_every_zone_in_panic_stays_home() -> None:
    assert SimZones(3).order(2, [True, True, True], random.Random(1))[0] == 2
    assert SimZones(1).order(0, [True], random.Random(1)) == [0]


def test_no_rebalancer_moves_nothing() -> None:
    assert NoRebalancer().shed(0.0, [10, 0], [1.0, 1.0]) == {}


class _FakePool:
    def __init__(self, prefix: str, n: int, panic: bool = False, limit: int = 100) -> None:
        from tcpdispatch.balancing.base import Candidate, LoadCounter
        from tcpdispatch.balancing.p2c import P2CPicker

        self.picker = P2CPicker(
            [Candidate(f"{prefix}{i}", "h", 1, 1.0, limit, LoadCounter()) for i in range(n)],
            rng=random.Random(1),
        )
        self.panic = panic


def test_real_zones_is_the_product_zone_choice() -> None:
    """The simulator's pool decider asks issue 16's ZoneRouter: home while it has room, the other
    zones when it is in panic, an alternate from another zone, and the zone's own (panic) picker
    when no zone can take the client."""
    from tcpdispatch.balancing.base import PickRequest
    from tcpdispatch.sim.decisions import RealZones

    zones = RealZones(3)
    pools = [_FakePool("a", 2), _FakePool("b", 2), _FakePool("c", 2)]
    chosen = zones.pick(0, pools, PickRequest(), 3)
    assert chosen[0].id[0] == "a" and chosen[-1].id[0] != "a"
    pools[0] = _FakePool("a", 2, panic=True)  # a rebuild: a new picker, the router follows
    assert {zones.pick(0, pools, PickRequest(), 1)[0].id[0] for _ in range(20)} <= {"b", "c"}
    dark = [_FakePool(z, 2, panic=True) for z in "abc"]
    assert zones.pick(1, dark, PickRequest(), 1)[0].id[0] == "b"  # every zone in panic: stay home
