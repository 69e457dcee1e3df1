"""Zones with real processes: two zones of two gateways, a dispatcher, SDK clients (docs/zones.md).

One system serves every check in turn (lean: a few seconds): the zone is chosen by hint and by
source network through a trusted proxy's X-Forwarded-For; every answer carries an alternate in the
other zone; zone a filled to its spill point sends new zone-a clients to zone b, and they come
back as it frees up; zone a killed: its clients are served from zone b within the failure
detection bound and held SDK clients reconnect there; after a restart zone a serves its own again.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from harness import (
    TCPDISPATCH,
    GatewayHandle,
    RealDispatcher,
    start_gateway,
    wait_ready,
    write_dispatcher_toml,
)
from helpers import async_wait_until, free_port, get_json, scaled, wait_until

from tcpdispatch.client import Client

pytestmark = pytest.mark.integration

ZONE_OF = {"a1": "a", "a2": "a", "b1": "b", "b2": "b"}
CAPACITY = 10  # per gateway: zone a has 20 slots and spills (spill_headroom 0.5) at 10 held


def dispatch(url: str, query: str, xff: str | None = None) -> dict[str, Any]:
    req = urllib.request.Request(f"{url}/v1/dispatch?{query}")
    if xff:
        req.add_header("X-Forwarded-For", xff)
    with urllib.request.urlopen(req, timeout=scaled(2)) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=scaled(2)) as resp:
        return str(resp.read().decode())


def start_zoned_dispatcher(
    procs: Any,
    workdir: Path,
    gws: list[GatewayHandle],
    secret: Path,
    *,
    capacity: int | None = None,
) -> RealDispatcher:
    """A dispatcher with zones a and b; ``capacity`` overrides what the gateways report."""
    port = free_port()
    config = write_dispatcher_toml(
        workdir / f"zones-{port}.toml",
        listen=f"127.0.0.1:{port}",
        secret_file=secret,
        dispatcher={"trusted_proxies": ["127.0.0.1/32"], "spill_headroom": 0.5},
        sections={"health": {"interval": 0.25}},
        zones=[
            {"name": "a", "cidrs": ["198.51.100.0/24"], "spill_to": ["b"]},
            {"name": "b", "cidrs": ["203.0.113.0/24"]},
        ],
        gateways=[
            {
                "id": g.id,
                "address": g.address,
                "check": g.status_url,
                "zone": ZONE_OF[g.id],
                **({"capacity": capacity} if capacity else {}),
            }
            for g in gws
        ],
    )
    proc = procs([*TCPDISPATCH, "dispatcher", "--config", str(config)], name="dispatcher")
    d = RealDispatcher(f"http://127.0.0.1:{port}", proc)
    wait_ready(proc, "dispatcher", scaled(30))
    wait_until(
        lambda: all(g["healthy"] for g in d.gateways().values()),
        scaled(30),
        0.05,
        what="all healthy",
    )
    return d


def zone_held(d: RealDispatcher, zone: str) -> int:
    return int(get_json(d.url + "/v1/gateways")["zones"][zone]["held"])


async def echo(client: Client, payload: bytes) -> None:
    await client.send(payload)
    async with asyncio.timeout(scaled(5)):
        assert await client.receive() == payload


async def test_two_zones_end_to_end(procs: Any, secret_file: Path, tmp_path: Path) -> None:
    gws = [
        start_gateway(
            procs, gid, "--heartbeat", "1", "--capacity", str(CAPACITY), secret_file=secret_file
        )
        for gid in ZONE_OF
    ]
    # Every ticket issued counts as a connection until the next status report, so the checks
    # that dispatch in bulk use a dispatcher that knows the gateways as big (capacity 100,000)
    # and the spill check one that knows their real capacity (10).
    d = start_zoned_dispatcher(procs, tmp_path, gws, secret_file, capacity=100_000)
    small = start_zoned_dispatcher(procs, tmp_path, gws, secret_file)
    pool = get_json(d.url + "/v1/gateways")
    assert {g["id"]: g["zone"] for g in pool["gateways"]} == ZONE_OF

    # 1. Clients of zone a get zone a (>= 99 %), by hint and by network through the trusted proxy;
    # every answer names its zones and carries an alternate in the other zone.
    for query, xff in (("zone=a", None), ("", "198.51.100.23")):
        got: Counter[str] = Counter()
        for i in range(100):
            doc = dispatch(d.url, f"client_id=c{i}" + (f"&{query}" if query else ""), xff)
            got[doc["gateway"]["zone"]] += 1
            assert any(a["zone"] != doc["gateway"]["zone"] for a in doc["alternates"]), doc
        assert got["a"] >= 99, (query, xff, got)
    assert dispatch(d.url, "client_id=x", "203.0.113.9")["gateway"]["zone"] == "b"

    # 2. Zone a filled to its spill point (10 of 20 slots held): new zone-a clients go to zone b;
    # as zone a frees up they come back.
    held = [
        Client([small.url], zone="a", client_id=f"held{i}", stagger=scaled(2)) for i in range(10)
    ]
    try:
        for c in held:
            await c.connect(scaled(5))
        assert Counter(ZONE_OF[c.gateway or ""] for c in held) == {"a": 10}
        await async_wait_until(
            lambda: zone_held(small, "a") >= 10, timeout=scaled(5), what="zone a reports 10"
        )
        spilled = Counter(
            dispatch(small.url, f"client_id=n{i}&zone=a")["gateway"]["zone"] for i in range(10)
        )
        assert spilled["b"] >= 8, spilled  # the zone's verdict is at most one zone-size (2) stale
        zones = get_json(small.url + "/v1/gateways")["zones"]
        assert zones["a"]["spilling_to"] == "b"
    finally:
        for c in held:
            await c.close()
    await async_wait_until(
        lambda: zone_held(small, "a") == 0, timeout=scaled(5), what="zone a empty again"
    )
    await async_wait_until(
        lambda: get_json(small.url + "/v1/gateways")["zones"]["b"]["held"] == 0,
        timeout=scaled(5),
        what="the spilled tickets expired from zone b's counts",
    )
    back = Counter(
        dispatch(small.url, f"client_id=r{i}&zone=a")["gateway"]["zone"] for i in range(6)
    )
    assert back["a"] >= 5, back

    # 3. Zone a's gateways killed: zone-a clients are served from zone b within the failure
    # detection bound, and every SDK client held in zone a reconnects to zone b within 5 s.
    clients = [Client([d.url], zone="a", client_id=f"z{i}", stagger=0.1) for i in range(4)]
    for c in clients:
        await c.connect(scaled(5))
    try:
        assert {ZONE_OF[c.gateway or ""] for c in clients} == {"a"}
        for c in clients:
            await echo(c, b"before")
        killed = time.monotonic()
        for g in gws[:2]:
            g.proc.signal(signal.SIGKILL)
        await async_wait_until(
            lambda: dispatch(d.url, "client_id=probe&zone=a")["gateway"]["zone"] == "b",
            timeout=scaled(1.5),
            interval=0.02,
            what="zone-a clients served from b",
        )
        served_from_b = time.monotonic() - killed
        await async_wait_until(
            lambda: all(ZONE_OF.get(c.gateway or "") == "b" for c in clients),
            timeout=scaled(5),
            what="every held client on zone b",
        )
        moved = time.monotonic() - killed
        for c in clients:
            await echo(c, b"after")  # nothing lost: each one still talks
        print(
            f"zone outage: dispatch served from b after {served_from_b:.2f}s, "
            f"every held client on b after {moved:.2f}s"
        )
        assert served_from_b <= scaled(1.5)

        # 4. Zone a restarted on the same ports: zone-a clients are served from zone a again.
        for g in gws[:2]:
            procs(g.proc.args, name=f"{g.id}-again")
        await async_wait_until(
            lambda: dispatch(d.url, "client_id=back&zone=a")["gateway"]["zone"] == "a",
            timeout=scaled(10),
            what="zone a serves its clients again",
        )
    finally:
        for c in clients:
            await c.close()
    text = metrics_text(small.url)
    assert 'tcpdispatch_zone_dispatched_total{client_zone="a",gateway_zone="b"}' in text
    log = small.proc.output()
    assert "zone a spills over to zone b" in log and "zone a serves its own clients again" in log
