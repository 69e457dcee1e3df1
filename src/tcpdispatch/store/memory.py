"""The embedded default: one dispatcher, its in-memory pool is the whole state."""

from __future__ import annotations

from tcpdispatch.store.base import SharedGateway, Store


class MemoryStore(Store):
    """Accepts every write; the caller's pool is the only copy (no replicas, no Redis)."""

    kind = "memory"
    shared = False

    def __init__(self) -> None:
        self._switches: dict[str, str] = {}

    async def add(self, entry: SharedGateway) -> bool:
        return True

    async def remove(self, gateway_id: str) -> bool:
        return True

    async def set_weight(self, gateway_id: str, weight: float) -> bool:
        return True

    async def set_zone(self, gateway_id: str, zone: str) -> bool:
        return True

    async def set_drain(self, gateway_id: str, draining: bool) -> bool:
        return True

    async def control(self) -> dict[str, str]:
        return dict(self._switches)

    async def set_control(self, key: str, value: str) -> None:
        self._switches[key] = value
