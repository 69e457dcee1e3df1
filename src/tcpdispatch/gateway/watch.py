"""The status watch, gateway side: ``GET /status?watch=SECONDS`` streams the status.

The dispatcher still pulls (it opens the connection and names the tick interval;
the gateway depends on nothing), but instead of one request per probe it keeps
one response open and the gateway writes to it:

- the first line is the full watch document (the status fields a dispatcher
  uses, see :data:`WATCH_FIELDS`);
- then, at once, a line with the fields that changed when something *urgent*
  changed (state, capacity, address, or the node reaching its capacity);
- otherwise one line per interval: the fields that changed since the last line
  (load is coalesced this way), or an empty line, the tick, when nothing did.

Lines are JSON objects separated by ``\\n`` (``application/x-ndjson``) inside an
ordinary HTTP/1.1 response, so anything that understands HTTP can read it; a
dispatcher that receives a plain JSON document instead knows the other side is
not a tcpdispatch gateway and falls back to polling.

A process that dies closes the stream (the dispatcher sees it at once); one
that hangs stops ticking (seen after the missed ticks). :class:`WatchFeed`
decides what to send and when, without I/O, so the real gateway
(:class:`WatchStreams`, over aiohttp) and the health-scale benchmark (many
gateways per process over raw sockets) speak the same protocol from the same code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from tcpdispatch.httputil import error_body

log = logging.getLogger("tcpdispatch.gateway.watch")

CONTENT_TYPE = "application/x-ndjson"
WATCH_HEADER = "Tcpdispatch-Watch"  # echoes the tick interval; marks a tcpdispatch watch stream
MIN_INTERVAL = 0.01
MAX_INTERVAL = 60.0
# What a dispatcher reads from a status document; the rest of /status is for people.
WATCH_FIELDS = ("id", "state", "connections", "capacity", "address", "cpu", "busy", "lag_ms")
_URGENT = ("state", "capacity", "address", "id")
TICK = b"\n"


def parse_watch_interval(text: str) -> float:
    """The ``watch`` query value in seconds; ValueError says what is allowed."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise ValueError(
            f"watch must be a tick interval in seconds between {MIN_INTERVAL:g} and "
            f"{MAX_INTERVAL:g}, got {text!r}"
        )
    return value


# Load signals are streamed coarsened, so noise does not turn every tick into an update.
_STEPS = {"busy": 0.05, "cpu": 0.05, "lag_ms": 10}


def watch_doc(status: Mapping[str, Any]) -> dict[str, Any]:
    """The streamed subset of a ``/status`` document (load signals rounded to coarse steps)."""
    doc = {k: status[k] for k in WATCH_FIELDS if k in status}
    for key, step in _STEPS.items():
        value = doc.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            doc[key] = (
                round(round(value / step) * step, 2)
                if isinstance(step, float)
                else int(round(value / step) * step)
            )
    return doc


def _full(doc: Mapping[str, Any]) -> bool:
    conns, cap = doc.get("connections"), doc.get("capacity")
    return isinstance(conns, int) and isinstance(cap, int) and conns >= cap


class WatchFeed:
    """What to write to one watcher, and when (pure; the caller supplies time and documents).

    Call :meth:`poll` often (a few times per interval); it returns the bytes to write
    now, or ``b""``.
    """

    __slots__ = ("_next", "_sent", "interval")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._sent: dict[str, Any] | None = None
        self._next = 0.0

    @property
    def due(self) -> float:
        """When the next tick is due (a caller without urgent changes may poll only then)."""
        return self._next

    def poll(self, status: Mapping[str, Any], now: float, *, changed: bool = True) -> bytes:
        """The bytes to write now. ``changed=False`` promises ``status`` is the same as at the
        last call (a caller that knows when its status changes skips building the document)."""
        sent = self._sent
        if not changed and sent is not None:
            if now < self._next:
                return b""
            self._next = max(self._next + self.interval, now)
            return TICK
        doc = watch_doc(status)
        if sent is None:
            self._sent = doc
            self._next = now + self.interval
            return _line(doc)
        urgent = any(doc.get(k) != sent.get(k) for k in _URGENT) or _full(doc) != _full(sent)
        if not urgent and now < self._next:
            return b""
        self._next = max(self._next + self.interval, now) if not urgent else now + self.interval
        if doc.keys() != sent.keys():
            self._sent = doc
            return _line(doc)
        delta = {k: v for k, v in doc.items() if sent[k] != v}
        if not delta:
            return TICK
        self._sent = doc
        return _line(delta)


def _line(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


class WatchStreams:
    """Serves ``GET /status?watch=SECONDS`` over aiohttp, one open response per watcher."""

    def __init__(self, source: Callable[[], Mapping[str, Any]]) -> None:
        self._source = source
        self._closing = asyncio.Event()
        self.open = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            interval = parse_watch_interval(request.query.get("watch", ""))
        except ValueError as exc:
            return web.Response(
                body=error_body("bad_request", str(exc)),
                status=400,
                content_type="application/json",
            )
        resp = web.StreamResponse(
            headers={
                "Content-Type": CONTENT_TYPE,
                "Cache-Control": "no-store",
                WATCH_HEADER: f"{interval:g}",
            }
        )
        await resp.prepare(request)
        feed = WatchFeed(interval)
        loop = asyncio.get_running_loop()
        # Poll for urgent changes a few times per tick (the node counters do not notify).
        step = min(interval / 4, 0.05)
        self.open += 1
        try:
            while not self._closing.is_set():
                line = feed.poll(self._source(), loop.time())
                if line:
                    await resp.write(line)
                await asyncio.sleep(step)
        except (ConnectionError, RuntimeError):
            pass  # the watcher went away (aiohttp raises ConnectionResetError or RuntimeError)
        finally:
            self.open -= 1
        return resp

    def close(self) -> None:
        """End every stream (before the HTTP runner shuts down, which waits for handlers)."""
        self._closing.set()


__all__ = [
    "CONTENT_TYPE",
    "TICK",
    "WATCH_FIELDS",
    "WATCH_HEADER",
    "WatchFeed",
    "WatchStreams",
    "parse_watch_interval",
    "watch_doc",
]
