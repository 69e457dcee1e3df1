"""Agent-checked gateways: each agent reply resets the load estimate (regression: looked full
forever)."""

from __future__ import annotations

import random
from pathlib import Path

from tcpdispatch.balancing.base import PickRequest
from tcpdispatch.config import parse_config
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.health import parse_agent_reply


def _pool(tmp_path: Path, capacity: int | None) -> Pool:
    (tmp_path / "s").write_text("0123456789abcdef0123\n")
    gw = {"id": "a1", "address": "127.0.0.1:9001", "check": "agent://127.0.0.1:9201"}
    if capacity is not None:
        gw["capacity"] = capacity
    doc = {"dispatcher": {"secret_file": "s"}, "gateways": [gw]}
    return Pool(parse_config(doc, file="d.toml", base=tmp_path, env={}), rng=random.Random(1))


def _dispatch(pool: Pool, n: int) -> int:
    return sum(bool(pool.picker.pick(PickRequest(f"c{i}"))) for i in range(n))


def test_agent_reply_without_capacity_resets_issued_tickets(tmp_path: Path) -> None:
    pool = _pool(tmp_path, None)
    for _ in range(2):
        pool.on_result("a1", parse_agent_reply("up 50% maxconn:5"))
    pool.rebuild()
    assert _dispatch(pool, 10) == 5  # five slots left: the sixth client is refused
    # The gateway's clients went away; the next agent reply must make it usable again.
    pool.on_result("a1", parse_agent_reply("up 50% maxconn:5"))
    assert pool.gateways["a1"].load.issued == 0
    assert _dispatch(pool, 10) == 5


def test_agent_reply_with_configured_capacity_derives_connections(tmp_path: Path) -> None:
    pool = _pool(tmp_path, 100)
    for _ in range(2):
        pool.on_result("a1", parse_agent_reply("up 70% maxconn:70"))
    pool.rebuild()
    gw = pool.gateways["a1"]
    assert (gw.load.reported, gw.load.issued) == (30, 0)
    assert _dispatch(pool, 100) == 70
    pool.on_result("a1", parse_agent_reply("up 40% maxconn:40"))
    assert (gw.load.reported, gw.load.issued) == (60, 0)
    pool.on_result("a1", parse_agent_reply("up 25%"))  # percentage only
    assert gw.load.reported == 75


def test_bare_up_reply_keeps_the_estimate(tmp_path: Path) -> None:
    pool = _pool(tmp_path, 10)
    for _ in range(2):
        pool.on_result("a1", parse_agent_reply("up"))
    pool.rebuild()
    _dispatch(pool, 3)
    pool.on_result("a1", parse_agent_reply("up"))  # says nothing about load
    assert pool.gateways["a1"].load.issued == 3
