"""The planner with zones (rule 6): targets, donors and recipients within a zone."""

from __future__ import annotations

from rebalance.test_plan import FAST

from tcpdispatch.rebalance.plan import GatewayLoad, Planner, targets

ZONE = {"a1": "a", "a2": "a", "b1": "b", "b2": "b"}


def view(fleet: dict[str, int], **kw: object) -> list[GatewayLoad]:
    return [GatewayLoad(g, n, zone=ZONE[g], **kw) for g, n in fleet.items()]  # type: ignore[arg-type]


def test_targets_are_shared_within_each_zone() -> None:
    # zone a holds 1,000 and zone b 200: the fleet-wide target (300 each) would empty zone a.
    assert targets(view({"a1": 1000, "a2": 0, "b1": 100, "b2": 100})) == {
        "a1": 500.0,
        "a2": 500.0,
        "b1": 100.0,
        "b2": 100.0,
    }
    # clients on their way (the round's total above the settled sum) stay in the zone they leave
    t = targets(
        [
            GatewayLoad("a1", 600, leaving=100, zone="a"),
            GatewayLoad("a2", 300, zone="a"),
            GatewayLoad("b1", 100, zone="b"),
            GatewayLoad("b2", 100, zone="b"),
        ],
        total=1100,
    )
    assert t == {"a1": 450.0, "a2": 450.0, "b1": 100.0, "b2": 100.0}


def test_rounds_never_move_clients_across_zones() -> None:
    planner = Planner(FAST)
    fleet = {"a1": 1000, "a2": 0, "b1": 100, "b2": 100}
    shed: dict[str, int] = {}
    for t in range(30):
        d = planner.tick(float(t), view(fleet))
        for o in d.orders:
            planner.shed_result(o, o.count, float(t))
            shed[o.gateway] = shed.get(o.gateway, 0) + o.count
            fleet[o.gateway] -= o.count
            fleet["a2" if ZONE[o.gateway] == "a" else "b2"] += (
                o.count
            )  # the client stays in its zone
    assert set(shed) == {"a1"} and shed["a1"] == 500  # exactly the excess within zone a
    assert fleet == {"a1": 500, "a2": 500, "b1": 100, "b2": 100}


def test_no_move_out_of_a_zone_even_when_another_zone_is_empty() -> None:
    """Zone a's clients all belong on a1 (a2 drains): fleet-wide, a1 would be a donor to the empty
    zone b; per zone it is on target, so no order is sent."""
    planner = Planner(FAST)
    gw = [
        GatewayLoad("a1", 1000, zone="a"),
        GatewayLoad("a2", 900, zone="a", state="draining"),
        GatewayLoad("b1", 0, zone="b"),
        GatewayLoad("b2", 0, zone="b"),
    ]
    for t in range(10):
        assert planner.tick(float(t), gw).orders == ()
    assert planner.goal["a1"] == 1900.0 and not planner.donors
