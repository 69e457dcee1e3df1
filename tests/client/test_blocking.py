"""BlockingClient: bounded connect against a dead dispatcher, clear errors for wrong payload
types."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import free_port, scaled

from tcpdispatch.client import BlockingClient, Client
from tcpdispatch.client.blocking import DEFAULT_CONNECT_TIMEOUT
from tcpdispatch.errors import DispatchError


def _threads() -> int:
    return sum(t.name == "tcpdispatch-client" for t in threading.enumerate())


def test_with_block_against_a_dead_dispatcher_gives_up_at_the_connect_timeout() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    before = _threads()
    t0 = time.monotonic()
    with (
        pytest.raises(DispatchError, match="within 1s"),
        BlockingClient(dispatchers=[dead], connect_timeout=1),
    ):
        pass  # pragma: no cover - never entered
    took = time.monotonic() - t0
    assert 0.9 < took < 1 + scaled(1.5), took
    assert _threads() == before  # the loop thread was stopped


def test_connect_timeout_is_bounded_by_default() -> None:
    assert 0 < DEFAULT_CONNECT_TIMEOUT <= 30
    c = BlockingClient(fallback=["127.0.0.1:1"])
    try:
        assert c.connect_timeout == DEFAULT_CONNECT_TIMEOUT
        t0 = time.monotonic()
        with pytest.raises(DispatchError):
            c.connect(timeout=0.5)
        assert time.monotonic() - t0 < 0.5 + scaled(1.5)
    finally:
        c.close()
    with pytest.raises(ValueError, match="connect_timeout"):
        BlockingClient(fallback=["127.0.0.1:1"], connect_timeout=0)


@pytest.mark.parametrize(
    "payload, hint", [("text", "encode it first"), (42, "int"), (None, "NoneType")]
)
def test_send_of_a_wrong_type_is_a_clear_type_error(payload: object, hint: str) -> None:
    c = BlockingClient(fallback=["127.0.0.1:1"])
    try:
        with pytest.raises(TypeError, match="send\\(\\) takes bytes") as exc:
            c.send(payload)  # type: ignore[arg-type]
        assert hint in str(exc.value)
    finally:
        c.close()


async def test_async_client_send_checks_the_type_too() -> None:
    c = Client(fallback=["127.0.0.1:1"])
    with pytest.raises(TypeError, match="not str"):
        await c.send("text")  # type: ignore[arg-type]
    await c.send(bytearray(b"queued"))  # bytes-like is fine (queued while not connected)
    assert c.pending == 1
    await c.close()
