"""Real HAProxy balancing on the gateway's agent-check port marks the server DRAIN when it drains."""

from __future__ import annotations

import csv
import io
import socket
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port, require_binary, wait_until

from tcpdispatch.gateway.testing import ProbeClient, start_gateway
from tcpdispatch.protocol import Reconnect, Welcome

pytestmark = pytest.mark.integration


def _stats(sock_path: Path) -> dict[str, dict[str, str]]:
    """HAProxy's `show stat` CSV, keyed by server name (backend rows only)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
    return {r["svname"]: r for r in rows if r["pxname"] == "gateways"}


async def test_haproxy_agent_check_sees_drain(procs: Any, tmp_path: Path) -> None:
    haproxy = require_binary("haproxy")
    gw = start_gateway(procs, wait_until, free_port, "--no-ticket", "--drain-window", "30")
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
""")
    ha = procs([haproxy, "-db", "-f", str(cfg)], name="haproxy")
    wait_until(lambda: sock_path.exists() and _stats(sock_path)["g1"]["status"] == "UP", timeout=10,
               what="HAProxy sees g1 UP")
    # a client through HAProxy keeps the gateway (and its agent port) alive through the drain window
    via_haproxy = await ProbeClient.connect("127.0.0.1", front)
    assert isinstance(await via_haproxy.hello(client_id="via-haproxy"), Welcome)
    assert gw.status()["connections"] >= 1
    assert gw.drain() == 202
    row = wait_until(lambda: (r := _stats(sock_path)["g1"])["status"].startswith("DRAIN") and r,
                     timeout=10, what="HAProxy reports g1 DRAIN")
    assert row["status"].startswith("DRAIN")  # type: ignore[index]
    assert isinstance(await via_haproxy.recv(timeout=5), Reconnect)
    assert ha.popen.poll() is None
