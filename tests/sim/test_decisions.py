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
