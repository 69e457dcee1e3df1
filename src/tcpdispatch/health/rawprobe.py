"""Cheap polling probes over raw asyncio protocols: keep-alive HTTP, agent, tcp.

One aiohttp request costs about 175 µs of dispatcher CPU per probe (client
session, request and response objects, timeouts). A probe is one small request
on a kept-alive connection and one small answer, so these probers use a bare
``asyncio.Protocol`` and httptools' C parser instead, and keep one idle
connection per gateway between probes. They are what the checker polls with
when a gateway cannot be watched (plain HTTP status pages, ``agent://``,
``tcp://``). :class:`RawProber` has the :data:`~tcpdispatch.health.checker.Prober`
signature.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import httptools

from tcpdispatch import __version__
from tcpdispatch.errors import TcpDispatchError
from tcpdispatch.health.probes import (
    MAX_AGENT_LINE,
    MAX_STATUS_BYTES,
    ProbeResult,
    parse_agent_reply,
    status_reply_to_result,
)
from tcpdispatch.health.settings import CheckSpec

USER_AGENT = f"tcpdispatch-health/{__version__}"


class ResponseTooLarge(TcpDispatchError, ValueError):
    """A status answer larger than MAX_STATUS_BYTES."""


class HTTPClientProtocol(asyncio.Protocol):
    """One HTTP/1.1 client connection, kept alive: one request at a time, answers via futures.

    :meth:`request` writes a GET and returns a future of ``(status, headers, body)``;
    the connection stays open for the next one unless the server says ``close``.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, dict[str, str], bytes]] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self.closed = asyncio.get_running_loop().create_future()
        self.reusable = True

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_STATUS_BYTES:
            raise ResponseTooLarge(f"status body over {MAX_STATUS_BYTES} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if not self._parser.should_keep_alive():
            self.reusable = False
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), self._headers, b"".join(self._body)))
        self._headers, self._body, self._size = {}, [], 0

    # asyncio callbacks
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, ResponseTooLarge) as exc:
            self._fail(
                exc if isinstance(exc, ResponseTooLarge) else ValueError(f"bad HTTP answer: {exc}")
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._fail(exc or ConnectionResetError("status connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    @property
    def busy(self) -> bool:
        return self._waiter is not None

    def request(self, head: bytes) -> asyncio.Future[tuple[int, dict[str, str], bytes]]:
        """Send a prepared request head; the future resolves with the answer."""
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(head)
        return self._waiter

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


def request_head(
    url: str, *, query: str = "", accept: str = "application/json"
) -> tuple[str, int, bytes]:
    """``(host, port, GET request bytes)`` for an ``http://`` status URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        raise ValueError(f"{url}: only http:// is supported by the raw prober")
    host = parts.hostname or ""
    port = parts.port or 80
    path = parts.path or "/"
    q = "&".join(x for x in (parts.query, query) if x)
    target = f"{path}?{q}" if q else path
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        host_header += f":{port}"
    head = (
        f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
        f"Accept: {accept}\r\n\r\n"
    ).encode("latin-1")
    return host, port, head


class _Agent(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.done = asyncio.get_running_loop().create_future()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        if b"\n" in self.data or len(self.data) >= MAX_AGENT_LINE:
            self._finish()

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(bytes(self.data[:MAX_AGENT_LINE]))
        if self.transport is not None:
            self.transport.close()


class RawProber:
    """Polls http (keep-alive), agent and tcp checks; one idle HTTP connection per URL.

    Never raises for network trouble: every failure is ``ProbeResult(ok=False, detail=...)``.
    Call :meth:`close` to drop the kept-alive connections. ``https://`` URLs go to
    :func:`~tcpdispatch.health.probes.probe` (aiohttp) instead.
    """

    def __init__(self) -> None:
        self._conns: dict[str, HTTPClientProtocol] = {}
        self._heads: dict[str, tuple[str, int, bytes]] = {}

    async def __call__(self, spec: CheckSpec, timeout: float, session: Any = None) -> ProbeResult:
        start = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                if spec.kind == "http":
                    return await self._http(spec, start)
                if spec.kind == "agent":
                    return await self._agent(spec, start)
                if spec.kind == "tcp":
                    return await self._tcp(spec, start)
        except TimeoutError:
            self._drop(spec)
            return ProbeResult(
                ok=False, latency_s=time.monotonic() - start, detail=f"timeout after {timeout:g}s"
            )
        except (OSError, ValueError) as exc:
            self._drop(spec)
            text = str(exc)
            detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            return ProbeResult(ok=False, latency_s=time.monotonic() - start, detail=detail)
        raise ValueError(f"cannot poll a {spec.kind!r} check")

    def _drop(self, spec: CheckSpec) -> None:
        conn = self._conns.pop(str(spec.url), None)
        if conn is not None:
            conn.close()

    async def _http(self, spec: CheckSpec, start: float) -> ProbeResult:
        url = str(spec.url)
        if url.lower().startswith("https://"):
            from tcpdispatch.health.probes import probe

            return await probe(spec, 10.0)  # bounded by our caller's timeout
        head = self._heads.get(url)
        if head is None:
            head = self._heads[url] = request_head(url)
        host, port, req = head
        conn = self._conns.get(url)
        if conn is not None and conn.busy:
            conn = None  # two gateways share this URL: the other's probe is in flight
        extra: HTTPClientProtocol | None = None
        try:
            for attempt in (0, 1):
                if conn is None or not conn.reusable:
                    _, conn = await asyncio.get_running_loop().create_connection(
                        HTTPClientProtocol, host, port
                    )
                    if self._conns.get(url) is None or not self._conns[url].reusable:
                        self._conns[url] = conn
                    else:
                        extra = conn
                    attempt = 1  # a fresh connection gets no retry
                try:
                    status, _headers, body = await conn.request(req)
                    break
                except ConnectionResetError:
                    # The server closed an idle kept-alive connection: retry once on a new one.
                    conn = None
                    if attempt:
                        raise
        finally:
            if extra is not None:
                extra.close()
        latency = time.monotonic() - start
        if conn is not None and self._conns.get(url) is conn and not conn.reusable:
            self._drop(spec)
        return status_reply_to_result(status, body, latency, url)

    async def _agent(self, spec: CheckSpec, start: float) -> ProbeResult:
        assert spec.host is not None and spec.port is not None
        _, proto = await asyncio.get_running_loop().create_connection(_Agent, spec.host, spec.port)
        try:
            data = await proto.done
        finally:
            if proto.transport is not None:
                proto.transport.close()
        line = data.split(b"\n", 1)[0].decode("utf-8", errors="replace")
        return parse_agent_reply(line, time.monotonic() - start)

    async def _tcp(self, spec: CheckSpec, start: float) -> ProbeResult:
        assert spec.host is not None and spec.port is not None
        transport, _ = await asyncio.get_running_loop().create_connection(
            asyncio.Protocol, spec.host, spec.port
        )
        latency = time.monotonic() - start
        transport.abort()  # reset rather than FIN, as HAProxy does: no TIME_WAIT on our side
        return ProbeResult(ok=True, latency_s=latency)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


__all__ = ["HTTPClientProtocol", "RawProber", "request_head"]
