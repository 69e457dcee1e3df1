"""Modelled gateways: capacity, held connections, and what happens to them.

A gateway here is only what the decisions can observe: whether it answers (``up``,
``down`` = crashed/stopped, refusing at once; ``dark`` = hung or cut off, never
answering), whether it drains, how many connections it holds and its capacity
(handshakes beyond it are refused, as the real gateway's limit does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tcpdispatch.config import GatewayEntry


@dataclass(slots=True, eq=False)
class SimGateway:
    index: int
    id: str
    host: str
    zone: int
    capacity: int
    weight: float = 1.0
    state: str = "up"  # up | down | dark | absent (not deployed yet)
    draining: bool = False
    dark_since: float = 0.0
    clients: set[int] = field(default_factory=set)
    leaving: set[int] = field(default_factory=set)  # of clients: shed (RECONNECT), still here
    peak: int = 0  # most connections ever held
    busy_until: float = 0.0  # accept queue (handshakes are served one after another)

    @property
    def held(self) -> int:
        return len(self.clients)

    @property
    def address(self) -> str:
        return f"{self.host}:9000"

    def config(self) -> GatewayEntry:
        """As the dispatcher's config (or admin API) names it."""
        return GatewayEntry(
            id=self.id,
            host=self.host,
            port=9000,
            check=f"http://{self.host}:9100/status",
            weight=self.weight,
            capacity=self.capacity,
        )

    def admits(self) -> bool:
        return self.state == "up" and not self.draining and len(self.clients) < self.capacity

    def attach(self, client: int) -> None:
        self.clients.add(client)
        self.peak = max(self.peak, len(self.clients))


def make_gateways(count: int, zones: int, capacity: int, start: int = 0) -> list[SimGateway]:
    """``count`` gateways, zone = index mod ``zones``, addresses in 10.0.0.0/8."""
    out = []
    for i in range(start, start + count):
        host = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
        out.append(
            SimGateway(index=i, id=f"g{i:04d}", host=host, zone=i % zones, capacity=capacity)
        )
    return out
