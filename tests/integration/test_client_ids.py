"""Client ids with ``+``, ``%``, spaces and non-ASCII, end to end (issue 11, security 2).

Each id goes to a real dispatcher through curl, the SDK and a raw socket, on the
C and the Python hot path, and the ticket it gets must open a session at a real
gateway with a HELLO carrying the very same id (no TICKET_WRONG_CLIENT).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from harness import GatewayHandle, RealDispatcher, start_dispatcher, start_gateway
from helpers import Proc, require_binary, require_speedups, scaled

from tcpdispatch.client import Client
from tcpdispatch.protocol import Connection, Hello, Role, Welcome

pytestmark = pytest.mark.integration

IDS = ["user+tag@example.com", "100%", "a b", "café-€", "+ %2B%"]


@pytest.fixture(params=[True, False], ids=["c", "python"])
def system(
    request: pytest.FixtureRequest, procs: Callable[..., Proc], tmp_path: Path, secret_file: Path
) -> tuple[GatewayHandle, RealDispatcher]:
    if request.param:
        require_speedups()
    gw = start_gateway(procs, "g1", secret_file=secret_file)
    disp = start_dispatcher(
        procs, tmp_path, [gw], secret_file, extra_toml=f"speedups = {str(request.param).lower()}"
    )
    return gw, disp


def hello(gw: GatewayHandle, ticket: str, client_id: str) -> Any:
    """The gateway's first answer to HELLO(ticket, client_id)."""
    conn = Connection(Role.CLIENT)
    conn.send(Hello(ticket=ticket, client_id=client_id))
    with socket.create_connection((gw.host, gw.port), timeout=scaled(5)) as sock:
        sock.sendall(conn.data_to_send())
        frames: list[Any] = []
        while not frames:
            data = sock.recv(65536)
            if not data:
                raise AssertionError("gateway closed without answering HELLO")
            frames = conn.receive_data(data)
    return frames[0]


def raw_get(disp: RealDispatcher, target: str) -> dict[str, Any]:
    host, port = disp.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=scaled(5)) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), data[:300]
    return dict(json.loads(body))


def test_curl_sdk_and_raw_client_ids_reach_the_gateway(
    system: tuple[GatewayHandle, RealDispatcher],
) -> None:
    gw, disp = system
    curl = require_binary("curl")
    for cid in IDS:
        encoded = quote(cid, safe="")
        # curl, with the id percent-encoded by RFC 3986 (what docs/protocol.md tells clients to
        # send)
        out = subprocess.run(
            [curl, "-sS", "--fail", f"{disp.url}/v1/dispatch?client_id={encoded}"],
            capture_output=True,
            timeout=scaled(10),
            check=True,
        )
        doc = json.loads(out.stdout)
        assert isinstance(hello(gw, doc["ticket"], cid), Welcome), cid
        # a raw client, same request bytes
        doc = raw_get(disp, f"/v1/dispatch?client_id={encoded}")
        assert isinstance(hello(gw, doc["ticket"], cid), Welcome), cid
    # the audit's request: a literal '+' in the URL is a plus, not a space
    out = subprocess.run(
        [curl, "-sS", "--fail", f"{disp.url}/v1/dispatch?client_id=user+tag@example.com"],
        capture_output=True,
        timeout=scaled(10),
        check=True,
    )
    assert isinstance(hello(gw, json.loads(out.stdout)["ticket"], "user+tag@example.com"), Welcome)
    # a malformed escape is a clear 400
    out = subprocess.run(
        [curl, "-sS", "-w", "\n%{http_code}", f"{disp.url}/v1/dispatch?client_id=a%zz"],
        capture_output=True,
        timeout=scaled(10),
        check=True,
    )
    body, _, code = out.stdout.decode().rpartition("\n")
    assert code == "400" and "malformed percent-escape" in json.loads(body)["detail"]

    async def sdk() -> None:
        for cid in IDS:
            async with asyncio.timeout(scaled(10)):
                async with Client([disp.url], client_id=cid) as c:
                    assert c.gateway == "g1", cid
                    await c.send(b"ping")
                    assert await c.receive() == b"ping"

    asyncio.run(sdk())
