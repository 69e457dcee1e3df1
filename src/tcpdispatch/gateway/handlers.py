"""The application handler API and the two shipped handlers (echo, broadcast).

A handler is one object per worker process. The gateway calls it from the
event loop, synchronously, for every session::

    class Shout(Handler):
        def on_message(self, session, payload):
            session.send(payload.upper())

Run it with ``tcpdispatch gateway --handler mypkg.mod:Shout ...``. Handlers
that need to await something start their own tasks; the callbacks themselves
must not block. A session is the gateway's connection object: use its
``session_id``, ``client_id``, ``peer``, ``send(payload)`` and ``close()``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Protocol

from tcpdispatch.errors import ConfigError


class Session(Protocol):
    """What a handler sees of one open connection."""

    @property
    def session_id(self) -> str: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def peer(self) -> str | None: ...
    def send(self, payload: bytes) -> bool: ...
    def close(self) -> None: ...


class Hub(Protocol):
    """The worker's view of its open sessions, given to the handler at construction."""

    def sessions(self) -> Iterator[Session]: ...
    def get(self, session_id: str) -> Session | None: ...
    def send(self, session_id: str, payload: bytes) -> bool: ...
    def broadcast(self, payload: bytes, exclude: Session | None = None) -> int: ...


class Handler:
    """Base class: every callback defaults to doing nothing."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def on_connect(self, session: Session) -> None:
        """The session is open (WELCOME was sent)."""

    def on_message(self, session: Session, payload: bytes) -> None:
        """A DATA frame arrived from the client."""

    def on_close(self, session: Session, reason: str) -> None:
        """The session ended (only called for sessions that were opened)."""


class EchoHandler(Handler):
    """Sends every message back to its sender."""

    def on_message(self, session: Session, payload: bytes) -> None:
        session.send(payload)


class BroadcastHandler(Handler):
    """A chat room: every message goes to every other open session of this worker."""

    def on_message(self, session: Session, payload: bytes) -> None:
        self.hub.broadcast(payload, exclude=session)


BUILTIN: dict[str, type[Handler]] = {"echo": EchoHandler, "broadcast": BroadcastHandler}


def load_handler_class(spec: str) -> type[Handler]:
    """Resolve ``echo``, ``broadcast`` or ``package.module:Class``; ConfigError if it cannot."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"unknown handler {spec!r} (use {' or '.join(BUILTIN)} or module:Class)",
            key="--handler",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}", key="--handler") from None
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ConfigError(f"{module_name!r} has no class {attr!r}", key="--handler")
    for name in ("on_connect", "on_message", "on_close"):
        if not callable(getattr(cls, name, None)):
            raise ConfigError(
                f"{spec} lacks {name}() (subclass tcpdispatch.gateway.Handler)", key="--handler"
            )
    return cls
