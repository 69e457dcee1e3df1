"""The gateway adapter without sockets: fake transports, manual sweeps, injected clock."""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Any, ClassVar

import pytest
from helpers import async_wait_until, scaled

from tcpdispatch.errors import ErrorCode
from tcpdispatch.gateway.config import GatewayConfig
from tcpdispatch.gateway.handlers import Handler
from tcpdispatch.gateway.server import Gateway, GatewayConnection
from tcpdispatch.gateway.shm import NodeCounters
from tcpdispatch.protocol import (
    Bye,
    Connection,
    Data,
    Error,
    Frame,
    Hello,
    Ping,
    Pong,
    Reconnect,
    Role,
    Welcome,
)
from tcpdispatch.tickets import TicketSigner

SECRET = b"unit-secret-0123456789abcdef"


class FakeTransport:
    def __init__(self, proto: GatewayConnection, ip: str) -> None:
        self.proto, self.ip = proto, ip
        self.client = Connection(Role.CLIENT)
        self.frames: list[Frame] = []
        self.closed = self.aborted = self.paused = False
        self.buffered = 0

    def get_extra_info(self, name: str) -> Any:
        return (self.ip, 40000) if name == "peername" else None

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.frames += self.client.receive_data(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.proto.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    # client side
    def send(self, frame: Frame) -> None:
        self.client.send(frame)
        self.proto.data_received(self.client.data_to_send())

    def take(self) -> list[Frame]:
        out, self.frames = self.frames, []
        return out


def make(gw_kwargs: dict[str, Any] | None = None, **cfg: Any) -> Gateway:
    base: dict[str, Any] = {"id": "g1", "listen": ("127.0.0.1", 1), "status": ("127.0.0.1", 2)}
    base.update(cfg)
    return Gateway(
        GatewayConfig(**base), NodeCounters(1), rng=random.Random(1), **(gw_kwargs or {})
    )


def connect(gw: Gateway, ip: str = "10.0.0.1") -> FakeTransport:
    p = GatewayConnection(gw)
    t = FakeTransport(p, ip)
    p.connection_made(t)
    return t


def opened(gw: Gateway, client_id: str = "c1", ip: str = "10.0.0.1") -> FakeTransport:
    t = connect(gw, ip)
    t.send(Hello("", client_id))
    [w] = t.take()
    assert isinstance(w, Welcome)
    return t


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_connection_has_no_dict_and_stays_small() -> None:
    gw = make()
    p = GatewayConnection(gw)
    assert not hasattr(p, "__dict__")
    assert sys.getsizeof(p) < 150


async def test_welcome_echo_ping_and_session_lookup() -> None:
    gw = make(heartbeat=2.0, idle_timeout=7.0)
    t = connect(gw)
    t.send(Hello("", "alice"))
    [w] = t.take()
    assert w == Welcome("g1.0.1", 2000, 7000)
    assert gw.get("g1.0.1") is t.proto and gw.get("g2.0.1") is None and gw.get("g1.0.zz") is None
    t.send(Data(b"x"))
    t.send(Ping(3))
    assert t.take() == [Data(b"x"), Pong(3)]
    assert t.proto.client_id == "alice" and t.proto.peer == "10.0.0.1"
    assert gw.counters.snapshot().accepted == 1


@pytest.mark.parametrize(
    "signer_ids,client,code",
    [
        (["g1"], "c1", None),
        (["g2"], "c1", ErrorCode.TICKET_WRONG_GATEWAY),
        (["g1"], "c2", ErrorCode.TICKET_WRONG_CLIENT),
    ],
)
async def test_ticket_checks(signer_ids: list[str], client: str, code: ErrorCode | None) -> None:
    gw = make(secrets=(SECRET,))
    t = connect(gw)
    t.send(Hello(TicketSigner(SECRET).issue(signer_ids, "c1"), client))
    [answer] = t.take()
    if code is None:
        assert isinstance(answer, Welcome)
    else:
        assert isinstance(answer, Error) and answer.code == code and t.closed
        await settle()
        assert gw.counters.snapshot().rejected == {code.slug: 1} and not gw.conns


async def test_refusals_at_accept_do_not_count() -> None:
    gw = make(capacity=2, per_ip_limit=1)
    opened(gw, ip="10.0.0.1")
    same_ip = connect(gw, ip="10.0.0.1")
    assert [f.code for f in same_ip.frames] == [ErrorCode.IP_LIMIT] and same_ip.closed  # type: ignore[union-attr]
    opened(gw, ip="10.0.0.2")
    full = connect(gw, ip="10.0.0.3")
    assert [f.code for f in full.frames] == [ErrorCode.OVERLOADED]  # type: ignore[union-attr]
    await settle()
    snap = gw.counters.snapshot()
    assert snap.connections == 2 and snap.rejected == {"ip_limit": 1, "overloaded": 1}


async def test_sweep_closes_late_handshakes_and_idle_sessions() -> None:
    gw = make(handshake_timeout=0.5, idle_timeout=1.0)
    assert gw.sweep_interval == pytest.approx(0.1)
    mute = connect(gw)
    busy, quiet = opened(gw), opened(gw)
    for _ in range(5):  # 0.5 s: the handshake deadline is reached but not passed
        gw.sweep()
        busy.send(Ping(1))
    assert not mute.frames
    gw.sweep()
    assert [f.code for f in mute.take()] == [ErrorCode.HANDSHAKE_TIMEOUT]  # type: ignore[union-attr]
    for _ in range(5):
        gw.sweep()
        busy.send(Ping(1))
    assert [f.code for f in quiet.take()] == [ErrorCode.IDLE_TIMEOUT]  # type: ignore[union-attr]
    assert not busy.closed and quiet.closed
    await settle()
    assert list(gw.conns.values()) == [busy.proto]


async def test_handshake_deadline_counts_from_accept_whatever_arrives() -> None:
    """A client trickling HELLO one byte per sweep is cut at the deadline, like a silent one."""
    gw = make(handshake_timeout=0.5, capacity=2)
    hello = Connection(Role.CLIENT)
    hello.send(Hello("", "x" * 200))
    raw = hello.data_to_send()
    tricklers = [connect(gw), connect(gw)]
    refused = connect(gw)  # capacity 2: the tricklers hold every slot
    assert [f.code for f in refused.take()] == [ErrorCode.OVERLOADED]  # type: ignore[union-attr]
    for i in range(5):  # 0.5 s of sweeps, a byte each: deadline reached, not passed
        gw.sweep()
        for t in tricklers:
            t.proto.data_received(raw[i : i + 1])
    assert not any(t.frames for t in tricklers)
    gw.sweep()
    for t in tricklers:
        assert [f.code for f in t.take()] == [ErrorCode.HANDSHAKE_TIMEOUT] and t.closed  # type: ignore[union-attr]
    await settle()
    assert opened(gw, "valid").proto.is_open  # the slots are free again


async def test_idle_deadline_counts_from_welcome() -> None:
    """A HELLO that took most of the handshake window still gets a full idle timeout."""
    gw = make(handshake_timeout=0.5, idle_timeout=0.5)
    t = connect(gw)
    for _ in range(4):
        gw.sweep()
    t.send(Hello("", "slow"))
    assert isinstance(t.take()[0], Welcome)
    for _ in range(5):
        gw.sweep()
    assert not t.frames
    gw.sweep()
    assert [f.code for f in t.take()] == [ErrorCode.IDLE_TIMEOUT]  # type: ignore[union-attr]


async def test_protocol_error_and_bye() -> None:
    gw = make()
    t = opened(gw)
    t.proto.data_received(b"\x00\x00\x00\x02\x01\x63")  # opcode 99
    assert [f.code for f in t.take()] == [ErrorCode.UNKNOWN_OPCODE] and t.closed  # type: ignore[union-attr]
    t2 = opened(gw)
    t2.send(Bye())
    assert t2.closed
    await settle()
    assert not gw.conns


class Recorder(Handler):
    events: ClassVar[list[tuple[str, str]]] = []

    def on_connect(self, session: Any) -> None:
        self.events.append(("connect", session.session_id))

    def on_message(self, session: Any, payload: bytes) -> None:
        if payload == b"boom":
            raise RuntimeError("handler bug")
        self.hub.broadcast(payload, exclude=session)

    def on_close(self, session: Any, reason: str) -> None:
        self.events.append(("close", session.session_id))


async def test_handler_callbacks_broadcast_and_handler_errors() -> None:
    gw = make(handler=f"{__name__}:Recorder")
    a, b, c = opened(gw, "a"), opened(gw, "b"), opened(gw, "c")
    a.send(Data(b"hi"))
    assert a.take() == [] and b.take() == [Data(b"hi")] and c.take() == [Data(b"hi")]
    b.send(Data(b"boom"))  # a failing handler ends that session only
    assert [f.code for f in b.take()] == [ErrorCode.INTERNAL]  # type: ignore[union-attr]
    await settle()
    assert ("close", b.proto.session_id) in Recorder.events
    assert sorted(s.client_id for s in gw.sessions()) == ["a", "c"]


async def test_slow_reader_is_dropped() -> None:
    gw = make()
    t = opened(gw)
    t.buffered = gw.max_backlog + 1
    assert t.proto.send(b"x") is True
    assert t.aborted


async def test_drain_spreads_reconnects_then_stops() -> None:
    gw = make(drain_window=0.5)
    clients = [opened(gw, f"c{i}") for i in range(5)]
    late_handshake = connect(gw)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    gw.drain()
    assert gw.draining and gw.counters.draining
    times: dict[int, float] = {}
    while len(times) < 5 and loop.time() - t0 < scaled(2):
        for i, t in enumerate(clients):
            if i not in times and t.frames:
                times[i] = loop.time() - t0
        await asyncio.sleep(0.005)
    assert sorted(times) == list(range(5))
    spread = sorted(times.values())
    # sent at ~0, 0.09, ..., 0.36 s (first 90% of the window); each upper bound stretches on slow
    # machines
    assert spread[0] < scaled(0.05) and 0.3 < spread[-1] < scaled(0.5), spread
    assert all(isinstance(t.frames[0], Reconnect) and t.frames[0].delay_ms < 250 for t in clients)
    late_handshake.send(Hello("", "late"))
    assert [f.code for f in late_handshake.take()] == [ErrorCode.DRAINING]  # type: ignore[union-attr]
    for t in clients[:4]:
        t.close()  # four leave; the last stays until the window ends
    await asyncio.wait_for(gw.wait_closed(), scaled(2))
    assert isinstance(clients[4].frames[-1], Bye) and clients[4].closed
    assert loop.time() - t0 >= 0.45


async def test_drain_exits_early_when_empty() -> None:
    gw = make(drain_window=30)
    t = opened(gw)
    gw.drain()
    await async_wait_until(lambda: t.frames, timeout=1, interval=0.005, what="RECONNECT sent")
    assert isinstance(t.take()[0], Reconnect)
    t.close()
    await asyncio.wait_for(gw.wait_closed(), scaled(1))
