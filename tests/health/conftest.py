"""In-test servers for health-check tests: a gateway-like /status server, agents, dead ports."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web


def status_doc(**overrides: Any) -> dict[str, Any]:
    """A /status document shaped like the gateway's (CONTRACTS.md)."""
    doc: dict[str, Any] = {
        "id": "g1",
        "state": "serving",
        "connections": 12,
        "capacity": 100,
        "address": "127.0.0.1:9001",
        "accepted": 40,
        "rejected": {"overloaded": 1},
        "cpu": 0.25,
        "uptime_s": 3.5,
        "workers": 1,
        "version": "0.1.0",
    }
    doc.update(overrides)
    return doc


class StatusServer:
    """aiohttp server answering GET /status; ``mode`` switches how it behaves.

    Modes: "ok" (JSON ``doc``), "hang" (accept, read the request, never answer — what a
    SIGSTOPped gateway looks like from outside), "500", "badjson", "slow" (answer after
    ``delay`` seconds).
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.doc = status_doc()
        self.delay = 0.0
        self.hits = 0
        self.release = asyncio.Event()  # set at teardown so hung handlers end
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/status"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if self.mode == "hang":
            await self.release.wait()
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        if self.mode == "500":
            return web.json_response({"error": "boom"}, status=500)
        if self.mode == "badjson":
            return web.Response(text="{not json", content_type="application/json")
        return web.json_response(self.doc)

    async def start(self) -> StatusServer:
        app = web.Application()
        app.router.add_get("/status", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Close the listener and every connection: the port now refuses, like a crash."""
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def status_server() -> AsyncIterator[Callable[[], Awaitable[StatusServer]]]:
    servers: list[StatusServer] = []

    async def make() -> StatusServer:
        server = await StatusServer().start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def agent_server() -> AsyncIterator[Callable[[bytes | None], Awaitable[int]]]:
    """Factory: an agent that sends ``reply`` and closes (``None``: accept and never send)."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def make(reply: bytes | None) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if reply is None:
                writers.append(writer)  # keep it open and silent
                return
            writer.write(reply)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield make
    for w in writers:
        w.close()
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel completes TCP handshakes but nobody ever accepts or answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port that refuses connections: bound (so nobody else takes it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
