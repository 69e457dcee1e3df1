"""The dispatcher side in one process: the Rebalancer over a real pool and app, fake gateway
status ports.

Orders go out as POST /shed with the gateways' admin token; moved clients (``leaving=``) are
placed below target and never on a donor; the admin API pauses, resumes and triggers;
/metrics exports the state; a refused order opens the breaker.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from dispatcher.conftest import ADMIN
from dispatcher_stack import Stack, call
from harness import free_port

from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.dispatcher.rebalancer import Rebalancer, shed_url
from tcpdispatch.dispatcher.service import Stats
from tcpdispatch.health import ProbeResult
from tcpdispatch.store import MemoryStore

GW_TOKEN = "gateway-admin-token"


class FakeStatusPorts:
    """One aiohttp server answering POST /shed for every gateway (by port)."""

    def __init__(self) -> None:
        self.orders: list[tuple[str, dict[str, Any], str]] = []
        self.status = 202
        self.ports: dict[int, str] = {}
        self.runners: list[web.AppRunner] = []

    async def add(self, gid: str) -> int:
        port = free_port()

        async def shed(request: web.Request) -> web.Response:
            doc = await request.json()
            self.orders.append((gid, doc, request.headers.get("Authorization", "")))
            if self.status != 202:
                return web.json_response({"error": "forbidden"}, status=self.status)
            return web.json_response({"shedding": doc["count"], "asked": doc["count"]}, status=202)

        app = web.Application()
        app.router.add_post("/shed", shed)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.runners.append(runner)
        return port


@pytest.fixture
async def ports() -> AsyncIterator[FakeStatusPorts]:
    f = FakeStatusPorts()
    yield f
    for r in f.runners:
        await r.cleanup()


async def build(
    make_config: Any, ports: FakeStatusPorts, tmp_path: Path, held: dict[str, int], **rebalance: Any
) -> tuple[Stack, Rebalancer]:
    (tmp_path / "gw.token").write_text(GW_TOKEN + "\n")
    gateways = []
    for i, gid in enumerate(held):
        port = await ports.add(gid)
        gateways.append(
            {
                "id": gid,
                "address": f"127.0.0.1:{9100 + i}",
                "check": f"http://127.0.0.1:{port}/status",
            }
        )
    settings = {
        "gateway_admin_token_file": "gw.token",
        "min_session_age_s": 7,
        "settle_s": 0.5,
        **rebalance,
    }
    cfg = make_config(gateways, rebalance=settings)
    pool = Pool(cfg, rng=random.Random(7))
    for gid, n in held.items():
        for _ in range(pool.gateways[gid].health.rise):
            pool.on_result(gid, ProbeResult(ok=True, connections=n, capacity=10_000))
    pool.rebuild()
    stats = Stats()
    rb = Rebalancer(cfg.rebalance, pool, stats, MemoryStore(), rng=random.Random(5))
    app = Stack(cfg, pool, rng=random.Random(3), stats=stats, rebalance=rb)
    await rb.start()
    rb._task.cancel()  # type: ignore[union-attr]  # ticks are driven by the test
    return app, rb


def test_shed_url() -> None:
    assert shed_url("http://10.0.0.1:9101/status") == "http://10.0.0.1:9101/shed"
    assert shed_url("agent://10.0.0.1:9101") is None and shed_url("push") is None


async def test_leader_orders_donors_and_places_moved_clients(
    make_config: Any, ports: FakeStatusPorts, tmp_path: Path
) -> None:
    app, rb = await build(make_config, ports, tmp_path, {"g1": 1500, "g2": 1500, "g3": 0})
    try:
        await rb.step()
        assert rb.leader  # the memory store: the single dispatcher leads
        assert sorted((g, d["count"]) for g, d, _ in ports.orders) == [("g1", 100), ("g2", 100)]
        assert all(d["min_age_s"] == 7 and a == f"Bearer {GW_TOKEN}" for _, d, a in ports.orders)
        assert rb.moves_accepted == 200
        # a moved client lands below target: never on a donor, never back where it came from
        for i in range(50):
            r = await call(
                app, "GET", "/v1/dispatch", f"client_id=c{i}&leaving=g1&reason=rebalance".encode()
            )
            doc = r.json()
            ids = [doc["gateway"]["id"]] + [a["id"] for a in doc["alternates"]]
            assert ids == ["g3"], ids
        assert rb.moves_placed == 50
        # a plain dispatch is unchanged; a bad leaving is refused
        assert (await call(app, "GET", "/v1/dispatch", b"client_id=x")).status == 200
        bad = await call(app, "GET", "/v1/dispatch", b"client_id=x&leaving=" + b"g" * 80)
        assert bad.status == 400 and "leaving" in bad.json()["detail"]
        status = (await call(app, "GET", "/v1/rebalance")).json()
        assert status["leader"] and status["round"]["donors"] == ["g1", "g2"]
        assert {g["id"]: g["role"] for g in status["gateways"]} == {
            "g1": "donor",
            "g2": "donor",
            "g3": "recipient",
        }
        metrics = (await call(app, "GET", "/metrics")).body.decode()
        assert "tcpdispatch_rebalance_moves_requested_total 200.0" in metrics
        assert "tcpdispatch_rebalance_leader 1.0" in metrics
        assert 'tcpdispatch_rebalance_target{gateway="g3"} 1000.0' in metrics
    finally:
        await rb.close()


async def test_admin_pause_resume_trigger(
    make_config: Any, ports: FakeStatusPorts, tmp_path: Path
) -> None:
    app, rb = await build(
        make_config, ports, tmp_path, {"g1": 1500, "g2": 1500, "g3": 0}, mode="manual"
    )
    try:
        assert (await call(app, "POST", "/v1/rebalance/pause")).status == 401
        assert (
            await call(app, "POST", "/v1/rebalance/trigger", token="wrong-token-1")
        ).status == 401
        await rb.step()
        assert not ports.orders  # manual: waits for a trigger
        r = await call(app, "POST", "/v1/rebalance/pause", token=ADMIN)
        assert r.status == 200 and r.json()["paused"]
        assert (await call(app, "POST", "/v1/rebalance/trigger", token=ADMIN)).status == 202
        await rb.step()
        assert not ports.orders  # paused
        assert (await call(app, "POST", "/v1/rebalance/resume", token=ADMIN)).json()[
            "paused"
        ] is False
        await rb.step()
        assert len(ports.orders) == 2  # the triggered round runs
    finally:
        await rb.close()


async def test_refused_order_opens_breaker(
    make_config: Any, ports: FakeStatusPorts, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, rb = await build(make_config, ports, tmp_path, {"g1": 1500, "g2": 500})
    ports.status = 403
    try:
        with caplog.at_level("INFO", logger="tcpdispatch.rebalance"):
            await rb.step()
            await rb.step()
        assert rb.planner.breaker.open and rb.order_failures == 1
        assert len(ports.orders) == 1  # no second order while open
        text = caplog.text
        assert "did not accept" in text and "gateway_admin_token_file" in text
        assert text.count("round 1 started") == 1
        doc = json.loads((await call(app, "GET", "/v1/rebalance")).body)
        assert doc["breaker"]["state"] == "open"
    finally:
        await rb.close()


async def test_off_mode_never_leads(
    make_config: Any, ports: FakeStatusPorts, tmp_path: Path
) -> None:
    app, rb = await build(make_config, ports, tmp_path, {"g1": 1500, "g2": 500}, mode="off")
    try:
        await rb.step()
        assert not rb.leader and not ports.orders
        r = await call(app, "POST", "/v1/rebalance/trigger", token=ADMIN)
        assert r.status == 409
    finally:
        await rb.close()


async def test_sessions_reported_leaving_are_not_shed_again(
    make_config: Any, ports: FakeStatusPorts, tmp_path: Path
) -> None:
    app, rb = await build(make_config, ports, tmp_path, {"g1": 1500, "g2": 1000, "g3": 1000})
    try:
        rb.pool.on_result(
            "g1", ProbeResult(ok=True, connections=1500, capacity=10_000, leaving=500)
        )
        await rb.step()
        assert not ports.orders  # the 500 are on their way already
        doc = (await call(app, "GET", "/v1/rebalance")).json()
        assert [g["leaving"] for g in doc["gateways"]] == [500, 0, 0]
    finally:
        await rb.close()
