"""asyncio helpers shared by the gateway, dispatcher and client."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on the default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)


def parse_hostport(text: str, *, what: str = "address") -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6); raises ValueError naming ``what``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{what} must be HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        num = int(port)
    except ValueError:
        raise ValueError(f"{what} has a non-numeric port: {text!r}") from None
    if not 0 <= num <= 65535:
        raise ValueError(f"{what} port out of range: {text!r}")
    return host, num
