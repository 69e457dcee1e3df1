"""A small blocking wrapper around :class:`Client` for scripts and REPLs.

::

    with BlockingClient(dispatchers=["http://127.0.0.1:8080"]) as c:
        c.send(b"hi")
        print(c.receive(timeout=5))

The asyncio client runs on its own event loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

from tcpdispatch.client.client import Client

T = TypeVar("T")


class BlockingClient:
    """Same constructor arguments as :class:`Client`; every method blocks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcpdispatch-client", daemon=True)
        self._thread.start()
        self._client: Client = self._call(self._make(args, kwargs))

    @staticmethod
    async def _make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Client:
        return Client(*args, **kwargs)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
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
        self._call(self._client.connect(timeout))

    def send(self, payload: bytes) -> None:
        self._call(self._client.send(payload))

    def receive(self, timeout: float | None = None) -> bytes:
        """The next message; raises TimeoutError after ``timeout`` seconds."""
        return self._call(asyncio.wait_for(self._client.receive(), timeout))

    def close(self) -> None:
        if self._loop.is_running():
            self._call(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
