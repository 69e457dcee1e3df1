"""Operator events in process: a bounded history, live subscribers, and the SSE stream over them.

The pool, the health checks, the rebalancer, admin changes and reloads call
:meth:`EventBus.publish` next to the log line that records the same change, so
the dashboard (``GET /ui/``) sees exactly what the log says. Publishing is
synchronous and O(subscribers): it appends to a ring of recent events and to
each subscriber's bounded queue. A subscriber whose queue is full (a browser
that stopped reading) is dropped on the spot, never waited for: nothing that
publishes can be slowed down by a reader.

:func:`sse_stream` turns one subscription into Server-Sent Events bytes
(``text/event-stream``): a ``snapshot`` on connect, then each ``event``, a
``pool`` snapshot every ``tick_s`` and a comment line as heartbeat. It is an
async iterator of byte chunks, independent of the HTTP server that writes them.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

HISTORY = 200  # recent events kept for the snapshot a new subscriber gets
QUEUE = 256  # events a subscriber may have unread before it is dropped


@dataclass(frozen=True, slots=True)
class Event:
    """One state change: ``kind`` (e.g. ``health``, ``drain``), a one-line message, details."""

    seq: int
    at: float  # wall-clock seconds
    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": round(self.at, 3),
            "kind": self.kind,
            "message": self.message,
            **self.data,
        }


class Subscription:
    """A subscriber's bounded queue; ``dropped`` once it fell ``QUEUE`` events behind."""

    def __init__(self, bus: EventBus, size: int) -> None:
        self.bus = bus
        self.size = size
        self.pending: deque[Event] = deque()
        self.dropped = False
        self.wake = asyncio.Event()

    def offer(self, event: Event) -> bool:
        """Queue one event; False (and the subscription ends) when the queue is full."""
        if len(self.pending) >= self.size:
            self.dropped = True
            self.wake.set()
            return False
        self.pending.append(event)
        self.wake.set()
        return True

    def take(self) -> list[Event]:
        out = list(self.pending)
        self.pending.clear()
        self.wake.clear()
        return out

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    """Publish/subscribe for operator events; ``clock`` is wall time (the page shows it)."""

    def __init__(
        self, *, history: int = HISTORY, queue: int = QUEUE, clock: Callable[[], float] = time.time
    ) -> None:
        self.recent: deque[Event] = deque(maxlen=history)
        self.queue = queue
        self.clock = clock
        self.subscribers: set[Subscription] = set()
        self.seq = 0
        self.counts: dict[str, int] = {}  # events published, by kind (a metric)
        self.dropped = 0  # subscribers dropped for falling behind

    def publish(self, kind: str, message: str, **data: Any) -> Event:
        """Record one event and hand it to every subscriber (never blocks)."""
        self.seq += 1
        self.counts[kind] = self.counts.get(kind, 0) + 1
        event = Event(self.seq, self.clock(), kind, message, data)
        self.recent.append(event)
        for sub in list(self.subscribers):
            if not sub.offer(event):
                self.subscribers.discard(sub)
                self.dropped += 1
        return event

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self.queue)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    def history(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.recent]


# ------------------------------------------------------------------ Server-Sent Events


@dataclass(frozen=True, slots=True)
class PoolView:
    """What a stream sends of the pool: ``head`` (everything but the rows and the history),
    ``rows`` (gateway id -> that row as JSON bytes; an unchanged row keeps the same bytes
    object from one view to the next, so a stream finds what changed by identity, without
    comparing or encoding rows again), and ``history`` (chart points, sent on connect only)."""

    head: dict[str, Any]
    rows: dict[str, bytes]
    history: list[Any] = field(default_factory=list)


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def snapshot_data(view: PoolView, events: list[dict[str, Any]]) -> bytes:
    """The ``snapshot`` message's JSON: the head, every row, the history and recent events."""
    tail = _json({**view.head, "history": view.history, "events": events})
    return b'{"gateways":[%b],%b' % (b",".join(view.rows.values()), tail[1:])


def pool_update(view: PoolView, sent: dict[str, bytes]) -> tuple[bytes, dict[str, bytes]]:
    """A ``pool`` message's JSON: the head with only the rows that are not the ones in ``sent``
    and the ids no longer there (``removed``); returns it and the rows the reader now has."""
    rows = view.rows
    changed = [row for gid, row in rows.items() if sent.get(gid) is not row]
    removed = [gid for gid in sent if gid not in rows]
    tail = _json({**view.head, "removed": removed})
    return b'{"gateways":[%b],%b' % (b",".join(changed), tail[1:]), rows


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One SSE message; ``data`` as compact JSON on one line (JSON escapes newlines), or bytes
    that are JSON already."""
    head = b"id: %d\n" % event_id if event_id is not None else b""
    body = data if isinstance(data, bytes) else _json(data)
    return b"%bevent: %b\ndata: %b\n\n" % (head, event.encode(), body)


SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]  # nginx: pass each event through at once


async def sse_stream(
    bus: EventBus,
    snapshot: Callable[[], PoolView],
    *,
    tick_s: float = 1.0,
    heartbeat_s: float = 15.0,
) -> AsyncIterator[bytes]:
    """The ``/v1/events`` body: ``snapshot`` (with the recent events) on connect, then each event
    as ``event``, ``snapshot()`` again as ``pool`` every ``tick_s`` (only the gateway rows that
    changed, see :func:`pool_update`), ``: ping`` every ``heartbeat_s``. Ends with an
    ``overflow`` message when the subscriber fell behind."""
    sub = bus.subscribe()
    loop = asyncio.get_running_loop()
    try:
        first = snapshot()
        sent = first.rows
        yield b"retry: 2000\n\n" + sse("snapshot", snapshot_data(first, bus.history()), bus.seq)
        # Ticks on multiples of tick_s of the loop's clock: every stream asks for the snapshot at
        # the same moment, so one build serves them all (the overview caches it briefly).
        next_tick = (math.floor(loop.time() / tick_s) + 1) * tick_s
        next_ping = loop.time() + heartbeat_s
        while True:
            wait = min(next_tick, next_ping) - loop.time()
            if wait > 0 and not sub.wake.is_set():
                try:
                    await asyncio.wait_for(sub.wake.wait(), wait)
                except TimeoutError:
                    pass
            if sub.dropped:
                yield sse(
                    "overflow",
                    {
                        "detail": f"this stream fell {sub.size} events behind and was "
                        "dropped; reconnect for a fresh snapshot"
                    },
                )
                return
            chunks = [sse("event", e.to_json(), e.seq) for e in sub.take()]
            now = loop.time()
            if now >= next_tick:
                doc, sent = pool_update(snapshot(), sent)
                chunks.append(sse("pool", doc))
                next_tick = (math.floor(now / tick_s) + 1) * tick_s
            if now >= next_ping:
                chunks.append(b": ping\n\n")
                next_ping = now + heartbeat_s
            if chunks:
                yield b"".join(chunks)
    finally:
        sub.close()


__all__ = [
    "SSE_HEADERS",
    "Event",
    "EventBus",
    "PoolView",
    "Subscription",
    "pool_update",
    "snapshot_data",
    "sse",
    "sse_stream",
]
