"""Total deadlines for the status port's HTTP connections (slow-loris protection).

aiohttp bounds the *size* of a request head but, depending on its version, not
the *time* it may take to arrive: a client sending one byte every few seconds
could hold a status connection (and a file descriptor) for ever. Each
connection is wrapped in a small protocol that keeps one deadline:

* from accept, the first request head must be complete within ``head_timeout``
  (whatever arrives meanwhile, like the gateway's handshake deadline);
* while a request is being handled there is no deadline (a long-lived answer
  such as a stream is the handler's business);
* after an answer, an idle keep-alive connection may wait ``idle_timeout`` for
  its next request; the first byte of it starts a new ``head_timeout``.

"Head complete" is observed by :meth:`HeadDeadlines.middleware`, which aiohttp
runs once it has parsed a request, so nothing here parses HTTP itself.
A connection past its deadline is closed and counted in :attr:`HeadDeadlines.timeouts`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

log = logging.getLogger("tcpdispatch.gateway.status")

_HEAD, _BUSY, _IDLE = 0, 1, 2


class _Guarded(asyncio.Protocol):
    """Forwards every callback to aiohttp's protocol and enforces the deadline around it."""

    def __init__(self, owner: HeadDeadlines, inner: Any) -> None:
        self._owner = owner
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._state = _HEAD

    # -- deadline ---------------------------------------------------------------
    def _arm(self, state: int, seconds: float) -> None:
        self._state = state
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def busy(self) -> None:
        """A request head was parsed: no deadline while it is handled."""
        self._state = _BUSY
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def answered(self) -> None:
        """The handler returned: the connection may idle until its next request."""
        if self._transport is not None and not self._transport.is_closing():
            self._arm(_IDLE, self._owner.idle_timeout)

    def _expired(self) -> None:
        self._timer = None
        t = self._transport
        if t is None or t.is_closing():
            return
        if self._state == _HEAD:
            self._owner.timeouts += 1
            log.debug(
                "status port: request head from %s not complete within %gs; closing",
                t.get_extra_info("peername"),
                self._owner.head_timeout,
            )
        t.abort()

    # -- asyncio callbacks ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._owner.track(transport, self)
        self._arm(_HEAD, self._owner.head_timeout)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._state == _IDLE:
            self._arm(_HEAD, self._owner.head_timeout)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return bool(self._inner.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._owner.untrack(self._transport)
        self._transport = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HeadDeadlines:
    """Wraps an aiohttp server's protocols; add :meth:`middleware` to the application."""

    def __init__(self, head_timeout: float, idle_timeout: float = 60.0) -> None:
        self.head_timeout = head_timeout
        self.idle_timeout = max(idle_timeout, head_timeout)
        self.timeouts = 0
        self._guards: dict[int, _Guarded] = {}

    def factory(self, server: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` around aiohttp's ``server``."""
        return lambda: _Guarded(self, server())

    def track(self, transport: asyncio.BaseTransport, guard: _Guarded) -> None:
        self._guards[id(transport)] = guard

    def untrack(self, transport: asyncio.BaseTransport) -> None:
        self._guards.pop(id(transport), None)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        guard = self._guards.get(id(request.transport))
        if guard is not None:
            guard.busy()
        try:
            return await handler(request)
        finally:
            if guard is not None:
                guard.answered()
