"""Abuse limits not covered elsewhere, against real processes.

Covered elsewhere (see docs/reliability.md): handshake timeout (slowloris on the
gateway), capacity, per-IP cap, forged/expired/wrong-gateway/replayed tickets
(tests/integration/test_gateway*.py); bad dispatch parameters and the basic 401
(tests/integration/test_dispatcher.py); every HTTP input (tests/dispatcher/test_input_fuzz.py).

Here: the dispatcher's HTTP request-size and header limits, every admin route
refusing missing/wrong/other-role tokens, unauthenticated client reports unable
to take a healthy gateway down, the gateway's maximum frame size on the wire,
and no secret (ticket secret, admin token, push token, tickets) in any log or
endpoint of any process, even at debug level.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from harness import (
    GatewayHandle,
    ProbeClient,
    launch_dispatcher,
    wait_ready,
    write_dispatcher_config,
)
from harness import start_gateway as _start_gateway
from helpers import Proc, free_port, scaled, wait_until

from tcpdispatch.errors import ErrorCode
from tcpdispatch.protocol import Data, Error, Welcome

pytestmark = pytest.mark.integration

SECRET = "abuse-ticket-secret-5f0c2a9e71d4"
ADMIN = "abuse-admin-token-93b1e7"
PUSH = "abuse-push-token-0d44c8"
TOO_LARGE = ("body_too_large",)  # one slug for the limit, from the HTTP server and the router alike


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {
        "secret": tmp_path / "ticket.secret",
        "admin": tmp_path / "admin.token",
        "push": tmp_path / "push.token",
    }
    for key, value in (("secret", SECRET), ("admin", ADMIN), ("push", PUSH)):
        out[key].write_text(value + "\n")
    return out


def start_gateway(procs: Any, *extra: str, gw_id: str = "g1") -> GatewayHandle:
    return _start_gateway(procs, gw_id, *extra, agent=True)


class Dispatcher:
    def __init__(
        self,
        procs: Any,
        tmp: Path,
        files: dict[str, Path],
        gateways: list[dict[str, Any]],
        extra: str = "",
        *,
        port: int | None = None,
        sections: dict[str, Any] | None = None,
    ) -> None:
        if sections is None:
            sections = {"health": {"interval": 0.2}, "balancing": {"slow_start_s": 0}}
        self.port, self.config = write_dispatcher_config(
            tmp,
            gateways,
            port=port,
            name="dispatcher",
            secret_file=files["secret"],
            admin_token_file=files["admin"],
            dispatcher={"push_token_file": files["push"]},
            sections=sections,
            extra=extra,
        )
        self.proc: Proc = launch_dispatcher(procs, self.port, self.config, log_level="debug").proc
        wait_ready(self.proc, "dispatcher", 20)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(5))
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def raw(self, data: bytes) -> bytes:
        """Send raw bytes; return what comes back until the server closes or goes quiet."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=scaled(5)) as s:
            try:
                s.sendall(data)
            except OSError:
                pass  # the server may answer and close before reading everything
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (TimeoutError, OSError):
                    break
                if not chunk:
                    break
                out += chunk
            return out

    def pool(self) -> Any:
        """The pool's membership and admin state (live load fields left out)."""
        doc = json.loads(self.request("GET", "/v1/gateways")[2])
        keep = ("id", "address", "check", "weight", "state", "admin_drain", "source", "capacity")
        return doc["policy"], [{k: g[k] for k in keep} for g in doc["gateways"]]

    def state(self, gid: str) -> str:
        return str(json.loads(self.request("GET", f"/v1/gateways/{gid}")[2])["state"])


def gateway_entries(gw: GatewayHandle, gid: str = "g1") -> list[dict[str, Any]]:
    """The ``[[gateways]]`` entries of a dispatcher over ``gw`` alone."""
    return [{"id": gid, "address": f"127.0.0.1:{gw.port}", "check": gw.status_url}]


def status_line(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/1.1 ") else 0


def test_dispatcher_http_request_size_and_header_limits(
    procs: Any, tmp_path: Path, files: dict[str, Path]
) -> None:
    gw = start_gateway(procs, "--secret-file", str(files["secret"]))
    d = Dispatcher(procs, tmp_path, files, gateway_entries(gw), extra="max_body = 1024")
    wait_until(lambda: d.state("g1") == "up", 10, what="g1 up")
    pool_before = d.pool()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    big = {"id": "g9", "address": "127.0.0.1:9", "check": "tcp://127.0.0.1:9", "pad": "x" * 2000}

    # Body over max_body: refused by Content-Length before reading, and while reading a chunked
    # body.
    status, _, body = d.request("POST", "/v1/gateways", big, admin)
    assert status == 413 and json.loads(body)["error"] in TOO_LARGE
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    resp = d.raw(
        b"POST /v1/report HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 4 + b"0\r\n\r\n"
    )
    assert (
        status_line(resp) == 413
        and json.loads(resp.partition(b"\r\n\r\n")[2])["error"] in TOO_LARGE
    )
    # Header limits of the HTTP server: header count, header block size, URI length.
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(300))
    assert status_line(d.raw(b"GET /healthz HTTP/1.1\r\nHost: d\r\n" + many + b"\r\n")) == 431
    huge = b"X-Big: " + b"a" * 1_000_000 + b"\r\n"
    assert status_line(d.raw(b"GET /healthz HTTP/1.1\r\nHost: d\r\n" + huge + b"\r\n")) == 431
    assert (
        status_line(
            d.raw(b"GET /v1/dispatch?client_id=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: d\r\n\r\n")
        )
        == 414
    )
    assert (
        status_line(
            d.raw(b"GET /v1/dispatch?client_id=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: d\r\n\r\n")
        )
        == 400
    )
    assert status_line(d.raw(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")) in (
        0,
        400,
    )  # TLS hello / junk

    # Clients stuck half-way through their headers do not block anyone else.
    stuck = [socket.create_connection(("127.0.0.1", d.port), timeout=5) for _ in range(100)]
    try:
        for s in stuck:
            s.sendall(b"GET /v1/dispatch?client_id=slow HTTP/1.1\r\nHost: d\r\nX-Slow: ")
        t0 = time.monotonic()
        status, _, body = d.request("GET", "/v1/dispatch?client_id=ok")
        assert status == 200 and time.monotonic() - t0 < scaled(2.0)
    finally:
        for s in stuck:
            s.close()
    assert d.pool() == pool_before and d.proc.popen.poll() is None


def test_every_admin_route_refuses_missing_wrong_or_other_role_tokens(
    procs: Any,
    tmp_path: Path,
    files: dict[str, Path],
) -> None:
    gw = start_gateway(procs, "--secret-file", str(files["secret"]))
    d = Dispatcher(procs, tmp_path, files, gateway_entries(gw))
    wait_until(lambda: d.state("g1") == "up", 10, what="g1 up")
    before = d.pool()
    spec = {"id": "g2", "address": "127.0.0.1:9", "check": "tcp://127.0.0.1:9"}
    routes = [
        ("POST", "/v1/gateways", spec),
        ("PATCH", "/v1/gateways/g1", {"weight": 0}),
        ("POST", "/v1/gateways/g1/drain", None),
        ("POST", "/v1/gateways/g1/undrain", None),
        ("DELETE", "/v1/gateways/g1", None),
        ("POST", "/v1/reload", None),
    ]
    bad = [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Bearer {ADMIN[:-1]}",
        f"Bearer {ADMIN}x",
        f"Bearer x{ADMIN}",
        f"Basic {ADMIN}",
        f"Token {ADMIN}",
        f"Bearer {ADMIN.upper()}",
        f"Bearer {PUSH}",
        ADMIN,
    ]
    for method, path, body in routes:
        for auth in bad:
            headers = {} if auth is None else {"Authorization": auth}
            status, hdrs, raw = d.request(method, path, body, headers)
            assert status == 401, (method, path, auth, status, raw)
            doc = json.loads(raw)
            assert doc["error"] == "unauthorized" and hdrs["www-authenticate"].startswith("Bearer")
            assert ADMIN not in raw.decode() and PUSH not in raw.decode()
    # The push role cannot administer, the admin role cannot push heartbeats (separate tokens).
    heartbeat = {"id": "g1", "state": "serving", "connections": 0, "capacity": 10}
    for auth in (None, f"Bearer {ADMIN}", f"Bearer {PUSH}x"):
        headers = {} if auth is None else {"Authorization": auth}
        assert d.request("POST", "/v1/heartbeat", heartbeat, headers)[0] == 401
    assert d.pool() == before
    # And the real token does work (the refusals above were about the token, not the route).
    assert (
        d.request("POST", "/v1/gateways/g1/drain", None, {"Authorization": f"Bearer {ADMIN}"})[0]
        == 200
    )


def test_client_reports_alone_cannot_take_down_a_healthy_gateway(
    procs: Any,
    tmp_path: Path,
    files: dict[str, Path],
) -> None:
    gw = start_gateway(procs, "--secret-file", str(files["secret"]))
    d = Dispatcher(procs, tmp_path, files, gateway_entries(gw))
    wait_until(lambda: d.state("g1") == "up", 10, what="g1 up")
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=scaled(5))
    for i in range(300):  # POST /v1/report needs no token: a flood of lies from one client
        conn.request(
            "POST",
            "/v1/report",
            body=json.dumps({"gateway_id": "g1", "error": f"refused {i}"}),
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 202
        if i % 20 == 0:
            assert d.state("g1") == "up", f"g1 went down after {i} client reports"
    conn.close()
    assert d.state("g1") == "up"


async def test_gateway_maximum_frame_size_on_the_wire(procs: Any) -> None:
    gw = start_gateway(procs, "--no-ticket", "--max-frame", "1024")
    # A header announcing a 4 GiB frame is refused at once, before any payload is sent.
    c = await ProbeClient.connect("127.0.0.1", gw.port)
    await c.send_raw(struct.pack("!IBB", 0xFFFFFFFF, 1, 5))
    frames = await c.recv_all(timeout=scaled(3))
    assert [f.code for f in frames] == [ErrorCode.FRAME_TOO_LARGE]  # type: ignore[union-attr]
    # After WELCOME: a frame of exactly --max-frame passes, one byte more ends the session.
    c = await ProbeClient.connect("127.0.0.1", gw.port)
    assert isinstance(await c.hello(), Welcome)
    await c.send_data(b"a" * (1024 - 2))  # length field = version + opcode + payload = 1024
    assert await c.recv() == Data(b"a" * 1022)
    await c.send_raw(struct.pack("!IBB", 1025, 1, 5) + b"b" * 1023)
    frames = await c.recv_all(timeout=scaled(3))
    assert (
        len(frames) == 1
        and isinstance(frames[0], Error)
        and frames[0].code == ErrorCode.FRAME_TOO_LARGE
    )
    wait_until(lambda: gw.status()["connections"] == 0, 5, what="both connections closed")
    assert gw.status()["rejected"].get("frame_too_large") == 1  # the pre-HELLO one


async def test_no_secret_in_any_log_or_endpoint(
    procs: Any, tmp_path: Path, files: dict[str, Path]
) -> None:
    """Exercise every path that handles a secret, at debug level, then search all output."""
    from tcpdispatch.tickets import TicketSigner

    dport = free_port()
    gw = start_gateway(
        procs,
        "--secret-file",
        str(files["secret"]),
        "--report-to",
        f"http://127.0.0.1:{dport}",
        "--report-token-file",
        str(files["push"]),
        "--report-interval",
        "0.2",
    )
    d = Dispatcher(
        procs,
        tmp_path,
        files,
        [{"id": "g1", "address": f"127.0.0.1:{gw.port}", "check": "push"}],
        port=dport,
        sections={},
    )
    wait_until(lambda: d.state("g1") == "up", 10, what="g1 up through push heartbeats")

    tickets = []
    for i in range(3):  # dispatch and use tickets: once, then replayed, then at the wrong client id
        doc = json.loads(d.request("GET", f"/v1/dispatch?client_id=c{i}")[2])
        tickets.append(doc["ticket"])
        for client_id in (f"c{i}", f"c{i}", "mallory"):
            c = await ProbeClient.connect("127.0.0.1", gw.port)
            await c.hello(doc["ticket"], client_id)
            await c.close()
    forged = TicketSigner(b"not-the-secret-but-long-enough").issue(["g1"], "c9")
    c = await ProbeClient.connect("127.0.0.1", gw.port)
    assert isinstance(await c.hello(forged, "c9"), Error)
    for auth in (f"Bearer {ADMIN}x", f"Bearer {PUSH}", f"Bearer {ADMIN}"):
        d.request("PATCH", "/v1/gateways/g1", {"weight": 2}, {"Authorization": auth})
    d.request("POST", "/v1/heartbeat", {"id": "g1"}, {"Authorization": f"Bearer {ADMIN}"})
    d.config.write_text(
        d.config.read_text() + "\nbogus = 1\n"
    )  # a refused reload logs the config error
    d.proc.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in d.proc.output(), 5, what="reload refused")

    texts = [json.dumps(gw.status()), gw.metrics()]
    texts += [d.request("GET", p)[2].decode() for p in ("/v1/gateways", "/metrics", "/healthz")]
    outputs = {"gateway": gw.proc.output(), "dispatcher": d.proc.output()}
    assert "heartbeat" in outputs["dispatcher"] or "g1 is up" in outputs["dispatcher"]
    for value, what in [
        (SECRET, "ticket secret"),
        (ADMIN, "admin token"),
        (PUSH, "push token"),
        *((t, "ticket") for t in tickets),
        (forged, "forged ticket"),
    ]:
        for name, out in outputs.items():
            assert value not in out, f"{what} in the {name} log"
        for text in texts:
            assert value not in text, f"{what} served by an endpoint"
        # Secrets travel in files, never on a command line other users can read.
        for proc in (gw.proc, d.proc):
            assert all(value not in arg for arg in proc.args), f"{what} on a command line"
