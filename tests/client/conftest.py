"""In-test fakes for the client tests: a protocol-speaking gateway and an aiohttp dispatcher."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tcpdispatch.errors import ErrorCode, RemoteProtocolError
from tcpdispatch.protocol import Bye, Connection, Data, Hello, Ping, Reconnect, Role, State, Welcome


@dataclass
class FakeGateway:
    """An echo gateway on loopback. Behaviour knobs are plain attributes."""

    id: str
    heartbeat_ms: int = 10000
    refuse: ErrorCode | None = None  # answer HELLO with ERROR(refuse)
    answer_pings: bool = True
    echo_gate: asyncio.Event | None = None  # when set: DATA is echoed only once the event is set
    later: list[asyncio.Task[None]] = field(default_factory=list)  # echoes waiting for the gate
    port: int = 0
    hellos: list[Hello] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    writers: list[tuple[Connection, asyncio.StreamWriter]] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> FakeGateway:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def json(self, ticket: str = "t") -> dict[str, Any]:
        return {"id": self.id, "host": "127.0.0.1", "port": self.port, "ticket": ticket}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(Role.SERVER)
        self.writers.append((conn, writer))
        try:
            while data := await reader.read(65536):
                try:
                    frames = conn.receive_data(data)
                except RemoteProtocolError:
                    writer.write(conn.data_to_send())
                    break
                for frame in frames:
                    if isinstance(frame, Hello):
                        self.hellos.append(frame)
                        if self.refuse is not None:
                            conn.fail(self.refuse, self.refuse.slug)
                        else:
                            conn.send(
                                Welcome(
                                    f"{self.id}-s{len(self.hellos)}",
                                    self.heartbeat_ms,
                                    3 * self.heartbeat_ms,
                                )
                            )
                    elif isinstance(frame, Data):
                        self.received.append(frame.payload)
                        if self.echo_gate is not None:
                            self.later.append(
                                asyncio.get_running_loop().create_task(
                                    self._echo_later(conn, writer, frame.payload)
                                )
                            )
                        else:
                            conn.send_data(frame.payload)
                    elif isinstance(frame, Ping) and not self.answer_pings:
                        conn.data_to_send()  # swallow the automatic PONG
                    elif isinstance(frame, Bye):
                        break
                writer.write(conn.data_to_send())
                if self.refuse is not None:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _echo_later(
        self, conn: Connection, writer: asyncio.StreamWriter, payload: bytes
    ) -> None:
        assert self.echo_gate is not None
        await self.echo_gate.wait()
        if not writer.is_closing() and conn.state in (State.OPEN, State.DRAINING):
            conn.send_data(payload)
            writer.write(conn.data_to_send())

    def reconnect_all(self, delay_ms: int, reason: str = "drain") -> None:
        for conn, writer in self.writers:
            try:
                conn.send(Reconnect(delay_ms, reason))
                writer.write(conn.data_to_send())
            except Exception as exc:  # noqa: BLE001 - closed connections
                print(f"fake gateway {self.id}: cannot send RECONNECT: {exc!r}")

    async def kill(self) -> None:
        """Stop listening and drop every connection (like a crash: RST/EOF)."""
        assert self.server is not None
        self.server.close()
        for _, writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()

    @property
    def open_connections(self) -> int:
        return sum(1 for _, w in self.writers if not w.is_closing())


@dataclass
class FakeDispatcher:
    """An aiohttp dispatcher; ``handler(request_number)`` returns the web.Response."""

    respond: Callable[[int], web.Response]
    requests: list[float] = field(default_factory=list)  # monotonic timestamps
    queries: list[dict[str, str]] = field(default_factory=list)  # query parameters of each
    reports: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None

    async def start(self) -> FakeDispatcher:
        app = web.Application()
        app.router.add_get("/v1/dispatch", self._dispatch)
        app.router.add_post("/v1/report", self._report)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def _dispatch(self, request: web.Request) -> web.Response:
        self.requests.append(time.monotonic())
        self.queries.append(dict(request.query))
        return self.respond(len(self.requests))

    async def _report(self, request: web.Request) -> web.Response:
        self.reports.append(await request.json())
        return web.json_response({}, status=202)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, Callable[..., Any]]]:
    """Factories ``gateway(id, **knobs)`` and ``dispatcher(respond)``, cleaned up at teardown."""
    started_g: list[FakeGateway] = []
    started_d: list[FakeDispatcher] = []

    async def gateway(gid: str, **kw: Any) -> FakeGateway:
        g = await FakeGateway(gid, **kw).start()
        started_g.append(g)
        return g

    async def dispatcher(respond: Callable[[int], web.Response]) -> FakeDispatcher:
        d = await FakeDispatcher(respond).start()
        started_d.append(d)
        return d

    yield {"gateway": gateway, "dispatcher": dispatcher}
    for d in started_d:
        await d.stop()
    for g in started_g:
        if g.server is not None and g.server.is_serving():
            await g.kill()


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A listening socket that never accepts: connects complete, nothing ever answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.fixture
def dead_address() -> str:
    """A loopback port nobody listens on (connects are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"
