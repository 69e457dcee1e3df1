"""Real HAProxy balancing on the gateway's agent-check port marks the server DRAIN when it
drains."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from harness import ProbeClient, haproxy_stats, start_gateway
from helpers import free_port, require_binary, wait_until

from tcpdispatch.protocol import Reconnect, Welcome

pytestmark = pytest.mark.integration


async def test_haproxy_agent_check_sees_drain(
    procs: Any, tmp_path: Path, admin_token_file: Path
) -> None:
    haproxy = require_binary("haproxy")
    gw = start_gateway(
        procs, "g1", "--drain-window", "30", agent=True, admin_token_file=admin_token_file
    )
    front = free_port()
    sock_path = tmp_path / "haproxy.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""
global
    stats socket {sock_path} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{front}
    default_backend gateways
backend gateways
    server g1 127.0.0.1:{gw.port} check inter 200ms agent-check agent-port {gw.agent_port} agent-inter 200ms
""")  # noqa: E501 (a HAProxy config line cannot be continued)
    ha = procs([haproxy, "-db", "-f", str(cfg)], name="haproxy")
    wait_until(
        lambda: sock_path.exists() and haproxy_stats(sock_path, timeout=5)["g1"]["status"] == "UP",
        timeout=10,
        what="HAProxy sees g1 UP",
    )
    # a client through HAProxy keeps the gateway (and its agent port) alive through the drain window
    via_haproxy = await ProbeClient.connect("127.0.0.1", front)
    assert isinstance(await via_haproxy.hello(client_id="via-haproxy"), Welcome)
    assert (await asyncio.to_thread(gw.status))["connections"] >= 1
    assert await asyncio.to_thread(gw.drain) == 202
    row = await asyncio.to_thread(
        wait_until,
        lambda: (
            (r := haproxy_stats(sock_path, timeout=5)["g1"])["status"].startswith("DRAIN") and r
        ),
        10,
        0.05,
        "HAProxy reports g1 DRAIN",
    )
    assert row["status"].startswith("DRAIN")  # type: ignore[index]
    assert isinstance(await via_haproxy.recv(timeout=5), Reconnect)
    assert ha.popen.poll() is None
