"""Gateway drain and stop: RECONNECT spread over the window, exit when empty or at window end."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from harness import ProbeClient, start_gateway
from helpers import scaled, wait_until

from tcpdispatch.protocol import Bye, Reconnect, Welcome

pytestmark = pytest.mark.integration


async def _connect(gw: Any, n: int) -> list[ProbeClient]:
    clients = [await gw.client() for _ in range(n)]
    for i, c in enumerate(clients):
        assert isinstance(await c.hello(client_id=f"c{i}"), Welcome)
    return clients


async def test_sigterm_spreads_reconnects_then_exits(procs: Any) -> None:
    gw = start_gateway(procs, "g1", "--drain-window", "2.0")
    clients = await _connect(gw, 10)
    arrivals: list[float] = []

    async def follow(c: ProbeClient) -> None:
        frame = await c.recv(timeout=scaled(5))
        assert isinstance(frame, Reconnect) and frame.delay_ms < 1000 and frame.reason
        arrivals.append(time.monotonic())
        await c.close()  # do what a client does: leave (and reconnect via the dispatcher)

    followers = [asyncio.create_task(follow(c)) for c in clients]
    await asyncio.sleep(0)  # every follower is reading before the signal goes out
    t0 = time.monotonic()
    gw.proc.signal(signal.SIGTERM)
    # Blocking HTTP runs in a thread: the followers must keep timestamping arrivals meanwhile.
    await asyncio.to_thread(
        wait_until, lambda: gw.status()["state"] == "draining", 2, 0.05, "state draining"
    )
    with pytest.raises(OSError):  # no longer accepting
        await gw.client()
    await asyncio.gather(*followers)
    rel = sorted(a - t0 for a in arrivals)
    # spread evenly over the first 90% of the 2 s window: one every ~0.18 s, not a stampede
    assert rel[0] < scaled(0.5) and rel[-1] > 1.2, rel
    gaps = [b - a for a, b in itertools.pairwise(rel)]
    assert max(gaps) < scaled(0.6) and sum(g > 0.08 for g in gaps) >= 6, rel
    assert await asyncio.to_thread(gw.proc.wait, 5) == 0
    assert time.monotonic() - t0 < 2.0 + scaled(2)


async def test_post_drain_closes_stragglers_at_window_end(
    procs: Any, admin_token_file: Path
) -> None:
    gw = start_gateway(
        procs, "g1", "--drain-window", "1.0", agent=True, admin_token_file=admin_token_file
    )
    clients = await _connect(gw, 3)
    t0 = (
        time.monotonic()
    )  # before the drain starts: the lower bound below must not depend on HTTP speed
    assert await asyncio.to_thread(gw.drain) == 202
    assert (await asyncio.to_thread(gw.status))["state"] == "draining"
    assert await asyncio.to_thread(gw.agent) == "drain\n"
    for c in clients:  # these clients ignore RECONNECT and stay
        frames = await c.recv_all(timeout=scaled(5))
        assert isinstance(frames[0], Reconnect) and isinstance(frames[-1], Bye), frames
    assert 0.5 < time.monotonic() - t0 < 1.0 + scaled(2)
    assert await asyncio.to_thread(gw.proc.wait, 5) == 0


async def test_sigint_stops_at_once(procs: Any) -> None:
    gw = start_gateway(procs, "g1", "--drain-window", "30")
    clients = await _connect(gw, 2)
    t0 = time.monotonic()
    gw.proc.signal(signal.SIGINT)
    assert await asyncio.to_thread(gw.proc.wait, 5) == 0
    assert time.monotonic() - t0 < scaled(3)
    for c in clients:
        assert await c.recv_all(timeout=scaled(3)) == []


def test_post_drain_requires_the_admin_token_when_configured(procs: Any, tmp_path: Any) -> None:
    import urllib.error
    import urllib.request

    token = tmp_path / "gw.token"
    token.write_text("gateway-admin-token-123\n")
    gw = start_gateway(procs, "g1", "--admin-token-file", str(token))
    url = f"http://127.0.0.1:{gw.status_port}/drain"
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "gateway-admin-token-123"},
    ):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(
                urllib.request.Request(url, method="POST", headers=headers), timeout=5
            )
        assert exc.value.code == 401
    assert gw.status()["state"] == "serving"
    ok = urllib.request.Request(
        url, method="POST", headers={"Authorization": "Bearer gateway-admin-token-123"}
    )
    with urllib.request.urlopen(ok, timeout=5) as r:
        assert r.status == 202
    assert gw.proc.wait(timeout=10) == 0  # no clients: drained at once


def test_post_drain_without_admin_token_is_refused_and_sigterm_still_drains(procs: Any) -> None:
    """Secure by default: no --admin-token-file, no HTTP drain; the answer says how to enable it."""
    import json
    import urllib.error

    gw = start_gateway(procs, "g1", "--drain-window", "1")
    with pytest.raises(urllib.error.HTTPError) as exc:
        gw.drain()
    assert exc.value.code == 403
    doc = json.loads(exc.value.read())
    assert doc["error"] == "admin_token_not_configured" and "--admin-token-file" in doc["detail"]
    assert gw.status()["state"] == "serving"
    gw.proc.signal(signal.SIGTERM)
    assert gw.proc.wait(timeout=10) == 0
