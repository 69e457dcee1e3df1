"""Client SDK: dispatcher failover, cached and static fallback, raced connects, reconnects.

See docs/client.md. The pure policy layer is :mod:`tcpdispatch.client.policy`;
:class:`Client` is the asyncio adapter and :class:`BlockingClient` a blocking wrapper.
"""

from tcpdispatch.client.blocking import BlockingClient
from tcpdispatch.client.client import Client, ClientClosed, ClientEvent, ClientStats, EventKind
from tcpdispatch.client.policy import (
    Backoff,
    BackoffConfig,
    DispatchAnswer,
    Endpoint,
    FailureMemory,
)

__all__ = [
    "Backoff",
    "BackoffConfig",
    "BlockingClient",
    "Client",
    "ClientClosed",
    "ClientEvent",
    "ClientStats",
    "DispatchAnswer",
    "Endpoint",
    "EventKind",
    "FailureMemory",
]
