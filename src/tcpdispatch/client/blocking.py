"""A small blocking wrapper around :class:`Client` for scripts and REPLs.

::

    with BlockingClient(dispatchers=["http://127.0.0.1:8080"]) as c:
        c.send(b"hi")
        print(c.receive(timeout=5))

The asyncio client runs on its own event loop in a daemon thread. Connecting is
bounded by ``connect_timeout`` (10 s unless given): against a dead dispatcher
``with BlockingClient(...)`` raises :class:`~tcpdispatch.errors.DispatchError`
after that long instead of blocking, and stops its thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

from tcpdispatch.client.client import Client, ClientClosed, check_payload

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 10.0
_MARGIN = 5.0  # the inner asyncio timeout fires first; this only guards against a stuck loop


class BlockingClient:
    """Same constructor arguments as :class:`Client`,
    plus ``connect_timeout``; every method blocks."""

    def __init__(
        self, *args: Any, connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT, **kwargs: Any
    ) -> None:
        if connect_timeout is not None and connect_timeout <= 0:
            raise ValueError(
                f"connect_timeout must be > 0 seconds or None, got {connect_timeout!r}"
            )
        self.connect_timeout = connect_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcpdispatch-client", daemon=True
        )
        self._thread.start()
        try:
            self._client: Client = self._call(self._make(args, kwargs))
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    async def _make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Client:
        return Client(*args, **kwargs)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if not self._loop.is_running():
            coro.close()
            raise ClientClosed("client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def client(self) -> Client:
        return self._client

    @property
    def gateway(self) -> str | None:
        return self._client.gateway

    @property
    def session_id(self) -> str | None:
        return self._client.session_id

    def connect(self, timeout: float | None = None) -> None:
        """Wait for the first session, at most ``timeout`` (default ``connect_timeout``) seconds;
        raises DispatchError when no gateway was reachable in time (the client keeps trying)."""
        limit = self.connect_timeout if timeout is None else timeout
        self._call(self._client.connect(limit), None if limit is None else limit + _MARGIN)

    def send(self, payload: bytes) -> None:
        """Send one message (bytes-like; a ``str`` raises TypeError: encode it first)."""
        self._call(self._client.send(check_payload(payload)))

    def receive(self, timeout: float | None = None) -> bytes:
        """The next message; raises TimeoutError after ``timeout`` seconds."""
        return self._call(asyncio.wait_for(self._client.receive(), timeout))

    def close(self) -> None:
        if self._loop.is_running():
            self._call(self._client.close())
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_closed() and not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> Self:
        try:
            self.connect()
        except BaseException:
            self.close()  # __exit__ is not called when __enter__ fails
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
