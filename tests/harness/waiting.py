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


class _Deadline:
    """The scaled deadline of one wait; :meth:`check` raises once it has passed."""

    def __init__(self, timeout: float, what: str, pred: object) -> None:
        self.timeout, self.what, self.pred = timeout, what, pred
        self.end = time.monotonic() + scaled(timeout)
        self.last: Exception | None = None  # the predicate's last error, named at the deadline

    def check(self) -> None:
        if time.monotonic() < self.end:
            return
        limit = scaled(self.timeout)
        shown = (
            f"{self.timeout:g}s"
            if limit == self.timeout
            else f"{self.timeout:g}s (scaled to {limit:g}s)"
        )
        last = f" (last error: {self.last!r})" if self.last is not None else ""
        raise AssertionError(f"timed out after {shown} waiting for {self.what or self.pred}{last}")


def wait_until(
    pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``pred`` until it returns a truthy value and return that value.

    Exceptions from ``pred`` count as "not yet" (a server may still be starting);
    at the scaled deadline an AssertionError names ``what`` and the last error.
    """
    deadline = _Deadline(timeout, what, pred)
    while True:
        try:
            value = pred()
        except Exception as exc:  # noqa: BLE001 - reported at the deadline
            deadline.last, value = exc, None
        if value:
            return value
        deadline.check()
        time.sleep(interval)


async def async_wait_until(
    pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> Any:
    """:func:`wait_until` for async code: ``pred`` may return an awaitable (e.g.
    ``asyncio.to_thread(...)``), which is awaited; exceptions count as "not yet" the same way."""
    deadline = _Deadline(timeout, what, pred)
    while True:
        try:
            value = pred()
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:  # noqa: BLE001 - reported at the deadline
            deadline.last, value = exc, None
        if value:
            return value
        deadline.check()
        await asyncio.sleep(interval)
