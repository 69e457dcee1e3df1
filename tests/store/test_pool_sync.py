"""``Pool.sync``: the pool follows a shared store's state and keeps health/load of unchanged
gateways."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from tcpdispatch.balancing.base import PickRequest
from tcpdispatch.config import GatewayEntry, parse_config
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.health import ProbeResult
from tcpdispatch.store import SharedGateway


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def _pool(tmp_path: Path, clock: Clock) -> Pool:
    (tmp_path / "s").write_text("0123456789abcdef0123\n")
    doc = {
        "dispatcher": {"secret_file": "s"},
        "balancing": {"slow_start_s": 10},
        "gateways": [{"id": f"g{i}", "address": f"127.0.0.1:{9000 + i}"} for i in (1, 2)],
    }
    return Pool(
        parse_config(doc, file="d.toml", base=tmp_path, env={}), clock=clock, rng=random.Random(1)
    )


def _up(pool: Pool, *ids: str) -> None:
    for gid in ids:
        for _ in range(2):
            pool.on_result(gid, ProbeResult(ok=True, connections=0, capacity=1000))
    pool.rebuild()


def _entries(pool: Pool) -> dict[str, SharedGateway]:
    return {e.config.id: e for e in pool.shared_state()}


def test_sync_applies_weight_drain_add_remove_and_keeps_health(tmp_path: Path) -> None:
    clock = Clock()
    pool = _pool(tmp_path, clock)
    _up(pool, "g1", "g2")
    g1 = pool.gateways["g1"]
    g1.load.report(42)
    state = _entries(pool)
    state["g1"] = replace(state["g1"], config=replace(state["g1"].config, weight=5.0))
    state["g2"] = replace(state["g2"], drain=True)
    state["g3"] = SharedGateway(
        GatewayEntry("g3", "127.0.0.1", 9003, "tcp://127.0.0.1:9003"), "admin"
    )
    assert pool.sync(state)
    assert pool.gateways["g1"] is g1 and g1.health.up and g1.load.reported == 42  # kept
    assert g1.config.weight == 5.0
    assert pool.gateways["g2"].admin_drain and pool.gateways["g2"].state() == "draining"
    assert pool.gateways["g3"].source == "admin" and not pool.gateways["g3"].health.up
    picked = {pool.picker.pick(PickRequest(str(i)))[0].id for i in range(50)}
    assert picked == {"g1"}  # g2 drained, g3 not up yet
    del state["g1"]
    assert pool.sync(state) and "g1" not in pool.gateways
    assert not pool.sync(state)  # idempotent


def test_undrain_by_sync_ramps_through_slow_start(tmp_path: Path) -> None:
    clock = Clock()
    pool = _pool(tmp_path, clock)
    _up(pool, "g1", "g2")
    pool.set_drain("g2", True)
    state = _entries(pool)
    state["g2"] = replace(state["g2"], drain=False)
    pool.sync(state)
    assert pool.gateways["g2"].up_since == clock.t and not pool.gateways["g2"].admin_drain


def test_initial_sync_skips_slow_start_for_new_gateways(tmp_path: Path) -> None:
    pool = _pool(tmp_path, Clock())
    state = _entries(pool)
    state["g9"] = SharedGateway(
        GatewayEntry("g9", "127.0.0.1", 9009, "tcp://127.0.0.1:9009"), "admin"
    )
    pool.sync(state, initial=True)
    _up(pool, "g9")
    assert pool.gateways["g9"].up_since is None


def test_shared_pool_ignores_file_membership_on_reload(tmp_path: Path) -> None:
    pool = _pool(tmp_path, Clock())
    pool.shared = True
    state = _entries(pool)
    state["g1"] = replace(state["g1"], config=replace(state["g1"].config, weight=7.0))
    pool.sync(state)
    cfg = replace(pool._config, gateways=())  # the file now lists nothing: the store still wins
    pool.apply_config(cfg)
    assert set(pool.gateways) == {"g1", "g2"} and pool.gateways["g1"].config.weight == 7.0


def test_a_pool_built_shared_still_holds_the_file_gateways_to_seed_the_store(
    tmp_path: Path,
) -> None:
    """The store is seeded from the first pool (shared_state): a pool built with shared=True
    must load the file's gateways before the store owns membership."""
    cfg = _pool(tmp_path, Clock())._config
    pool = Pool(cfg, clock=Clock(), rng=random.Random(1), shared=True)
    assert pool.shared and {e.config.id for e in pool.shared_state()} == {"g1", "g2"}
    pool.apply_config(replace(cfg, gateways=()))  # from then on, the file no longer decides
    assert set(pool.gateways) == {"g1", "g2"}
