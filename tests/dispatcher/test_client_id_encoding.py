"""One rule for client ids in the dispatch query, on the C and the Python hot path.

RFC 3986 percent-decoding: ``%XX`` escapes are UTF-8 bytes, ``+`` is a literal
plus (never a space), a malformed escape is a 400. The SDK encodes ids so that
whatever it sends decodes back to the very same id. HTTP/0.9-style request
lines (no version) are refused on both paths.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest
import yarl
from dispatcher_stack import Stack
from helpers import require_speedups, scaled

from tcpdispatch.client.sources import dispatch_url
from tcpdispatch.dispatcher.httpserver import HTTPServer
from tcpdispatch.tickets import TicketVerifier

from .conftest import SECRET

# (as sent in the query, the id the ticket must carry)
ENCODED = [
    ("user+tag@example.com", "user+tag@example.com"),
    ("user%2Btag%40example.com", "user+tag@example.com"),
    ("a%20b", "a b"),
    ("100%25", "100%"),
    ("caf%C3%A9", "café"),
    ("%E2%82%AC+%2B", "€++"),
]
MALFORMED = ["%", "a%2", "%zz", "%G1", "ok%2"]
IDS = ["user+tag@example.com", "a b", "100%", "café", "a&b=c", "x/y?z#w", "+%+ %2B"]


@pytest.fixture
def app(make_app: Callable[..., Stack], hot_path: str) -> Stack:
    a = make_app()  # the conftest's hot_path fixture: once per path
    assert a.service.hot_path == hot_path
    a.service.set_date(b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n")
    return a


def ticket_client(body: bytes) -> str:
    doc = json.loads(body)
    return TicketVerifier([SECRET.encode()]).verify(doc["ticket"], doc["gateway"]["id"]).client_id


@pytest.mark.parametrize(("query", "client_id"), ENCODED)
def test_percent_decoding_and_literal_plus(app: Stack, query: str, client_id: str) -> None:
    status, _, body = app.service.dispatch_bytes(f"client_id={query}".encode(), "10.0.0.1", [])
    assert status == 200, body
    assert ticket_client(body) == client_id


@pytest.mark.parametrize("query", MALFORMED)
def test_malformed_percent_escape_is_a_clear_400(app: Stack, query: str) -> None:
    status, _, body = app.service.dispatch_bytes(f"client_id={query}".encode(), "10.0.0.1", [])
    doc = json.loads(body)
    assert status == 400 and doc["error"] == "bad_request"
    assert "malformed percent-escape" in doc["detail"]
    assert app.stats.dispatched == 0


@pytest.mark.parametrize("client_id", IDS)
def test_the_sdk_encoding_round_trips(app: Stack, client_id: str) -> None:
    url = yarl.URL(dispatch_url("http://127.0.0.1:1", client_id), encoded=True)
    assert url.path == "/v1/dispatch"
    status, _, body = app.service.dispatch_bytes(url.raw_query_string.encode(), "10.0.0.1", [])
    assert status == 200, body
    assert ticket_client(body) == client_id


def test_the_c_recogniser_takes_a_literal_plus(make_app: Callable[..., Stack]) -> None:
    require_speedups()
    app = make_app()
    answer = app.service.fast.request(
        b"GET /v1/dispatch?client_id=user+tag@example.com HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert answer is not None, "an id with '+' needs no decoding: C answers it"
    assert ticket_client(answer[0].partition(b"\r\n\r\n")[2]) == "user+tag@example.com"
    assert (
        app.service.fast.request(b"GET /v1/dispatch?client_id=a%20b HTTP/1.1\r\nHost: x\r\n\r\n")
        is None
    )


def test_max_client_id_is_counted_in_decoded_bytes_on_both_paths(app: Stack) -> None:
    limit = app.config.max_client_id
    for cid, ok in (
        ("a" * limit, True),
        ("a" * (limit + 1), False),
        ("%C3%A9" * (limit // 2), True),
        ("%C3%A9" * (limit // 2 + 1), False),
    ):
        status, _, body = app.service.dispatch_bytes(f"client_id={cid}".encode(), "10.0.0.1", [])
        assert status == (200 if ok else 400), (cid[:12], body)
        if not ok:
            assert f"longer than {limit} bytes" in json.loads(body)["detail"]


# ---------------------------------------------------------------- over a socket, both servers


@pytest.fixture
async def server(app: Stack, hot_path: str) -> AsyncIterator[HTTPServer]:
    raw = (
        {"raw": app.service.fast_request, "on_date": app.service.set_date}
        if hot_path == "c"
        else {}
    )
    srv = HTTPServer(app.service.dispatch_bytes, app.router.handle, "127.0.0.1", 0, **raw)
    await srv.start()
    yield srv
    await srv.close(grace=0.5)


async def exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), scaled(5))
    finally:
        writer.close()


@pytest.mark.parametrize(
    "line", [b"GET /v1/dispatch?client_id=a", b"GET /v1/dispatch?client_id=a+b", b"GET /healthz"]
)
async def test_http09_request_line_gets_400(server: HTTPServer, app: Stack, line: bytes) -> None:
    answer = await exchange(server.port, line + b"\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    doc = json.loads(body)
    assert doc["error"] == "bad_request" and "HTTP/0.9" in doc["detail"]
    assert app.stats.dispatched == 0


async def test_plus_over_a_socket(server: HTTPServer) -> None:
    answer = await exchange(
        server.port,
        b"GET /v1/dispatch?client_id=u+t%2B%20x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert ticket_client(answer.partition(b"\r\n\r\n")[2]) == "u+t+ x"


def test_the_c_recogniser_applies_the_same_client_id_limit(make_app: Callable[..., Stack]) -> None:
    require_speedups()
    app = make_app()
    limit = app.config.max_client_id

    def raw(cid: bytes) -> bytes:
        return b"GET /v1/dispatch?client_id=%b HTTP/1.1\r\nHost: x\r\n\r\n" % cid

    assert app.service.fast.request(raw(b"a" * limit)) is not None
    assert (
        app.service.fast.request(raw(b"a" * (limit + 1))) is None
    )  # left to Python, which answers 400
    status, _, body = app.service.dispatch_bytes(b"client_id=" + b"a" * (limit + 1), "10.0.0.1", [])
    assert status == 400 and f"longer than {limit} bytes" in json.loads(body)["detail"]
