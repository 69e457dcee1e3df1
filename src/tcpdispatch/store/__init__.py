"""Shared state for dispatcher replicas: the interface, the embedded memory store, Redis.

``make_store(config.store)`` picks the implementation: no ``[store] url`` -> the
memory store (a single dispatcher, exactly the behaviour without this package);
``url = "redis://..."`` -> :class:`RedisStore` (needs ``pip install tcpdispatch[redis]``).
"""

from __future__ import annotations

from tcpdispatch.config import StoreConfig
from tcpdispatch.store.base import SharedGateway, Store, StoreHooks, StoreUnavailable
from tcpdispatch.store.memory import MemoryStore


def make_store(config: StoreConfig) -> Store:
    """The store ``config`` asks for (Redis is imported only when configured)."""
    if not config.shared:
        return MemoryStore()
    from tcpdispatch.store.redis_store import RedisStore

    return RedisStore(config)


__all__ = ["MemoryStore", "SharedGateway", "Store", "StoreHooks", "StoreUnavailable", "make_store"]
