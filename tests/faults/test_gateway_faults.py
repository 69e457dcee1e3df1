"""Gateway faults with real processes: killed, hung, black-holed, status endpoint dead.

Each test runs three echo gateways and a dispatcher, connects a fleet of SDK
clients (see conftest.py), injects the fault while messages are in flight, and
asserts that every client ends up connected and every message came back, while
clients of the healthy gateways are not disturbed at all.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
from helpers import async_wait_until, scaled

pytestmark = pytest.mark.integration


def start_three(system: Any, **kw: Any) -> Any:
    gws = [system.gateway(f"g{i}") for i in (1, 2, 3)]
    d = system.dispatcher(gws, **kw)
    system.wait_ready()
    return gws, d


def undisturbed(members: list[Any]) -> None:
    """Clients of healthy gateways kept their session: no reconnect, nothing resent."""
    moved = [
        (m.id, m.client.stats.reconnects, m.resent)
        for m in members
        if m.client.stats.reconnects or m.resent
    ]
    assert not moved, f"clients of healthy gateways were disturbed: {moved[:5]}"


async def test_gateway_sigkill(system: Any, fleets: Any) -> None:
    (g1, _g2, _g3), d = start_three(system)
    fleet = fleets(90, [d.url])
    await fleet.start()
    await fleet.exchange(3)
    victims = fleet.on("g1")
    others = [m for m in fleet.members if m not in victims]
    assert victims, fleet.by_gateway()

    g1.proc.signal(signal.SIGKILL)
    t0 = time.monotonic()
    await fleet.send(3)  # some hit the dead socket, some are queued by the SDK
    await async_wait_until(
        lambda: all(m.client.gateway in ("g2", "g3") for m in victims),
        timeout=10,
        what="every client of the killed gateway connected elsewhere",
    )
    moved_in = time.monotonic() - t0
    await fleet.settle()
    await fleet.exchange(3)
    assert fleet.by_gateway().keys() <= {"g2", "g3"}
    # Clients notice a dead socket at once; the dispatcher needs `fall` failed probes: poll, don't
    # race it.
    await async_wait_until(
        lambda: asyncio.to_thread(lambda: d.states()["g1"] == "down"),
        timeout=5,
        what="killed gateway marked down",
    )
    undisturbed(others)
    print(
        f"SIGKILL: {len(victims)} clients moved in {moved_in:.2f}s, "
        f"{fleet.resent()} messages resent"
    )


async def test_gateway_sigstop_then_sigcont(system: Any, fleets: Any) -> None:
    (g1, _g2, _g3), d = start_three(system)
    fleet = fleets(60, [d.url])
    await fleet.start()
    await fleet.exchange(3)
    victims = fleet.on("g1")
    others = [m for m in fleet.members if m not in victims]
    assert victims, fleet.by_gateway()

    g1.proc.signal(signal.SIGSTOP)  # hung: its kernel still ACKs, nobody answers, no RST ever
    try:
        t0 = time.monotonic()
        await fleet.send(3)
        await async_wait_until(
            lambda: all(m.client.gateway in ("g2", "g3") for m in victims),
            timeout=10,
            what="clients of the hung gateway moved",
        )
        moved_in = time.monotonic() - t0
        await fleet.settle()
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: d.states()["g1"] == "down"),
            timeout=5,
            what="hung gateway marked down",
        )
        assert "g1" not in await asyncio.to_thread(d.handed_out)
    finally:
        g1.proc.signal(signal.SIGCONT)
    # Back in rotation after `rise` probes; the sessions it held while frozen are cleaned up.
    await async_wait_until(
        lambda: asyncio.to_thread(lambda: d.states()["g1"] == "up"),
        timeout=5,
        what="resumed gateway up again",
    )

    async def cleaned() -> bool:
        return await asyncio.to_thread(g1.connections) == len(fleet.on("g1"))

    await async_wait_until(cleaned, timeout=10, what="stale sessions of the resumed gateway closed")
    await fleet.exchange(3)
    undisturbed(others)
    print(
        f"SIGSTOP: {len(victims)} clients moved in {moved_in:.2f}s, "
        f"{fleet.resent()} messages resent"
    )


async def test_gateway_black_holed_by_network(system: Any, fleets: Any, netns: Any) -> None:
    """Gateway g3 lives in its own network namespace; an iptables DROP rule cuts it off silently."""
    g1, g2 = system.gateway("g1"), system.gateway("g2")
    g3 = system.gateway("g3", host=netns.ns_ip, netns=netns.name)
    d = system.dispatcher([g1, g2, g3])
    system.wait_ready()
    fleet = fleets(60, [d.url])
    await fleet.start()
    await fleet.exchange(3)
    victims = fleet.on("g3")
    others = [m for m in fleet.members if m not in victims]
    assert victims, fleet.by_gateway()

    netns.black_hole()
    t0 = time.monotonic()
    await fleet.send(3)
    await async_wait_until(
        lambda: asyncio.to_thread(lambda: d.states()["g3"] == "down"),
        timeout=6,
        what="black-holed gateway marked down",
    )
    down_in = time.monotonic() - t0
    await async_wait_until(
        lambda: all(m.client.gateway in ("g1", "g2") for m in victims),
        timeout=10,
        what="clients of the black-holed gateway moved",
    )
    await fleet.settle()
    assert "g3" not in await asyncio.to_thread(d.handed_out)

    netns.restore()
    await async_wait_until(
        lambda: asyncio.to_thread(lambda: d.states()["g3"] == "up"),
        timeout=6,
        what="gateway up again once the network heals",
    )
    await fleet.exchange(3)
    undisturbed(others)
    assert down_in <= scaled(3.0), f"black-holed gateway handed out for {down_in:.2f}s"
    print(
        f"black hole: marked down after {down_in:.2f}s, {len(victims)} clients moved, "
        f"{fleet.resent()} messages resent"
    )


class Forwarder:
    """A TCP relay in front of a gateway's status port; ``kill()`` makes the endpoint dead."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_w))

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.transport.abort()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._writers.difference_update((writer, up_w))

    async def kill(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self.server.wait_closed()


async def test_status_endpoint_dead_but_tcp_port_alive(system: Any, fleets: Any) -> None:
    g1, g2, g3 = (system.gateway(f"g{i}") for i in (1, 2, 3))
    relay = Forwarder(g3.status_port)
    await relay.start()
    g3.check = f"http://127.0.0.1:{relay.port}/status"
    d = system.dispatcher([g1, g2, g3])
    await asyncio.to_thread(system.wait_ready)
    fleet = fleets(60, [d.url])
    await fleet.start()
    await fleet.exchange(3)
    held = {m.id: m.client.session_id for m in fleet.on("g3")}
    assert held, fleet.by_gateway()

    await relay.kill()
    await async_wait_until(
        lambda: asyncio.to_thread(lambda: d.states()["g3"] == "down"),
        timeout=5,
        what="gateway with a dead status endpoint marked down",
    )
    assert "g3" not in await asyncio.to_thread(d.handed_out)
    # Its clients keep their sessions and keep talking; newcomers go elsewhere.
    await fleet.exchange(3)
    late = fleets(20, [d.url], prefix="late")
    await late.start()
    await late.exchange(2)
    assert "g3" not in late.by_gateway()
    assert {m.id: m.client.session_id for m in fleet.members if m.id in held} == held
    undisturbed(fleet.members)
    assert await asyncio.to_thread(g3.connections) == len(held)

    await relay.start(relay.port)  # the status path heals: back in rotation
    await async_wait_until(
        lambda: asyncio.to_thread(lambda: d.states()["g3"] == "up"),
        timeout=5,
        what="gateway up again",
    )
    await relay.kill()
