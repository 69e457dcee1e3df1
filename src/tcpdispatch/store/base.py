"""The state-store interface: what dispatcher replicas share.

A store holds the *admin-owned* part of the pool (membership, weight, drain)
and relays push heartbeats. It never holds health or load: every replica pulls
those itself, so replicas never depend on each other or on the store to
answer dispatches (static stability, see docs/scaling.md).

Two implementations: :class:`~tcpdispatch.store.memory.MemoryStore` (one
dispatcher, the pool in memory is the state: today's behaviour) and
:class:`~tcpdispatch.store.redis_store.RedisStore` (several replicas).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tcpdispatch.config import GatewayEntry
from tcpdispatch.errors import TcpDispatchError


class StoreUnavailable(TcpDispatchError):
    """The shared store cannot take a write now (unreachable, or not yet resynced)."""


@dataclass(frozen=True, slots=True)
class SharedGateway:
    """The admin-owned state of one gateway: its config (weight included), origin and drain flag."""

    config: GatewayEntry
    source: str  # config | admin | push
    drain: bool = False


@dataclass(slots=True)
class StoreHooks:
    """How a store talks back to its dispatcher (all called from the event loop).

    ``snapshot`` returns the replica's current admin state (used to seed an empty
    store); ``apply`` replaces it with the store's (``initial`` for the first sync
    before serving); ``heartbeat`` feeds a heartbeat another replica received;
    ``push_ids`` lists the push gateways whose heartbeats to look up on resync.
    """

    snapshot: Callable[[], list[SharedGateway]]
    apply: Callable[[Mapping[str, SharedGateway], bool], None]
    heartbeat: Callable[[str, Mapping[str, Any]], None]
    push_ids: Callable[[], list[str]]


class Store(ABC):
    """Shared admin state plus heartbeat relay.

    Writes return False when the target does not allow it (``add``: the id
    exists; the others: the id is unknown) and raise :class:`StoreUnavailable`
    when the store cannot be written; the caller then applies the change to its
    own pool. ``heartbeat`` is best effort and never blocks.
    """

    kind: str = ""
    shared: bool = False  # True: the store owns pool membership, weights and drain

    @property
    def available(self) -> bool:
        return True

    async def start(self, hooks: StoreHooks) -> None:
        """Connect and apply the shared state once (bounded in time; never fails for outages)."""

    async def close(self) -> None:
        """Stop background work and disconnect."""

    @abstractmethod
    async def add(self, entry: SharedGateway) -> bool: ...

    @abstractmethod
    async def remove(self, gateway_id: str) -> bool: ...

    @abstractmethod
    async def set_weight(self, gateway_id: str, weight: float) -> bool: ...

    @abstractmethod
    async def set_zone(self, gateway_id: str, zone: str) -> bool: ...

    @abstractmethod
    async def set_drain(self, gateway_id: str, draining: bool) -> bool: ...

    def heartbeat(self, gateway_id: str, doc: Mapping[str, Any], ttl: float) -> None:
        """Relay a push heartbeat received by this replica (no-op when not shared)."""

    # -- leadership and shared switches (the rebalancer: docs/rebalancing.md) --------
    async def lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` for ``ttl`` seconds; True while it is
        ours.

        Without a shared store this dispatcher is alone, so it always holds it.
        """
        return True

    async def release(self, name: str, holder: str) -> None:
        """Give the lease up (on shutdown), if ``holder`` has it."""

    @abstractmethod
    async def control(self) -> dict[str, str]:
        """The shared operator switches (``paused``, ``trigger``); raises StoreUnavailable."""

    @abstractmethod
    async def set_control(self, key: str, value: str) -> None:
        """Set one shared operator switch; raises StoreUnavailable."""

    def describe(self) -> dict[str, Any]:
        """JSON view for ``/healthz``."""
        return {"kind": self.kind, "available": self.available}
