"""A small HTTP/1.1 server on asyncio (uvloop) + httptools, built around the dispatch fast path.

``GET /v1/dispatch`` is answered synchronously inside the protocol callback
(pick and sign are synchronous): no task, no Request object, one
``transport.write`` per answer. Before httptools sees a read, ``raw`` (the C
accelerator, see :mod:`tcpdispatch.dispatcher.fastpath`) may answer it whole
when it is exactly one plain dispatch request and the connection is between
requests. Every other request is read whole and handed, as a
:class:`~tcpdispatch.dispatcher.http.Request`, to the handler (the dispatcher's
:class:`~tcpdispatch.dispatcher.routes.Router`), as a task; a streamed
:class:`~tcpdispatch.dispatcher.http.Response` (Server-Sent Events) is written with
chunked framing as its chunks come, and dropped when the client stops reading; while it
runs, later pipelined requests on that connection wait in a bounded queue so answers always
leave in request order.

Limits, each answered with a JSON error and a closed connection: request
line + headers over ``max_head`` bytes or ``max_headers`` fields (431), a URL
over ``max_url`` bytes (414), a body over ``max_body`` bytes (413), bytes that
are not HTTP/1.x (400), a request head not complete ``header_timeout`` seconds
after its first byte or a body not complete ``body_timeout`` seconds after the
head (408: a client trickling a byte at a time cannot hold a connection). A
connection with nothing in flight that sends nothing for ``idle_timeout``
seconds is closed. One sweep timer checks every connection (every quarter of
the shortest deadline, at most every half ``idle_timeout``), so each limit
fires up to one sweep period late. A client that does not read its answers is
no longer read from until it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from urllib.parse import unquote

import httptools

from tcpdispatch.dispatcher.http import Request, Response
from tcpdispatch.errors import TcpDispatchError
from tcpdispatch.httputil import error_body

log = logging.getLogger("tcpdispatch.dispatcher.http")

# (query_string, client_ip, headers) -> (status, retry_after or None, JSON body)
FastPath = Callable[[bytes, str, list[tuple[bytes, bytes]]], tuple[int, "str | None", bytes]]
Handler = Callable[[Request], Awaitable[Response]]

FAST_PATH = b"/v1/dispatch"
MAX_HEAD, MAX_HEADERS, MAX_URL = (
    16384,
    100,
    8192,
)  # default limits (the C recogniser applies the same)
# A whole raw request -> (HTTP answer, close after it) or None for "not mine"
RawPath = Callable[[bytes], "tuple[bytes, bool] | None"]
LINGER_S = 2.0  # after an error answer, how long to drain the client's remaining bytes
MAX_QUEUED = 32  # pipelined requests held behind a slow one before we stop reading
MAX_STREAM_BUFFER = 1 << 20  # a stream whose client leaves this much unread is ended
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_JSON_HEAD = b"content-type: application/json\r\ncache-control: no-store\r\n"
_DROP = frozenset({b"content-length", b"connection", b"transfer-encoding", b"keep-alive"})


class _Date:
    """The ``date`` header line, refreshed once per second by a timer rather than per answer."""

    line = b""

    @classmethod
    def refresh(cls) -> None:
        cls.line = b"date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n"


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


def _error(status: int, slug: str, detail: str) -> bytes:
    """A complete JSON error answer after which the connection closes."""
    body = error_body(slug, detail)
    return b"%b%b%bconnection: close\r\ncontent-length: %d\r\n\r\n%b" % (
        _status_line(status),
        _Date.line,
        _JSON_HEAD,
        len(body),
        body,
    )


class _Limit(TcpDispatchError):
    """Raised from a parser callback to stop parsing with an HTTP error."""

    def __init__(self, status: int, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail = status, slug, detail


class _Request:
    """A parsed request waiting in the pipelining queue (or handed to the handler)."""

    __slots__ = ("body", "headers", "keep_alive", "method", "url")

    def __init__(
        self,
        method: str,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self.method, self.url, self.headers, self.body, self.keep_alive = (
            method,
            url,
            headers,
            body,
            keep_alive,
        )


class HTTPServer:
    """Listens and owns the connections; ``fast`` answers GET /v1/dispatch, ``handler`` the rest."""

    def __init__(
        self,
        fast: FastPath,
        handler: Handler,
        host: str,
        port: int,
        *,
        max_body: int = 65536,
        max_head: int = MAX_HEAD,
        max_headers: int = MAX_HEADERS,
        max_url: int = MAX_URL,
        idle_timeout: float = 60.0,
        header_timeout: float = 10.0,
        body_timeout: float = 30.0,
        backlog: int = 2048,
        reuse_port: bool = False,
        raw: RawPath | None = None,
        on_date: Callable[[bytes], None] | None = None,
    ) -> None:
        self.fast, self.handler = fast, handler
        # ``raw`` (the C recogniser) applies the default
        # limits; other limits keep every request here.
        default_limits = (max_head, max_headers, max_url) == (MAX_HEAD, MAX_HEADERS, MAX_URL)
        self.raw = raw if default_limits else None
        self.on_date = on_date
        self.host, self.port = host, port
        self.max_body, self.max_head, self.max_headers, self.max_url = (
            max_body,
            max_head,
            max_headers,
            max_url,
        )
        self.idle_timeout = idle_timeout
        self.header_timeout, self.body_timeout = header_timeout, body_timeout
        self.sweep_every = min(idle_timeout / 2, header_timeout / 4, body_timeout / 4)
        self.idle_sweeps = max(
            2, math.ceil(idle_timeout / self.sweep_every)
        )  # quiet sweeps before closing
        self.backlog = backlog
        self.reuse_port = reuse_port
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # handler calls in flight (strong refs)
        self.time: Callable[[], float] = _no_time  # the loop's clock once started
        self._server: asyncio.AbstractServer | None = None
        self._date_timer: asyncio.TimerHandle | None = None
        self._sweep_timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Bind and start accepting (raises OSError if the address is taken)."""
        loop = asyncio.get_running_loop()
        self.time = loop.time
        self._tick_date()
        self._sweep_timer = loop.call_later(self.sweep_every, self._sweep)
        self._server = await loop.create_server(
            lambda: _Connection(self),
            self.host,
            self.port,
            backlog=self.backlog,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
        )
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]

    def _tick_date(self) -> None:
        _Date.refresh()
        if self.on_date is not None:
            self.on_date(_Date.line)
        self._date_timer = asyncio.get_running_loop().call_later(1.0, self._tick_date)

    def _sweep(self) -> None:
        # One timer for all connections instead of one per connection (cheaper accepts): it
        # enforces the head/body deadlines and closes connections quiet for idle_sweeps sweeps.
        now = self.time()
        for conn in list(self.connections):
            conn.sweep(now)
        self._sweep_timer = asyncio.get_running_loop().call_later(self.sweep_every, self._sweep)

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting, close idle connections, give in-flight requests ``grace`` seconds,
        then abort what is left and cancel (and wait for) the request tasks still running."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while (self.connections or self.tasks) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for timer in (self._date_timer, self._sweep_timer):
            if timer is not None:
                timer.cancel()
        if self._server is not None:
            await self._server.wait_closed()


class _Connection(asyncio.Protocol):
    """One client connection: feeds bytes to httptools, answers in request order.

    The class attributes are the per-connection defaults: a connection that the
    C fast path serves whole (one plain dispatch request, then closed) sets
    almost nothing up; the parser and the pipelining queue come with the first
    request it cannot take.
    """

    parser: httptools.HttpRequestParser | None = None
    transport: asyncio.Transport
    url: bytes  # url, headers and body are set when a request begins (on_message_begin)
    headers: list[tuple[bytes, bytes]]
    body: list[bytes]
    body_len = 0
    head_len = 0
    head_raw = 0
    head_started = False
    in_head = False
    in_message = False  # httptools is inside a request (the C path must not take bytes then)
    head_deadline = 0.0  # loop time by which the request head must be complete; 0 = none
    body_deadline = 0.0  # same for the body
    busy = False  # a handler call (or a stream) of this connection is running
    closing = False
    active = True  # saw bytes since the last sweep
    quiet = 0  # sweeps in a row without bytes or work
    write_paused = False
    streaming = False  # a streamed answer (SSE) is being written
    # An empty tuple until the parser exists (a shared deque here would be shared state).
    queue: deque[_Request | bytes] = ()  # type: ignore[assignment]
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None  # the handler call in flight, if any
    _peer: tuple[str, int] | None = None

    def __init__(self, server: HTTPServer) -> None:
        self.server = server

    @property
    def peer(self) -> tuple[str, int]:
        """The client's (host, port), looked up once, when first needed."""
        if self._peer is None:
            peer = self.transport.get_extra_info("peername")
            self._peer = (peer[0], peer[1]) if peer else ("", 0)
        return self._peer

    @property
    def ip(self) -> str:
        return self.peer[0]

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.queue:
            self.queue.clear()

    def data_received(self, data: bytes) -> None:
        self.active = True
        if not (self.in_message or self.busy or self.closing or self.queue):
            raw = self.server.raw
            if raw is not None:
                try:
                    answer = raw(data)
                except Exception:
                    log.exception("C dispatch path failed; answering in Python")
                    answer = None
                if answer is not None:
                    self.transport.write(answer[0])
                    if answer[1]:
                        self._close()
                    return
        elif self.closing:
            return
        parser = self.parser
        if parser is None:
            parser = self.parser = httptools.HttpRequestParser(self)
            self.queue = deque()
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closing = True  # the request was answered without upgrading; parse no further
            return
        except httptools.HttpParserError as exc:
            limit = exc.__context__ if isinstance(exc.__context__, _Limit) else None
            if limit is not None:
                self._fail(limit.status, limit.slug, limit.detail)
            else:
                self._fail(400, "bad_request", f"malformed HTTP request: {exc}")
            return
        if self.in_head:
            # httptools buffers a header until its line ends, out of our sight: count the raw bytes
            # of the chunks that follow the one the request began in (so the bound is max_head
            # plus one read, whatever preceded the request in its first chunk).
            if self.head_started:
                self.head_started = False
            else:
                self.head_raw += len(data)
                if self.head_raw > self.server.max_head:
                    self._fail(
                        431,
                        "request_header_fields_too_large",
                        f"request line and headers exceed {self.server.max_head} bytes",
                    )

    def pause_writing(self) -> None:
        # The client does not read its answers: stop reading its requests until it does.
        self.write_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.closing and len(self.queue) < MAX_QUEUED:
            self.transport.resume_reading()

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self.in_message = True
        self.url = b""
        self.headers = []
        self.body = []
        self.body_len = 0
        self.head_len = 0
        self.head_raw = 0
        self.head_started = True
        self.in_head = True
        self.head_deadline = self.server.time() + self.server.header_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_len += len(url)
        if len(self.url) > self.server.max_url:
            raise _Limit(414, "uri_too_long", f"request target exceeds {self.server.max_url} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_len += len(name) + len(value) + 4
        headers = self.headers
        headers.append((name.lower(), value))
        if self.head_len > self.server.max_head or len(headers) > self.server.max_headers:
            raise _Limit(
                431,
                "request_header_fields_too_large",
                f"request line and headers exceed {self.server.max_head} bytes "
                f"or {self.server.max_headers} fields",
            )

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_deadline = 0.0
        version = self.parser.get_http_version() if self.parser is not None else "1.1"
        if not version.startswith("1."):  # llhttp takes "GET /path" with no version as HTTP/0.9
            raise _Limit(
                400,
                "bad_request",
                f"HTTP/{version} is not served: the request line must end in HTTP/1.0 or HTTP/1.1",
            )
        for name, value in self.headers:
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    raise _Limit(400, "bad_request", "invalid Content-Length") from None
                if size > self.server.max_body:
                    raise _Limit(
                        413,
                        "body_too_large",
                        f"request body is {size} bytes, the limit is {self.server.max_body}",
                    )
                if size:
                    self.body_deadline = self.server.time() + self.server.body_timeout
            elif name == b"transfer-encoding":
                self.body_deadline = self.server.time() + self.server.body_timeout
            elif (
                name == b"expect"
                and value.lower() == b"100-continue"
                and not self.busy
                and not self.queue
            ):
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_len += len(body)
        if self.body_len > self.server.max_body:
            raise _Limit(
                413, "body_too_large", f"request body exceeds {self.server.max_body} bytes"
            )
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.body_deadline = 0.0
        if self.closing:  # more pipelined requests after one that closes the connection
            return
        parser = self.parser
        assert parser is not None  # this callback comes from it
        method = parser.get_method()
        url = self.url
        # HTTP/1.0 keep-alive is not offered (it would need a "connection: keep-alive" answer);
        # an Upgrade is ignored (RFC 9110 allows it) but ends the connection after the answer.
        keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        if keep_alive and parser.get_http_version() == "1.0":
            keep_alive = False
        if method == b"GET" and not self.busy and not self.queue:
            path, _, qs = url.partition(b"?")
            if path == FAST_PATH:
                self._answer_fast(qs, self.headers, keep_alive)
                return
        req = _Request(method.decode("latin-1"), url, self.headers, b"".join(self.body), keep_alive)
        if self.busy or self.queue:
            self.queue.append(req)
            if len(self.queue) >= MAX_QUEUED:
                self.transport.pause_reading()
        else:
            self._start_handler(req)

    # ------------------------------------------------------------ answering

    def _answer_fast(self, qs: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        try:
            status, retry_after, body = self.server.fast(qs, self.ip, headers)
        except Exception:
            log.exception("dispatch failed")
            status, retry_after = 500, None
            body = (
                b'{"error":"internal_error","detail":"the '
                b'dispatcher failed to answer; see its log"}'
            )
        extra = b"" if retry_after is None else b"retry-after: %b\r\n" % retry_after.encode()
        if keep_alive:
            self.transport.write(
                b"%b%b%b%bcontent-length: %d\r\n\r\n%b"
                % (_status_line(status), _Date.line, _JSON_HEAD, extra, len(body), body)
            )
        else:
            self.transport.write(
                b"%b%b%b%bconnection: close\r\ncontent-length: %d\r\n\r\n%b"
                % (_status_line(status), _Date.line, _JSON_HEAD, extra, len(body), body)
            )
            self._close()

    def _fail(self, status: int, slug: str, detail: str) -> None:
        """A protocol or limit error: answer it after whatever is still in flight, then close."""
        self.transport.pause_reading()
        self.closing = True  # parse no more
        answer = _error(status, slug, detail)
        if self.busy or self.queue:
            self.queue.append(answer)
        else:
            self._answer_and_linger(answer)

    def _answer_and_linger(self, answer: bytes) -> None:
        """Write a final answer, then close gently: closing with unread request bytes would
        send a reset that can destroy the answer before the client reads it (nginx's lingering
        close)."""
        transport = self.transport
        transport.write(answer)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()  # read and drop until the client closes, for a bounded time
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(LINGER_S, transport.close)

    def _start_handler(self, req: _Request) -> None:
        self.busy = True
        task = self.task = asyncio.get_running_loop().create_task(self._run_handler(req))
        tasks = self.server.tasks
        tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(tasks.discard)
        task.add_done_callback(_log_task_error)

    async def _run_handler(self, req: _Request) -> None:
        try:
            response = await self.server.handler(self._request(req))
            answer = (
                self._head(req, response)
                if response.stream is not None
                else self._whole(req, response)
            )
        except Exception:
            log.exception("request %s %r failed", req.method, req.url)
            answer = _error(500, "internal_error", "the dispatcher failed to answer; see its log")
            req.keep_alive, response = False, Response(500)
        if self.transport.is_closing():
            self.busy = False
            if response.stream is not None:
                await _close_stream(response.stream)
            return
        self.transport.write(answer)
        if response.stream is not None:
            await self._stream(response.stream)
            if self.transport.is_closing():
                self.busy = False
                return
        self.busy = False
        if not req.keep_alive:
            self._close()
            return
        self._drain_queue()

    async def _stream(self, stream: AsyncIterator[bytes]) -> None:
        """Write a streamed body in chunked framing until it ends, the client goes, or the
        client leaves more than MAX_STREAM_BUFFER bytes unread (a slow reader is dropped)."""
        transport = self.transport
        self.streaming = True
        try:
            async for chunk in stream:
                if transport.is_closing():
                    return
                if transport.get_write_buffer_size() > MAX_STREAM_BUFFER:
                    log.info("stream to %s:%s ended: the client is not reading", *self.peer)
                    self.closing = True
                    transport.abort()  # close() would wait to flush what the client never reads
                    return
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            if not transport.is_closing():
                transport.write(b"0\r\n\r\n")
        finally:
            self.streaming = False
            await _close_stream(stream)

    def _drain_queue(self) -> None:
        """Answer queued pipelined requests in order until one needs the handler."""
        queue = self.queue
        while queue and not self.busy:
            item = queue.popleft()
            if isinstance(item, bytes):  # a queued error answer
                queue.clear()
                self._answer_and_linger(item)
                return
            path, _, qs = item.url.partition(b"?")
            if item.method == "GET" and path == FAST_PATH:
                self._answer_fast(qs, item.headers, item.keep_alive)
                if not item.keep_alive:
                    return
            else:
                self._start_handler(item)
        if not queue and not self.closing and not self.write_paused:
            self.transport.resume_reading()

    def _request(self, req: _Request) -> Request:
        url = req.url
        if not url.startswith(b"/"):  # absolute-form target (proxies): keep only path and query
            parsed = httptools.parse_url(url)
            url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        raw_path, _, qs = url.partition(b"?")
        return Request(
            req.method, unquote(raw_path.decode("latin-1")), qs, req.headers, req.body, self.peer
        )

    @staticmethod
    def _whole(req: _Request, response: Response) -> bytes:
        """The whole answer for a response with a body."""
        head = b"".join(
            b"%b: %b\r\n" % (k, v) for k, v in response.headers if k.lower() not in _DROP
        )
        body = response.body
        conn = b"" if req.keep_alive else b"connection: close\r\n"
        return b"%b%b%b%bcontent-length: %d\r\n\r\n%b" % (
            _status_line(response.status),
            _Date.line,
            head,
            conn,
            len(body),
            b"" if req.method == "HEAD" else body,
        )

    @staticmethod
    def _head(req: _Request, response: Response) -> bytes:
        """The head of a streamed answer (chunked framing)."""
        head = b"".join(
            b"%b: %b\r\n" % (k, v) for k, v in response.headers if k.lower() not in _DROP
        )
        conn = b"" if req.keep_alive else b"connection: close\r\n"
        return b"%b%b%b%btransfer-encoding: chunked\r\n\r\n" % (
            _status_line(response.status),
            _Date.line,
            head,
            conn,
        )

    # ------------------------------------------------------------ closing

    def sweep(self, now: float) -> None:
        """Called by the server's sweep timer: enforce
        the head/body deadlines and the idle timeout."""
        if self.closing:
            return
        if self.head_deadline and now > self.head_deadline:
            self._fail(
                408,
                "request_timeout",
                f"request head not received within {self.server.header_timeout:g} s",
            )
        elif self.body_deadline and now > self.body_deadline:
            self._fail(
                408,
                "request_timeout",
                f"request body not received within {self.server.body_timeout:g} s",
            )
        elif self.active or self.busy or self.queue:
            self.active = False
            self.quiet = 0
        else:
            self.quiet += 1
            if self.quiet >= self.server.idle_sweeps:
                self._close()

    def _close(self) -> None:
        self.closing = True
        self.transport.close()

    def shutdown(self) -> None:
        """Server stop: close now if idle or streaming, else after the request in flight."""
        if self.streaming and self.task is not None:
            self.task.cancel()  # a stream has no end of its own to wait for
            self._close()
        elif not self.busy and not self.queue:
            self._close()
        else:
            self.closing = True  # parse no more; the queue ends with this answer
            self.transport.pause_reading()
            self.queue.append(_error(503, "shutting_down", "the dispatcher is stopping"))

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.abort()


def _no_time() -> float:
    raise RuntimeError("HTTPServer.start() has not run")


async def _close_stream(stream: AsyncIterator[bytes]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _log_task_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("HTTP request task failed", exc_info=task.exception())
