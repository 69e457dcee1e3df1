"""Overload protection with real processes: a saturated gateway stops getting clients, under p2c."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import ProbeClient, start_dispatcher, start_gateway
from helpers import Proc, get_json, scaled, wait_until

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent


async def _saturate(host: str, port: int, stop: asyncio.Event) -> int:
    """Keep 4 messages in flight to a BurnHandler gateway until ``stop``; returns echoes
    received."""
    client = await ProbeClient.connect(host, port)
    await client.hello()
    got = 0
    try:
        for _ in range(4):
            await client.send_data(b"x")
        while not stop.is_set():
            await client.recv(5.0)
            got += 1
            await client.send_data(b"x")
    finally:
        await client.close()
    return got


def _primaries(url: str, n: int) -> list[str]:
    return [
        get_json(f"{url}/v1/dispatch?client_id=c{i}-{time.monotonic_ns()}")["gateway"]["id"]
        for i in range(n)
    ]


async def test_a_saturated_gateway_gets_no_new_clients_until_it_recovers(
    procs: Callable[..., Proc], tmp_path: Path, secret_file: Path
) -> None:
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    gws = [
        start_gateway(procs, f"g{i}", "--handler", "burn_handler:BurnHandler", env=env)
        for i in (1, 2, 3)
    ]
    d = start_dispatcher(procs, tmp_path, gws, secret_file, extra_toml='policy = "p2c"')
    loop = asyncio.get_running_loop()
    assert {"g1", "g2", "g3"} <= set(await loop.run_in_executor(None, _primaries, d.url, 40))

    stop = asyncio.Event()
    t0 = time.monotonic()
    load = loop.create_task(_saturate(gws[0].host, gws[0].port, stop))
    try:

        def overloaded() -> bool:
            return bool(d.gateways()["g1"]["overloaded"])

        await loop.run_in_executor(
            None, lambda: wait_until(overloaded, scaled(4), what="g1 overloaded")
        )
        entered = time.monotonic() - t0
        print(
            f"saturated gateway left out after {entered:.2f}s: "
            f"{d.gateways()['g1']['overload_reason']}"
        )
        assert entered < scaled(2.0)
        assert not load.done()
        picked = await loop.run_in_executor(None, _primaries, d.url, 40)
        assert "g1" not in picked and set(picked) == {"g2", "g3"}  # the others keep serving
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            echoes = await asyncio.wait_for(load, scaled(10))
            print(f"{echoes} burnt messages")
    t1 = time.monotonic()
    await loop.run_in_executor(
        None,
        lambda: wait_until(
            lambda: not d.gateways()["g1"]["overloaded"], scaled(4), what="g1 recovered"
        ),
    )
    left = time.monotonic() - t1
    print(f"recovered gateway back after {left:.2f}s")
    assert left < scaled(2.0)
    assert "g1" in set(await loop.run_in_executor(None, _primaries, d.url, 40))
    log = d.proc.output()
    assert (
        log.count("gateway g1 is overloaded") == 1 and log.count("g1 recovered from overload") == 1
    )
