"""The gateway as a real process: handshake, every rejection, timeouts, handlers, status
endpoints."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from harness import GatewayHandle as Gw
from harness import start_gateway
from helpers import TCPDISPATCH, async_wait_until, free_port, scaled, wait_until

from tcpdispatch.errors import ErrorCode
from tcpdispatch.protocol import Connection, Data, Error, Hello, Pong, Role, Welcome
from tcpdispatch.tickets import TicketSigner

pytestmark = pytest.mark.integration

SECRET = b"test-secret-0123456789abcdef"


@pytest.fixture
def secret_gw(procs: Any, secret_file: Path) -> Gw:
    return start_gateway(procs, "g1", secret_file=secret_file)


async def test_valid_ticket_handshake_echo_and_ping(secret_gw: Gw) -> None:
    ticket = TicketSigner(SECRET).issue(["g9", "g1"], "client-7")
    c = await secret_gw.client()
    welcome = await c.hello(ticket, "client-7")
    assert isinstance(welcome, Welcome), welcome
    assert welcome.session_id.startswith("g1.0.")
    assert welcome.heartbeat_ms == 10_000 and welcome.idle_timeout_ms == 30_000
    await c.send_data(b"hello gateway")
    assert await c.recv() == Data(b"hello gateway")
    await c.ping(42)
    assert await c.recv() == Pong(42)
    st = secret_gw.status()
    assert st["connections"] == 1 and st["accepted"] == 1 and st["state"] == "serving"
    await c.close()
    wait_until(lambda: secret_gw.status()["connections"] == 0, what="connection count back to 0")


async def test_every_ticket_rejection_names_its_reason(secret_gw: Gw) -> None:
    good = TicketSigner(SECRET)
    cases = {
        ErrorCode.TICKET_FORGED: TicketSigner(b"another-secret-0123456789").issue(["g1"], "c1"),
        ErrorCode.TICKET_EXPIRED: TicketSigner(SECRET, 10, clock=lambda: time.time() - 600).issue(
            ["g1"], "c1"
        ),
        ErrorCode.TICKET_WRONG_GATEWAY: good.issue(["g2", "g3"], "c1"),
        ErrorCode.TICKET_WRONG_CLIENT: good.issue(["g1"], "someone-else"),
        ErrorCode.TICKET_REQUIRED: "",
    }
    for code, ticket in cases.items():
        c = await secret_gw.client()
        answer = await c.hello(ticket, "c1")
        assert isinstance(answer, Error) and answer.code == code, (code, answer)
        assert answer.reason
        assert await c.recv_all(timeout=scaled(5)) == []  # then the gateway closes
    # replay: the same ticket works once only
    ticket = good.issue(["g1"], "c1")
    first = await secret_gw.client()
    assert isinstance(await first.hello(ticket, "c1"), Welcome)
    again = await secret_gw.client()
    answer = await again.hello(ticket, "c1")
    assert isinstance(answer, Error) and answer.code == ErrorCode.TICKET_REPLAYED
    rejected = secret_gw.status()["rejected"]
    assert rejected == {c.slug: 1 for c in [*cases, ErrorCode.TICKET_REPLAYED]}


async def test_handshake_and_idle_timeouts(procs: Any) -> None:
    gw = start_gateway(
        procs, "g1", "--handshake-timeout", "0.4", "--heartbeat", "0.2", "--idle-timeout", "0.8"
    )
    mute = await gw.client()  # never says HELLO
    silent = await gw.client()
    pinger = await gw.client()
    for c in (silent, pinger):
        assert isinstance(await c.hello(), Welcome)
    t0 = time.monotonic()
    answer = await mute.recv(timeout=scaled(5))
    assert isinstance(answer, Error) and answer.code == ErrorCode.HANDSHAKE_TIMEOUT
    assert time.monotonic() - t0 >= 0.3
    # the pinger keeps its session alive past several idle timeouts; the silent one is closed
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        await pinger.ping(1)
        assert await pinger.recv() == Pong(1)
        await asyncio.sleep(0.2)
    frames = await silent.recv_all(timeout=scaled(3))
    assert [type(f) for f in frames] == [Error] and frames[0].code == ErrorCode.IDLE_TIMEOUT
    assert pinger.is_open
    assert gw.status()["connections"] == 1
    assert gw.status()["rejected"] == {"handshake_timeout": 1}


async def test_tricklers_are_cut_at_the_handshake_deadline_and_free_capacity(procs: Any) -> None:
    """The audit's attack: a full gateway held by clients trickling a HELLO byte by byte.

    Every byte arrives well inside the deadline, yet each trickler is cut ~1 s after
    accept, so the valid client that was refused gets in right after."""
    gw = start_gateway(procs, "g1", "--capacity", "4", "--handshake-timeout", "1")
    raw = Connection(Role.CLIENT)
    raw.send(Hello("", "x" * 250))
    hello = raw.data_to_send()
    tricklers = [await gw.client() for _ in range(4)]
    t0 = time.monotonic()
    refused = await gw.client()
    assert (await refused.recv()).code == ErrorCode.OVERLOADED  # type: ignore[union-attr]

    async def trickle(c: Any) -> float:
        for b in hello:
            try:
                await c.send_raw(bytes([b]))
            except OSError:
                break
            if c.reader.at_eof():
                break
            try:
                frame = await c.recv(timeout=0.15)
            except TimeoutError:
                continue
            except EOFError:
                break
            assert isinstance(frame, Error) and frame.code == ErrorCode.HANDSHAKE_TIMEOUT, frame
            break
        return time.monotonic() - t0

    cut_after = await asyncio.wait_for(asyncio.gather(*(trickle(c) for c in tricklers)), scaled(10))
    assert all(0.9 < t < 1.0 + scaled(1.0) for t in cut_after), cut_after
    valid = await gw.client()
    assert isinstance(await valid.hello(client_id="valid"), Welcome)
    assert gw.status()["rejected"] == {"overloaded": 1, "handshake_timeout": 4}


async def test_capacity_and_per_ip_limit(procs: Any) -> None:
    gw = start_gateway(procs, "g1", "--capacity", "3", "--per-ip-limit", "2", agent=True)
    a1, a2 = await gw.client("127.0.0.1"), await gw.client("127.0.0.1")
    for c in (a1, a2):
        assert isinstance(await c.hello(), Welcome)
    a3 = await gw.client("127.0.0.1")  # third from the same IP
    answer = await a3.recv()
    assert isinstance(answer, Error) and answer.code == ErrorCode.IP_LIMIT
    b1 = await gw.client("127.0.0.2")  # other IP: fine, node now full
    assert isinstance(await b1.hello(), Welcome)
    c1 = await gw.client("127.0.0.3")  # one over capacity: refused at once, before HELLO
    answer = await c1.recv()
    assert isinstance(answer, Error) and answer.code == ErrorCode.OVERLOADED
    assert await c1.recv_all() == []
    st = gw.status()
    assert st["connections"] == 3 and st["rejected"] == {"overloaded": 1, "ip_limit": 1}
    assert gw.agent() == "up 0% maxconn:0\n"
    await a1.close()
    wait_until(lambda: gw.status()["connections"] == 2, what="slot freed")
    a4 = await gw.client("127.0.0.1")
    assert isinstance(await a4.hello(), Welcome)


async def test_broadcast_chat_room(procs: Any) -> None:
    gw = start_gateway(procs, "g1", "--handler", "broadcast")
    clients = [await gw.client() for _ in range(3)]
    for i, c in enumerate(clients):
        assert isinstance(await c.hello(client_id=f"c{i}"), Welcome)
    await clients[0].send_data(b"hi all")
    assert await clients[1].recv() == Data(b"hi all")
    assert await clients[2].recv() == Data(b"hi all")
    await clients[0].ping(5)  # the sender gets its PONG, not its own message
    assert await clients[0].recv() == Pong(5)


async def test_status_metrics_and_agent_match_connection_count(procs: Any) -> None:
    gw = start_gateway(procs, "g1", "--capacity", "100", "--advertise", "gw.example:9", agent=True)
    clients = [await gw.client() for _ in range(4)]
    for c in clients:
        assert isinstance(await c.hello(), Welcome)
    await clients[0].close()
    wait_until(lambda: gw.status()["connections"] == 3, what="3 connections")
    st = gw.status()
    assert {k: st[k] for k in ("id", "state", "capacity", "address", "accepted", "workers")} == {
        "id": "g1",
        "state": "serving",
        "capacity": 100,
        "address": "gw.example:9",
        "accepted": 4,
        "workers": 1,
    }
    assert 0.0 <= st["cpu"] <= 1.0 and st["uptime_s"] > 0 and st["version"]
    text = gw.metrics()
    assert 'tcpdispatch_gateway_connections{gateway="g1"} 3.0' in text
    assert 'tcpdispatch_gateway_accepted_total{gateway="g1"} 4.0' in text
    assert gw.agent() == "up 97% maxconn:97\n"


async def test_user_handler_class(procs: Any, tmp_path: Path) -> None:
    (tmp_path / "shout_handler.py").write_text(
        "from tcpdispatch.gateway import Handler\n"
        "class Shout(Handler):\n"
        "    def on_connect(self, session):\n"
        "        session.send(b'welcome ' + session.client_id.encode())\n"
        "    def on_message(self, session, payload):\n"
        "        self.hub.send(session.session_id, payload.upper())\n"
    )
    gw = start_gateway(
        procs, "g1", "--handler", "shout_handler:Shout", env={"PYTHONPATH": str(tmp_path)}
    )
    c = await gw.client()
    assert isinstance(await c.hello(client_id="zoe"), Welcome)
    assert await c.recv() == Data(b"welcome zoe")
    await c.send_data(b"quiet")
    assert await c.recv() == Data(b"QUIET")


async def test_protocol_violation_gets_error_code(procs: Any) -> None:
    gw = start_gateway(procs, "g1")
    c = await gw.client()
    await c.send_raw(b"\x00\x00\x00\x02\x07\x01")  # version 7
    frames = await c.recv_all()
    assert len(frames) == 1 and frames[0].code == ErrorCode.BAD_VERSION  # type: ignore[union-attr]
    await async_wait_until(lambda: gw.status()["connections"] == 0, what="closed")


def test_config_errors_exit_2(tmp_path: Path) -> None:
    import subprocess

    base = [
        *TCPDISPATCH,
        "gateway",
        "--id",
        "g1",
        "--listen",
        "127.0.0.1:1",
        "--status",
        "127.0.0.1:2",
    ]
    for extra, needle in (
        ([], "--secret-file"),
        (["--secret-file", str(tmp_path / "nope")], "nope"),
        (["--no-ticket", "--handler", "nosuch.module:X"], "--handler"),
        (["--no-ticket", "--capacity", "0"], "--capacity"),
        (["--no-ticket", "--id", "a/b"], "--id: may only contain printable ASCII"),
        (["--no-ticket", "--admin-token-file", str(tmp_path / "none")], "none"),
    ):
        r = subprocess.run(
            base + extra, check=False, capture_output=True, text=True, timeout=scaled(30)
        )
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (
            extra,
            r.stderr,
        )


async def test_push_heartbeats_and_failures_logged_once(procs: Any, tmp_path: Path) -> None:
    from aiohttp import web

    got: list[tuple[str, dict[str, Any]]] = []

    async def heartbeat(request: web.Request) -> web.Response:
        got.append((request.headers.get("Authorization", ""), await request.json()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/v1/heartbeat", heartbeat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    token = tmp_path / "push.token"
    token.write_text("push-token-1\n")
    try:
        gw = start_gateway(
            procs,
            "g1",
            "--report-to",
            f"http://127.0.0.1:{port}",
            "--report-token-file",
            str(token),
            "--report-interval",
            "0.1",
        )
        await async_wait_until(lambda: len(got) >= 3, what="three heartbeats")
        auth, body = got[-1]
        assert auth == "Bearer push-token-1"
        assert (
            body["id"] == "g1"
            and body["address"] == f"127.0.0.1:{gw.port}"
            and body["state"] == "serving"
        )
    finally:
        await runner.cleanup()
    # the dispatcher is gone: serving goes on, and the failure is logged once, not every 0.1 s
    c = await gw.client()
    assert isinstance(await c.hello(), Welcome)
    await async_wait_until(lambda: "heartbeat to" in gw.proc.output(), what="failure logged")
    await asyncio.sleep(1.0)
    assert gw.proc.output().count("heartbeat to") == 1
    assert gw.status()["connections"] == 1
