"""The two values the dispatcher's HTTP server and its router exchange: a request, a response.

The built-in server (:mod:`tcpdispatch.dispatcher.httpserver`) reads a whole request
(head and body, within its limits) before it builds a :class:`Request`, so a handler
never reads from the network; it returns a :class:`Response` whose body is either
bytes or, for Server-Sent Events, an async iterator of chunks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


class Request:
    """One parsed HTTP request: method, percent-decoded path, raw query, lower-cased headers."""

    __slots__ = ("body", "client", "headers", "method", "path", "query")

    def __init__(
        self,
        method: str,
        path: str,
        query: bytes = b"",
        headers: Headers | None = None,
        body: bytes = b"",
        client: tuple[str, int] = ("", 0),
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers: Headers = headers if headers is not None else []
        self.body = body
        self.client = client

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (``name`` in lower case), or None."""
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def __repr__(self) -> str:
        return f"Request({self.method} {self.path})"


class Response:
    """Status, headers and either a body or a ``stream`` of chunks (then ``body`` is empty).

    The server adds ``date``, ``content-length`` (or chunked framing for a stream) and
    ``connection``; handlers set only what describes the content.
    """

    __slots__ = ("body", "headers", "status", "stream")

    def __init__(
        self,
        status: int,
        headers: Headers | None = None,
        body: bytes = b"",
        stream: AsyncIterator[bytes] | None = None,
    ) -> None:
        self.status = status
        self.headers: Headers = headers if headers is not None else []
        self.body = body
        self.stream = stream

    def __repr__(self) -> str:
        return f"Response({self.status}, {len(self.body)} bytes{', stream' if self.stream else ''})"


def json_body(doc: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(doc, separators=(",", ":")).encode()


def json_response(status: int, doc: Any) -> Response:
    return Response(status, JSON_HEADERS, json_body(doc))
