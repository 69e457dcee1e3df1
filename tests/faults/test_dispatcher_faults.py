"""Dispatcher faults: a restart in the middle of a reconnect storm, and every dispatcher down."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import async_wait_until, wait_until

pytestmark = pytest.mark.integration


async def test_dispatcher_restart_during_reconnect_storm(system: Any, fleets: Any) -> None:
    """A gateway dies and, in the same instant, the only dispatcher is killed and restarted.

    Its clients have no cache and no static list: they must back off (not spin)
    and get through once the new dispatcher process is up and has probed the pool.
    """
    gws = [system.gateway(f"g{i}") for i in (1, 2, 3)]
    d = system.dispatcher(gws)
    await asyncio.to_thread(system.wait_ready)
    fleet = fleets(100, [d.url])
    await fleet.start()
    await fleet.exchange(2)
    victims = fleet.on("g1")
    assert victims, fleet.by_gateway()
    before = {m.id: m.client.stats.dispatch_requests for m in victims}

    t0 = time.monotonic()
    d.proc.signal(signal.SIGKILL)
    gws[0].proc.signal(signal.SIGKILL)
    await fleet.send(2)
    await asyncio.to_thread(d.proc.wait)
    d.restart()
    await asyncio.to_thread(
        wait_until, lambda: "READY" in d.proc.output(), 20, 0.05, "dispatcher READY again"
    )
    await async_wait_until(
        lambda: all(m.client.gateway in ("g2", "g3") for m in victims),
        timeout=25,
        what="every client of the dead gateway reconnected through the new dispatcher",
    )
    storm = time.monotonic() - t0
    await fleet.settle()
    await fleet.exchange(2)
    # No tight loop: each client asked a handful of times, however long the outage was.
    asked = [m.client.stats.dispatch_requests - before[m.id] for m in victims]
    assert max(asked) <= 8, sorted(asked)[-5:]
    assert all(s in ("dispatcher",) for m in victims for s in m.connected_sources())
    print(
        f"restart storm: {len(victims)} clients back after {storm:.2f}s, "
        f"dispatch requests per client max {max(asked)}, mean {sum(asked) / len(asked):.1f}"
    )


async def test_every_dispatcher_down_cache_then_static_list(
    system: Any,
    fleets: Any,
    tmp_path: Path,
) -> None:
    """Both dispatcher replicas die. Connected clients stay put; clients of a dying gateway use
    their cached answer; when the cache only names dead gateways, the static list."""
    g1, g2 = system.gateway("g1"), system.gateway("g2")
    static = system.gateway("s1", tickets=False)  # the built-in address list ("IP直通车")
    d1, d2 = system.dispatcher([g1, g2]), system.dispatcher([g1, g2])
    await asyncio.to_thread(system.wait_ready)
    fleet = fleets(40, [d1.url, d2.url], fallback=[static.address], cache_dir=tmp_path)
    await fleet.start()
    await fleet.exchange(2)
    assert fleet.by_gateway().keys() <= {"g1", "g2"}

    for d in (d1, d2):
        d.proc.signal(signal.SIGKILL)
    for d in (d1, d2):
        await asyncio.to_thread(d.proc.wait)
    await fleet.exchange(2)  # the dispatchers are not in the data path
    assert fleet.reconnects() == 0

    on_g1 = fleet.on("g1")
    assert on_g1, fleet.by_gateway()
    g1.proc.signal(signal.SIGKILL)
    await fleet.send(2)
    await async_wait_until(
        lambda: all(m.client.gateway not in (None, "g1") for m in on_g1),
        timeout=15,
        what="clients of g1 reconnected without any dispatcher",
    )
    await fleet.settle()
    sources = [m.connected_sources()[-1] for m in on_g1]
    # A cached ticket is single-use per gateway: where a raced alternate already spent it, the
    # client goes on to the static list. Most must come back through the cache.
    assert set(sources) <= {"cache", "static"} and sources.count("cache") * 2 > len(sources), (
        sources
    )

    g2.proc.signal(signal.SIGKILL)
    await fleet.send(2)
    await async_wait_until(
        lambda: all(m.client.gateway == static.address for m in fleet.members),
        timeout=20,
        what="every client on the static list",
    )
    await fleet.settle()
    await fleet.exchange(2)
    assert all(m.connected_sources()[-1] == "static" for m in fleet.members)
    print(
        f"all dispatchers down: {sources.count('cache')}/{len(sources)} via cache, "
        f"then {len(fleet.members)} via the static list; {fleet.resent()} messages resent"
    )
