"""Secure by default on a real dispatcher, on both dispatch hot paths (issue 11, security 4):
no admin token configured -> every admin call is 403 naming how to enable it; a read
token guards the address listings while dispatch and health stay open."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import start_dispatcher, start_gateway
from harness import system as harness_system
from helpers import Proc, scaled

pytestmark = pytest.mark.integration

READ = "read-token-for-tests"


def call(
    url: str, method: str = "GET", token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=scaled(5)) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


@pytest.mark.parametrize("speedups", ["true", "false"])
def test_no_admin_token_refuses_with_403_and_read_token_guards_listings(
    procs: Callable[..., Proc],
    tmp_path: Path,
    secret_file: Path,
    speedups: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "read.token").write_text(READ + "\n")
    gw = start_gateway(procs, "g1", secret_file=secret_file)
    extra = f'speedups = {speedups}\nread_token_file = "{tmp_path / "read.token"}"'
    # start_dispatcher polls GET /v1/gateways until the gateway is up: that now needs the token
    monkeypatch.setattr(harness_system, "get_json", lambda u, timeout=2.0: call(u, token=READ)[1])
    disp = start_dispatcher(procs, tmp_path, [gw], secret_file, extra_toml=extra)
    url = disp.url
    for method, path, body in [
        ("POST", "/v1/gateways/g1/drain", None),
        ("DELETE", "/v1/gateways/g1", None),
        ("PATCH", "/v1/gateways/g1", {"weight": 3}),
        ("POST", "/v1/reload", None),
        ("POST", "/v1/gateways", {"id": "g2", "address": "127.0.0.1:9"}),
    ]:
        status, doc = call(url + path, method, READ, body)
        assert status == 403 and doc["error"] == "forbidden", (method, path, status, doc)
        assert "admin_token_file" in doc["detail"]
    for path in ("/v1/gateways", "/v1/gateways/g1", "/metrics"):
        status, doc = call(url + path)
        assert status == 401 and "127.0.0.1" not in json.dumps(doc), (path, doc)
        assert call(url + path, token=READ)[0] == 200
    status, doc = call(url + "/v1/gateways", token=READ)
    assert doc["gateways"][0]["state"] == "up" and not doc["gateways"][0]["admin_drain"]
    assert call(url + "/v1/dispatch?client_id=a")[0] == 200
    assert call(url + "/healthz")[0] == 200
    # an HTTP/0.9-style request line (no version) gets no ticket from either server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=scaled(5)) as sock:
        sock.sendall(b"GET /v1/dispatch?client_id=a\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ") and b"ticket" not in answer, answer[:300]
