"""Waiting with a deadline: :func:`wait_until` and :func:`async_wait_until`.

Every timeout is stretched by ``TCPDISPATCH_TIMEOUT_FACTOR`` (:func:`scaled`, default 1),
so a slow machine stretches them all at once; a wait that runs out raises an
AssertionError naming what it waited for and the last error the predicate raised.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from tcpdispatch.procs import TIMEOUT_FACTOR_ENV, free_port, scaled, timeout_factor

__all__ = [
    "TIMEOUT_FACTOR_ENV",
    "async_wait_until",
    "free_port",
    "scaled",
    "timeout_factor",
    "wait_until",
]


def _timed_out(timeout: float, what: str, pred: object, last: BaseException | None) -> AssertionError:
    limit = scaled(timeout)
    shown = f"{timeout:g}s" if limit == timeout else f"{timeout:g}s (scaled to {limit:g}s)"
    return AssertionError(
        f"timed out after {shown} waiting for {what or pred}"
        + (f" (last error: {last!r})" if last is not None else "")
    )


def wait_until(
    pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``pred`` until it returns a truthy value and return that value.

    Exceptions from ``pred`` count as "not yet" (a server may still be starting);
    at the scaled deadline an AssertionError names ``what`` and the last error.
    """
    deadline = time.monotonic() + scaled(timeout)
    last: Exception | None = None
    while True:
        try:
            value = pred()
        except Exception as exc:  # noqa: BLE001 - reported at the deadline
            last, value = exc, None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, pred, last)
        time.sleep(interval)


async def async_wait_until(
    pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> Any:
    """:func:`wait_until` for async code: ``pred`` may return an awaitable (e.g.
    ``asyncio.to_thread(...)``), which is awaited; exceptions count as "not yet" the same way."""
    deadline = time.monotonic() + scaled(timeout)
    last: Exception | None = None
    while True:
        try:
            value = pred()
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:  # noqa: BLE001 - reported at the deadline
            last, value = exc, None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, pred, last)
        await asyncio.sleep(interval)
