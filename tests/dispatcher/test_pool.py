"""The pool: membership from config/admin/push, health and drain, slow start, reload semantics."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

from tcpdispatch.config import GatewayEntry
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.health import ProbeResult

OK = ProbeResult(ok=True, connections=0, capacity=1000)
FAIL = ProbeResult(ok=False, detail="refused")


def ids(pool: Pool) -> set[str]:
    return {c.id for c in pool.picker.candidates}


def test_rise_fall_and_initial_gateways_skip_slow_start(make_config: Any, clock: Any) -> None:
    pool = Pool(make_config(balancing={"slow_start_s": 10}), clock=clock, rng=random.Random(1))
    assert ids(pool) == {"g1", "g2", "g3"}  # none healthy yet: panic hands out all
    assert pool.panic
    for gid in ("g1", "g2", "g3"):
        pool.on_result(gid, OK)
        assert not pool.gateways[gid].health.up
        pool.on_result(gid, OK)
    assert not pool.panic and ids(pool) == {"g1", "g2", "g3"}
    assert all(g.up_since is None for g in pool.gateways.values())  # up before we started
    assert [c.weight for c in pool.picker.candidates] == [1.0, 2.0, 3.0]
    pool.on_result("g1", FAIL)
    assert "g1" in ids(pool)
    pool.on_result("g1", FAIL)
    assert ids(pool) == {"g2", "g3"} and pool.gateways["g1"].state() == "down"
    # recovering: slow start ramps its weight from slow_start_min
    pool.on_result("g1", OK)
    pool.on_result("g1", OK)
    c1 = next(c for c in pool.picker.candidates if c.id == "g1")
    assert abs(c1.weight - 0.1) < 1e-9
    clock.t += 5
    pool.rebuild()
    c1 = next(c for c in pool.picker.candidates if c.id == "g1")
    assert abs(c1.weight - 0.55) < 1e-9
    clock.t += 5
    pool.rebuild()
    assert next(c for c in pool.picker.candidates if c.id == "g1").weight == 1.0


async def test_slow_start_rebuilds_on_its_own_deadline(make_config: Any, up: Any) -> None:
    loop = asyncio.get_running_loop()
    pool = Pool(make_config(balancing={"slow_start_s": 0.4}), clock=loop.time)
    up(pool)
    pool.add(GatewayEntry("g4", "127.0.0.1", 9004, "tcp://127.0.0.1:9004", 1.0), "admin")
    up(pool, "g4")
    w0 = next(c.weight for c in pool.picker.candidates if c.id == "g4")
    assert w0 < 0.5
    before = pool.rebuilds
    await asyncio.sleep(0.6)
    assert pool.rebuilds > before  # rebuilt by the snapshot deadline, nobody asked
    assert next(c.weight for c in pool.picker.candidates if c.id == "g4") == 1.0
    pool.close()


async def test_changes_coalesce_into_one_rebuild(make_config: Any, up: Any) -> None:
    pool = Pool(make_config(), clock=asyncio.get_running_loop().time)
    up(pool)
    before = pool.rebuilds
    for gid in ("g1", "g2", "g3"):
        pool.on_result(gid, ProbeResult(ok=True, connections=5, capacity=10, draining=True))
    assert pool.rebuilds == before  # scheduled, not yet run
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert pool.rebuilds == before + 1 and ids(pool) == set()
    # load-only reports: no rebuild at all, pickers see the shared counter live
    for gid in ("g1", "g2", "g3"):
        pool.on_result(gid, ProbeResult(ok=True, connections=7, capacity=10, draining=True))
    await asyncio.sleep(0.01)
    assert pool.rebuilds == before + 1
    assert pool.gateways["g1"].load.current == 7
    pool.close()


def test_self_reported_drain_and_capacity(make_config: Any, up: Any) -> None:
    pool = Pool(make_config(), clock=lambda: 0.0)
    up(pool)
    pool.on_result("g2", ProbeResult(ok=True, connections=1, capacity=50, draining=True))
    assert "g2" not in ids(pool) and pool.gateways["g2"].state() == "draining"
    pool.on_result("g2", ProbeResult(ok=True, connections=1, capacity=50))
    c2 = next(c for c in pool.picker.candidates if c.id == "g2")
    assert c2.limit == 50 and c2.load.current == 1


def test_configured_capacity_wins_and_high_water(make_config: Any, up: Any) -> None:
    cfg = make_config(
        [{"id": "a", "address": "127.0.0.1:1", "capacity": 100}], balancing={"high_water": 0.9}
    )
    pool = Pool(cfg, clock=lambda: 0.0)
    up(pool, capacity=5000)
    assert pool.picker.candidates[0].limit == 90


def test_reload_keeps_state_of_unchanged_gateways(make_config: Any, up: Any) -> None:
    cfg = make_config()
    pool = Pool(cfg, clock=lambda: 0.0)
    up(pool, connections=3)
    g1_load = pool.gateways["g1"].load
    pool.set_drain("g2", True)
    pool.add(GatewayEntry("adm", "127.0.0.1", 9100, "tcp://127.0.0.1:9100"), "admin")
    gws = [
        {"id": "g1", "address": "127.0.0.1:9001", "weight": 5},  # weight changed
        {"id": "g2", "address": "127.0.0.1:9999"},  # address changed: health afresh, drain kept
        {"id": "g5", "address": "127.0.0.1:9005"},  # new
    ]  # g3 removed
    targets: list[dict[str, Any]] = []
    pool.on_targets = targets.append
    pool.apply_config(replace(make_config(gws), policy="round_robin"))
    assert set(pool.gateways) == {"g1", "g2", "g5", "adm"}  # admin additions survive reloads
    assert pool.gateways["g1"].load is g1_load and pool.gateways["g1"].health.up
    assert pool.gateways["g1"].config.weight == 5
    assert not pool.gateways["g2"].health.up and pool.gateways["g2"].admin_drain
    assert pool.policy == "round_robin" and type(pool.picker).name == "round_robin"
    assert set(targets[-1]) == {"g1", "g2", "g5", "adm"}


def test_remove_and_unknown_results(make_config: Any, up: Any) -> None:
    pool = Pool(make_config(), clock=lambda: 0.0)
    up(pool)
    assert pool.remove("g1") and not pool.remove("g1")
    pool.on_result("g1", OK)  # late probe result for a removed gateway: ignored
    assert "g1" not in pool.gateways and ids(pool) == {"g2", "g3"}
    assert not pool.passive_failure("g1")


def test_agent_percent_is_load_not_weight(make_config: Any) -> None:
    # "up N%" is remaining capacity, which moves with every connection: it feeds the live
    # utilization (read by the `load` policy), never the snapshot's weights.
    cfg = make_config(
        [{"id": "a", "address": "127.0.0.1:1", "check": "agent://127.0.0.1:2", "weight": 4}]
    )
    pool = Pool(cfg, clock=lambda: 0.0)
    for _ in range(2):
        pool.on_result("a", ProbeResult(ok=True, weight_pct=25, utilization=0.75))
    assert pool.picker.candidates[0].weight == 4.0
    assert pool.gateways["a"].load.utilization == 0.75


def test_overload_takes_a_gateway_out_under_any_policy_and_logs_once(
    make_config: Any, caplog: Any
) -> None:
    for policy in ("p2c", "round_robin", "consistent_hash", "least_conn"):
        pool = Pool(make_config(dispatcher={"policy": policy}), rng=random.Random(1))
        for gid in ("g1", "g2", "g3"):
            pool.on_result(gid, OK)
            pool.on_result(gid, OK)
        hot = replace(OK, busy=0.99, lag_s=0.2)
        caplog.clear()
        with caplog.at_level("INFO", logger="tcpdispatch.dispatcher.pool"):
            for _ in range(3):
                pool.on_result("g2", hot)
            assert ids(pool) == {"g1", "g3"} and pool.overload_excluded == ("g2",)
            assert pool.describe(pool.gateways["g2"])["overloaded"] is True
            pool.on_result(
                "g2", replace(OK, busy=0.8, lag_s=0.01)
            )  # under enter, over exit: stays out
            assert "g2" not in ids(pool)
            pool.on_result("g2", replace(OK, busy=0.1, lag_s=0.001))
            assert ids(pool) == {"g1", "g2", "g3"}
        lines = [r.getMessage() for r in caplog.records if "overload" in r.getMessage()]
        assert len(lines) == 2, lines  # one on entering, one on leaving
        assert "g2 is overloaded (busy 0.99" in lines[0] and "recovered" in lines[1]
        assert pool.overload_changes == 2


def test_overload_metric(make_app: Any) -> None:
    app = make_app()
    app.pool.on_result("g1", replace(OK, busy=1.0))
    app.pool.on_result("g1", replace(OK, busy=1.0))
    text = app.router.metrics_page.render()[0].decode()
    assert 'tcpdispatch_gateway_overloaded{gateway="g1"} 1.0' in text
    assert 'tcpdispatch_gateway_overloaded{gateway="g2"} 0.0' in text
    assert "tcpdispatch_overload_transitions_total 1.0" in text


def test_overload_protection_can_be_turned_off(make_config: Any) -> None:
    pool = Pool(make_config(health={"overload": False}), rng=random.Random(1))
    for _ in range(2):
        pool.on_result("g1", OK)
    pool.on_result("g1", replace(OK, busy=1.0))
    pool.on_result("g1", replace(OK, busy=1.0))
    assert "g1" in ids(pool)


def test_late_statuses_count_only_for_gateways_that_do_not_measure_themselves(
    make_config: Any,
) -> None:
    pool = Pool(make_config(), rng=random.Random(1))
    for gid in ("g1", "g2"):
        pool.on_result(gid, OK)
        pool.on_result(gid, OK)
    late_own = replace(
        OK, busy=0.1, lag_s=0.0, late_s=1.2
    )  # a tcpdispatch gateway: its loop is fine
    late_page = replace(OK, latency_s=0.4)  # a plain status page answering slowly
    for _ in range(3):
        pool.on_result("g1", late_own)
        pool.on_result("g2", late_page)
    assert not pool.gateways["g1"].overload.over
    assert pool.gateways["g2"].overload.over and "late" in pool.gateways["g2"].overload.reason


async def test_rebuilds_are_paced_to_a_share_of_the_loop(
    make_config: Any, monkeypatch: Any
) -> None:
    import tcpdispatch.dispatcher.pool as pool_mod

    pool = Pool(make_config(), rng=random.Random(1))
    pool.rebuild()
    assert pool._scheduled is None
    pool.mark_dirty()  # the first change after a quiet spell rebuilds in this loop turn
    before = pool.rebuilds
    await asyncio.sleep(0)
    assert pool.rebuilds == before + 1
    pool._rebuild_cost = 0.02  # as with 10,000 gateways: the next rebuild waits 0.02 / 0.2 = 0.1 s
    monkeypatch.setattr(pool_mod, "REBUILD_SHARE", 0.2)
    for gid in ("g1", "g2", "g3", "g1"):
        pool.passive_failure(gid)
        pool.mark_dirty()
        await asyncio.sleep(0.01)
    assert pool.rebuilds == before + 1  # coalesced, not yet run
    await asyncio.sleep(0.12)
    assert pool.rebuilds == before + 2
