"""The built-in HTTP server (httpserver.py) over a real loopback socket, with the real service
and router."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from dispatcher_stack import Stack
from helpers import async_wait_until, require_speedups, scaled

from tcpdispatch.dispatcher.http import Request, Response
from tcpdispatch.dispatcher.httpserver import HTTPServer

ADMIN = "admin-token-123"  # tests/dispatcher/conftest.py writes it to admin.token
DISPATCH = b"GET /v1/dispatch?client_id=alice HTTP/1.1\r\nHost: x\r\n\r\n"


def entry_points(stack: Stack) -> tuple[Any, Any]:
    """The two entry points an HTTPServer takes: the dispatch fast path and the router."""
    return stack.service.dispatch_bytes, stack.router.handle


class Client:
    """Raw bytes out, parsed HTTP/1.1 answers (Content-Length bodies) in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), scaled(5))
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), lines[0]
        status = int(lines[0].split()[1])
        headers = {
            k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
        }
        body = await asyncio.wait_for(
            self.reader.readexactly(int(headers["content-length"])), scaled(5)
        )
        return status, headers, body

    async def closed(self) -> bool:
        """True once the server has closed the connection (EOF)."""
        return await asyncio.wait_for(self.reader.read(1), scaled(5)) == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture(params=["python", "c"])
async def serve(
    request: pytest.FixtureRequest, make_app: Callable[..., Stack]
) -> AsyncIterator[Callable[..., Any]]:
    """Every server test runs twice: all in Python, and with the C fast path in front."""
    if request.param == "c":
        require_speedups()
    servers: list[HTTPServer] = []
    clients: list[Client] = []

    async def start(
        app: Stack | None = None, **limits: Any
    ) -> tuple[HTTPServer, Callable[[], Any]]:
        app = app or make_app()
        raw = (
            {"raw": app.service.fast_request, "on_date": app.service.set_date}
            if request.param == "c"
            else {}
        )
        server = HTTPServer(
            app.service.dispatch_bytes, app.router.handle, "127.0.0.1", 0, **limits, **raw
        )
        await server.start()
        servers.append(server)

        async def connect() -> Client:
            client = Client(*await asyncio.open_connection("127.0.0.1", server.port))
            clients.append(client)
            return client

        return server, connect

    yield start
    for c in clients:
        c.close()
    for s in servers:
        await s.close(grace=0.5)


async def test_keep_alive_serves_several_dispatches_on_one_connection(serve: Any) -> None:
    server, connect = await serve()
    c = await connect()
    for _ in range(3):
        await c.send(DISPATCH)
        status, headers, body = await c.answer()
        doc = json.loads(body)
        assert status == 200 and headers["content-type"] == "application/json"
        assert "connection" not in headers and headers["date"].endswith("GMT")
        assert doc["gateway"]["id"] in {"g1", "g2", "g3"} and len(doc["alternates"]) == 2
    assert len(server.connections) == 1


async def test_pipelined_requests_answered_in_order_across_the_router(serve: Any) -> None:
    _, connect = await serve()
    c = await connect()
    batch = (
        DISPATCH
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        + DISPATCH
        + b"GET /v1/dispatch HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
        + DISPATCH
    )
    for i in range(0, len(batch), 37):  # split mid-request too
        await c.send(batch[i : i + 37])
    answers = [await c.answer() for _ in range(6)]
    assert [a[0] for a in answers] == [200, 200, 200, 400, 404, 200]
    assert "ticket" in json.loads(answers[0][2]) and json.loads(answers[1][2])["status"] == "ok"
    assert json.loads(answers[3][2])["error"] == "bad_request"
    assert json.loads(answers[4][2])["error"] == "not_found"
    assert "ticket" in json.loads(answers[5][2])


async def test_connection_close_and_http10_close_after_the_answer(serve: Any) -> None:
    _, connect = await serve()
    for request in (
        b"GET /v1/dispatch?client_id=a HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /v1/dispatch?client_id=a HTTP/1.0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
    ):
        c = await connect()
        await c.send(request)
        status, headers, _ = await c.answer()
        assert status == 200 and headers["connection"] == "close"
        assert await c.closed()


async def test_a_long_pipeline_through_the_router_is_queued_and_fully_answered(serve: Any) -> None:
    _, connect = await serve()
    c = await connect()
    n = 100  # more than the queue bound: the server stops reading, then resumes
    await c.send(
        b"".join(
            b"GET /v1/gateways/g%d HTTP/1.1\r\n\r\n" % (i % 3 + 1) if i % 2 else DISPATCH
            for i in range(n)
        )
    )
    for i in range(n):
        status, _, body = await c.answer()
        doc = json.loads(body)
        assert status == 200 and (doc["id"] == f"g{i % 3 + 1}" if i % 2 else "ticket" in doc), (
            i,
            doc,
        )


async def test_nothing_is_answered_after_a_request_that_closes(serve: Any) -> None:
    _, connect = await serve()
    c = await connect()
    await c.send(DISPATCH.replace(b"Host: x", b"Connection: close") + DISPATCH)
    assert (await c.answer())[0] == 200
    assert await c.closed()  # the second request got no answer
    c = await connect()
    await c.send(
        DISPATCH.replace(b"Host: x", b"Connection: Upgrade\r\nUpgrade: websocket") + DISPATCH
    )
    status, headers, _ = await c.answer()  # the upgrade is ignored, the request answered
    assert status == 200 and headers["connection"] == "close"
    assert await c.closed()


@pytest.mark.parametrize(
    "request_bytes", [b"BLAH\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01\x00"]
)
async def test_bad_request_line_gets_400_json_and_close(serve: Any, request_bytes: bytes) -> None:
    _, connect = await serve()
    c = await connect()
    await c.send(request_bytes + b"\r\n\r\n")
    status, headers, body = await c.answer()
    assert status == 400 and headers["connection"] == "close"
    assert json.loads(body)["error"] == "bad_request"
    assert await c.closed()


async def test_limits_431_414_413(serve: Any) -> None:
    _, connect = await serve(max_head=2048, max_url=1024, max_body=1000)
    cases = [
        (b"GET /v1/dispatch?client_id=a HTTP/1.1\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n", 431),
        (b"GET /v1/dispatch?client_id=a HTTP/1.1\r\n" + b"X-H: 1\r\n" * 150 + b"\r\n", 431),
        (b"GET /v1/dispatch?client_id=" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n", 414),
        (
            (
                b"POST /v1/report HTTP/1.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 5000\r\n\r\n"
            ),
            413,
        ),
        (
            b"POST /v1/report HTTP/1.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"300\r\n"
            + b"a" * 0x300
            + b"\r\n"
            + b"300\r\n"
            + b"a" * 0x300
            + b"\r\n0\r\n\r\n",
            413,
        ),
    ]
    for request, want in cases:
        c = await connect()
        await c.send(request)
        status, headers, body = await c.answer()
        assert status == want, (request[:60], body)
        assert headers["connection"] == "close" and json.loads(body)["detail"]
        if want == 413:  # one slug for the body limit, whichever layer enforces it
            assert json.loads(body)["error"] == "body_too_large"
        assert await c.closed()


async def test_a_header_line_that_never_ends_is_bounded(serve: Any) -> None:
    _, connect = await serve(max_head=2048)
    c = await connect()
    await c.send(b"GET /v1/dispatch?client_id=a HTTP/1.1\r\nX-Never-Ends: ")
    answer = asyncio.ensure_future(c.answer())
    for _ in range(300):  # the server answers once it has seen max_head bytes past the first read
        if answer.done():
            break
        try:
            await c.send(b"a" * 500)
        except ConnectionError:
            break
        await asyncio.sleep(0)
    status, _, body = await answer
    assert status == 431 and json.loads(body)["error"] == "request_header_fields_too_large"


async def test_unknown_route_and_wrong_method_go_through_the_router(serve: Any) -> None:
    _, connect = await serve()
    c = await connect()
    await c.send(b"GET /v1/nothing-here HTTP/1.1\r\n\r\n")
    status, _, body = await c.answer()
    assert status == 404 and json.loads(body)["error"] == "not_found"
    await c.send(b"DELETE /v1/dispatch HTTP/1.1\r\n\r\n")
    status, headers, _ = await c.answer()
    assert status == 405 and "GET" in headers["allow"]
    await c.send(b"HEAD /healthz HTTP/1.1\r\n\r\n")
    head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), scaled(5))
    assert head.startswith(b"HTTP/1.1 200 ")
    await c.send(DISPATCH)  # no body came after the HEAD answer: the next answer parses cleanly
    assert (await c.answer())[0] == 200


async def test_admin_post_with_json_body_through_the_router(serve: Any) -> None:
    _, connect = await serve()
    c = await connect()
    doc = json.dumps({"id": "g9", "address": "127.0.0.1:9009", "weight": 2}).encode()
    head = (
        b"POST /v1/gateways HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        % len(doc)
    )
    await c.send(head + b"\r\n" + doc)
    status, headers, body = await c.answer()
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    await c.send(
        head + b"Authorization: Bearer " + ADMIN.encode() + b"\r\nExpect: 100-continue\r\n\r\n"
    )
    assert (
        await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), scaled(5))
        == b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    await c.send(doc)
    status, _, body = await c.answer()
    assert status == 201 and json.loads(body)["id"] == "g9"
    await c.send(b"GET /v1/gateways HTTP/1.1\r\n\r\n")
    status, _, body = await c.answer()
    assert status == 200 and "g9" in {g["id"] for g in json.loads(body)["gateways"]}


async def test_forwarded_for_from_trusted_proxy_matches_the_router_path(
    serve: Any, make_app: Any, call_router: Any
) -> None:
    app = make_app(dispatcher={"policy": "ip_hash", "trusted_proxies": ["127.0.0.0/8"]})
    _, connect = await serve(app)
    c = await connect()
    for addr in ("198.51.100.7", "203.0.113.40", "192.0.2.200"):
        want = await call_router(app, "GET", "/v1/dispatch", b"client_id=a", client=(addr, 1))
        await c.send(
            b"GET /v1/dispatch?client_id=a HTTP/1.1\r\nX-Forwarded-For: 10.9.9.9, %b\r\n\r\n"
            % addr.encode()
        )
        _, _, body = await c.answer()
        assert json.loads(body)["gateway"] == want.json()["gateway"]


async def test_idle_connections_are_closed_busy_ones_are_not(serve: Any) -> None:
    server, connect = await serve(idle_timeout=0.2)
    idle = await connect()
    await idle.send(DISPATCH)
    assert (await idle.answer())[0] == 200
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await idle.closed()
    assert loop.time() - t0 < scaled(2)
    assert not server.connections


async def test_server_close_closes_idle_keep_alive_connections(serve: Any) -> None:
    server, connect = await serve()
    c = await connect()
    await c.send(DISPATCH)
    assert (await c.answer())[0] == 200
    await server.close(grace=0.5)
    assert await c.closed()


async def test_head_dispatch_is_405_and_issues_no_ticket(serve: Any, make_app: Any) -> None:
    app = make_app()
    _, connect = await serve(app)
    c = await connect()
    await c.send(b"HEAD /v1/dispatch?client_id=alice HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), scaled(5))
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    assert lines[0].startswith("HTTP/1.1 405") and headers["allow"] == "GET"
    await c.send(DISPATCH)  # the HEAD answer had no body: the next answer follows directly
    status, _, _ = await c.answer()
    assert status == 200
    assert app.stats.dispatched == 1 and sum(g.load.issued for g in app.pool.gateways.values()) == 1


async def test_a_slow_request_head_gets_408(serve: Any) -> None:
    _, connect = await serve(header_timeout=0.4, idle_timeout=60)
    c = await connect()
    loop = asyncio.get_running_loop()
    start = loop.time()
    request = b"GET /v1/dispatch?client_id=slowloris HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
    answer = asyncio.ensure_future(c.answer())
    for (
        byte
    ) in request:  # one byte every 20 ms: every byte is "activity", yet the head never ends in time
        if answer.done():
            break
        try:
            await c.send(bytes([byte]))
        except ConnectionError:
            break
        await asyncio.sleep(0.02)
    status, headers, body = await answer
    assert status == 408 and json.loads(body)["error"] == "request_timeout"
    assert headers["connection"] == "close"
    assert loop.time() - start < scaled(3.0)
    assert await c.closed()


async def test_a_slow_request_body_gets_408(serve: Any) -> None:
    _, connect = await serve(body_timeout=0.4, idle_timeout=60)
    c = await connect()
    await c.send(
        b"POST /v1/report HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 500\r\n\r\n{"
    )
    answer = asyncio.ensure_future(c.answer())
    for _ in range(200):
        if answer.done():
            break
        try:
            await c.send(b" ")
        except ConnectionError:
            break
        await asyncio.sleep(0.02)
    status, _, body = await answer
    assert status == 408 and json.loads(body)["error"] == "request_timeout"


async def test_close_cancels_and_awaits_in_flight_requests(make_app: Any) -> None:
    app = make_app()
    entered = asyncio.Event()

    async def hanging(req: Request) -> Response:
        entered.set()
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    server = HTTPServer(app.service.dispatch_bytes, hanging, "127.0.0.1", 0)
    await server.start()
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(entered.wait(), scaled(5))
    assert len(server.tasks) == 1
    task = next(iter(server.tasks))
    await server.close(grace=0.1)
    assert task.cancelled() and not server.tasks
    assert not [
        t for t in asyncio.all_tasks() if t.get_coro().__qualname__.endswith("_run_handler")
    ]
    writer.close()


async def test_reuse_port_lets_two_servers_share_one_port(make_app: Callable[..., Stack]) -> None:
    from helpers import free_port

    port = free_port()
    first = HTTPServer(*entry_points(make_app()), "127.0.0.1", port, reuse_port=True)
    second = HTTPServer(*entry_points(make_app()), "127.0.0.1", port, reuse_port=True)
    plain = HTTPServer(*entry_points(make_app()), "127.0.0.1", port)
    await first.start()
    try:
        await second.start()  # would raise OSError(EADDRINUSE) without SO_REUSEPORT
        with pytest.raises(OSError):
            await plain.start()
        await first.close(grace=0.1)  # the survivor keeps answering on the shared port
        client = Client(*await asyncio.open_connection("127.0.0.1", port))
        await client.send(DISPATCH)
        status, _, body = await client.answer()
        assert status == 200 and json.loads(body)["gateway"]["id"]
        client.close()
    finally:
        await first.close(grace=0.1)
        await second.close(grace=0.1)


class Streams:
    """A handler that answers /stream with chunks fed by the test, everything else with 404."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def handle(self, req: Request) -> Response:
        if req.path != "/stream":
            return Response(404, [(b"content-type", b"text/plain")], b"no")
        return Response(200, [(b"content-type", b"text/event-stream")], stream=self.chunks())

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self.queue.get()) is not None:
                yield chunk
        finally:
            self.closed.set()


class StreamRig:
    """A server whose handler streams what the test feeds it, and one client that asked for it."""

    def __init__(self, streams: Streams, server: HTTPServer) -> None:
        self.streams, self.server = streams, server
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self) -> bytes:
        """Connect, ask for /stream and return the answer's head."""
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        self.writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), scaled(5))


@pytest.fixture
async def rig(make_app: Callable[..., Stack]) -> AsyncIterator[StreamRig]:
    streams = Streams()
    server = HTTPServer(make_app().service.dispatch_bytes, streams.handle, "127.0.0.1", 0)
    await server.start()
    rig = StreamRig(streams, server)
    yield rig
    if hasattr(rig, "writer"):
        rig.writer.close()
    await server.close(grace=0.1)


async def test_a_stream_is_sent_chunked_as_it_comes_then_the_connection_goes_on(
    rig: StreamRig,
) -> None:
    head = await rig.open()
    assert b"transfer-encoding: chunked" in head and b"content-length" not in head
    assert b"text/event-stream" in head
    rig.streams.queue.put_nowait(b"data: one\n\n")
    expected = b"b\r\ndata: one\n\n\r\n"
    assert await asyncio.wait_for(rig.reader.readexactly(len(expected)), scaled(5)) == expected
    rig.streams.queue.put_nowait(None)  # the stream ends: the last chunk, and the connection stays
    assert await asyncio.wait_for(rig.reader.readexactly(5), scaled(5)) == b"0\r\n\r\n"
    rig.writer.write(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await Client(rig.reader, rig.writer).answer()
    assert status == 404 and body == b"no"


async def test_a_client_that_goes_away_ends_its_stream(rig: StreamRig) -> None:
    await rig.open()
    rig.writer.close()
    server = rig.server
    await async_wait_until(lambda: not server.connections, 5, what="the connection to close")
    rig.streams.queue.put_nowait(b"data: after\n\n")  # the next chunk finds the client gone
    await asyncio.wait_for(rig.streams.closed.wait(), scaled(5))
    await async_wait_until(lambda: not server.tasks, 5, what="the stream task to end")


async def test_a_stream_whose_client_does_not_read_is_dropped(rig: StreamRig) -> None:
    await rig.open()
    chunk = b"data: " + b"x" * 65536 + b"\n\n"
    # 13 MB the client never reads: more than the kernel's buffers and the 1 MiB limit
    for _ in range(200):
        rig.streams.queue.put_nowait(chunk)
    await asyncio.wait_for(rig.streams.closed.wait(), scaled(10))
    server = rig.server
    await async_wait_until(lambda: not server.connections, 5, what="the slow reader to be dropped")


async def test_server_close_ends_open_streams_at_once(rig: StreamRig) -> None:
    await rig.open()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await rig.server.close(grace=5.0)
    assert loop.time() - t0 < 2.0, "an open stream must not hold the shutdown for its grace period"
    await asyncio.wait_for(rig.streams.closed.wait(), scaled(5))
