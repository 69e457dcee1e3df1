"""A gateway whose status endpoint fails every other probe must not flap in and out of rotation."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import async_wait_until

pytestmark = pytest.mark.integration


class FlakyStatus:
    """Relays a gateway's real /status; ``mode`` decides which probes fail (HTTP 503)."""

    def __init__(self, real_url: str) -> None:
        self.real_url = real_url
        self.mode = "ok"  # ok | fail | alternate
        self.probes = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.probes += 1
        if self.mode == "fail" or (self.mode == "alternate" and self.probes % 2):
            return web.json_response({"error": "flaky"}, status=503)
        async with aiohttp.ClientSession() as http, http.get(self.real_url) as r:
            return web.json_response(await r.json())

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/status", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def watch_state(d: Any, gid: str, flaky: FlakyStatus, probes: int) -> set[str]:
    """Every state the dispatcher reports for ``gid`` while ``probes`` more probes happen."""
    seen: set[str] = set()
    target = flaky.probes + probes
    while flaky.probes < target:
        seen.add((await asyncio.to_thread(d.states))[gid])
        await asyncio.sleep(0.03)
    seen.add((await asyncio.to_thread(d.states))[gid])
    return seen


async def test_flapping_status_holds_state_by_rise_and_fall(system: Any, fleets: Any) -> None:
    g1, g2 = system.gateway("g1"), system.gateway("g2")
    flaky = FlakyStatus(g2.status_url)
    await flaky.start()
    try:
        g2.check = f"http://127.0.0.1:{flaky.port}/status"
        d = system.dispatcher([g1, g2])  # rise 2, fall 2, a probe every 0.2 s
        await asyncio.to_thread(system.wait_ready)
        fleet = fleets(30, [d.url])
        await fleet.start()
        await fleet.exchange(2)
        assert fleet.on("g2"), fleet.by_gateway()

        # Up, then failing every other probe: stays up (never `fall` failures in a row).
        flaky.mode = "alternate"
        assert await watch_state(d, "g2", flaky, 12) == {"up"}
        assert "g2" in await asyncio.to_thread(d.handed_out)
        await fleet.exchange(2)
        assert fleet.reconnects() == 0

        # Down (two failures in a row), then alternating: stays down (never `rise` successes in a
        # row).
        flaky.mode = "fail"
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: d.states()["g2"] == "down"),
            timeout=5,
            what="g2 down after `fall` failures",
        )
        flaky.mode = "alternate"
        assert await watch_state(d, "g2", flaky, 12) == {"down"}
        assert "g2" not in await asyncio.to_thread(d.handed_out)

        # Healthy again: up after `rise` successes. Its clients were never disturbed meanwhile.
        flaky.mode = "ok"
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: d.states()["g2"] == "up"),
            timeout=5,
            what="g2 up after `rise` successes",
        )
        await fleet.exchange(2)
        assert fleet.reconnects() == 0 and fleet.resent() == 0
    finally:
        await flaky.close()
