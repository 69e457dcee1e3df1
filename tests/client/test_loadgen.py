"""Load generator: planning, merging reports, and one worker against fakes."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import pytest
from aiohttp import web
from helpers import async_wait_until

from tcpdispatch.client.loadgen import WorkerConfig, merge, run_worker
from tcpdispatch.client.loadgen_cli import add_parser, plan
from tcpdispatch.errors import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["loadgen", *argv])


def test_plan_splits_clients_rate_and_source_addresses() -> None:
    cfgs = plan(
        parse("--dispatcher", "http://a:1,http://b:2", "--clients", "10001", "--rate", "1000")
    )
    assert len(cfgs) == 3 and sum(c.clients for c in cfgs) == 10001
    assert [c.clients for c in cfgs] == [3334, 3334, 3333]
    assert sum(c.rate for c in cfgs) == pytest.approx(1000)
    assert [c.local_host for c in cfgs] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert list(cfgs[0].dispatchers) == ["http://a:1", "http://b:2"]
    small = plan(parse("--dispatcher", "http://a:1", "--clients", "50"))
    assert len(small) == 1 and small[0].local_host is None


@pytest.mark.parametrize(
    "argv, key",
    [
        (["--clients", "40000", "--processes", "2"], "--processes"),
        (["--clients", "0"], "--clients"),
        (["--clients", "5", "--duration", "0"], "--duration"),
    ],
)
def test_plan_rejects_impossible_requests(argv: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        plan(parse("--dispatcher", "http://a:1", *argv))
    assert exc.value.key == key


def test_plan_requires_a_source() -> None:
    with pytest.raises(ConfigError, match="--dispatcher"):
        plan(parse("--clients", "5"))
    with pytest.raises(ConfigError, match="not an http"):
        plan(parse("--clients", "5", "--dispatcher", "ftp://x"))


def test_merge_sums_workers_and_computes_percentiles() -> None:
    a = {
        "target": 2,
        "started": 2,
        "connected": 2,
        "ever_connected": 2,
        "reconnects": 1,
        "failed_rounds": 0,
        "dispatch_requests": 3,
        "gateways": {"g1": 1, "g2": 1},
        "errors": {"overloaded": 1},
        "connect_latencies": [0.1, 0.3],
        "ttr": [[10.0, 10.5]],
        "unrepaired_since": [],
    }
    b = {
        "target": 1,
        "started": 1,
        "connected": 0,
        "ever_connected": 1,
        "reconnects": 0,
        "failed_rounds": 2,
        "dispatch_requests": 2,
        "gateways": {},
        "errors": {"overloaded": 2},
        "connect_latencies": [0.2],
        "ttr": [],
        "unrepaired_since": [12.0],
    }
    s = merge([a, b])
    assert (s["clients"], s["connected"], s["unrepaired"], s["dispatch_requests"]) == (3, 2, 1, 5)
    assert s["gateways"] == {"g1": 1, "g2": 1} and s["errors"] == {"overloaded": 3}
    assert s["connect_latency_s"] == {"p50": 0.2, "p90": 0.3, "p99": 0.3, "max": 0.3}
    assert s["time_to_reconnect_s"]["count"] == 1 and s["time_to_reconnect_s"]["max"] == 0.5
    assert s["last_reconnect_at"] == 10.5


async def test_worker_holds_clients_and_measures_failover(fakes: Any) -> None:
    g1 = await fakes["gateway"]("g1")
    g2 = await fakes["gateway"]("g2")
    n = [0]

    def respond(_: int) -> web.Response:
        n[0] += 1
        live = [g for g in (g1, g2) if g.server is not None and g.server.is_serving()]
        primary = live[n[0] % len(live)]
        return web.json_response(
            {
                "gateway": {"id": primary.id, "host": "127.0.0.1", "port": primary.port},
                "ticket": "t",
                "alternates": [],
            }
        )

    d = await fakes["dispatcher"](respond)
    reports: list[dict[str, Any]] = []
    cfg = WorkerConfig(
        index=0,
        clients=20,
        dispatchers=[d.url],
        rate=200,
        duration=3.0,
        progress_interval=0.1,
        seed=1,
    )
    task = asyncio.get_running_loop().create_task(run_worker(cfg, reports.append))
    await async_wait_until(
        lambda: reports and reports[-1]["connected"] == 20, timeout=3, what="20 connected"
    )
    on_g1 = reports[-1]["gateways"]["g1"]
    await g1.kill()
    final = await task
    assert final["type"] == "final" and final["connected"] == 20 and final["gateways"] == {"g2": 20}
    assert len(final["ttr"]) == on_g1 and all(0 < b - a < 2.5 for a, b in final["ttr"])
    assert len(final["connect_latencies"]) == 20 and final["unrepaired_since"] == []
    await async_wait_until(lambda: g2.open_connections == 0, what="worker closed its clients")


async def test_worker_messages_are_echoed_and_counted(fakes: Any) -> None:
    g1 = await fakes["gateway"]("g1")
    d = await fakes["dispatcher"](
        lambda n: web.json_response(
            {
                "gateway": {"id": "g1", "host": "127.0.0.1", "port": g1.port},
                "ticket": "t",
                "alternates": [],
            }
        )
    )
    cfg = WorkerConfig(
        index=0,
        clients=5,
        dispatchers=[d.url],
        rate=100,
        duration=1.5,
        progress_interval=0.1,
        seed=1,
        message_interval=0.1,
        echo_timeout=2.0,
    )
    final = await run_worker(cfg, lambda r: None)
    assert final["messages_sent"] >= 20 and final["messages_echoed"] == final["messages_sent"]
    assert len(g1.received) == final["messages_sent"]
    assert merge([final])["messages_echoed"] == final["messages_echoed"]
