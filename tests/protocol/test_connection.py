"""Connection state machine: the full transition table for both roles, paired over a fake link."""

from __future__ import annotations

import itertools

import pytest

from tcpdispatch.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from tcpdispatch.protocol import (
    Bye,
    Connection,
    Data,
    Error,
    Frame,
    FrameDecoder,
    Hello,
    Opcode,
    Ping,
    Pong,
    Reconnect,
    Role,
    State,
    Welcome,
    encode,
)

C, S = Role.CLIENT, Role.SERVER
HS, AUTH, OPEN, DRAIN, CLOSED = (
    State.HANDSHAKE,
    State.AUTHENTICATING,
    State.OPEN,
    State.DRAINING,
    State.CLOSED,
)

SAMPLE: dict[Opcode, Frame] = {
    Opcode.HELLO: Hello("ticket", "c1"),
    Opcode.WELCOME: Welcome("s1", 10_000, 30_000),
    Opcode.PING: Ping(1),
    Opcode.PONG: Pong(1),
    Opcode.DATA: Data(b"x"),
    Opcode.RECONNECT: Reconnect(100, "drain"),
    Opcode.ERROR: Error(int(ErrorCode.INTERNAL), "boom"),
    Opcode.BYE: Bye(),
}

# The allowed moves, written out independently of protocol/states.py.
# (state, opcode) -> next state. Anything absent is forbidden.
_LIVE = (HS, AUTH, OPEN, DRAIN)
_CLOSE = {(st, op): CLOSED for st in _LIVE for op in (Opcode.ERROR, Opcode.BYE)}
EXPECTED = {
    (C, "send"): {
        (HS, Opcode.HELLO): AUTH,
        (OPEN, Opcode.PING): OPEN,
        (OPEN, Opcode.DATA): OPEN,
        (DRAIN, Opcode.PING): DRAIN,
        (DRAIN, Opcode.DATA): DRAIN,
        **_CLOSE,
    },
    (C, "recv"): {
        (AUTH, Opcode.WELCOME): OPEN,
        (OPEN, Opcode.PONG): OPEN,
        (OPEN, Opcode.DATA): OPEN,
        (OPEN, Opcode.RECONNECT): DRAIN,
        (DRAIN, Opcode.PONG): DRAIN,
        (DRAIN, Opcode.DATA): DRAIN,
        **_CLOSE,
    },
    (S, "send"): {
        (AUTH, Opcode.WELCOME): OPEN,
        (OPEN, Opcode.PONG): OPEN,
        (OPEN, Opcode.DATA): OPEN,
        (OPEN, Opcode.RECONNECT): DRAIN,
        (DRAIN, Opcode.PONG): DRAIN,
        (DRAIN, Opcode.DATA): DRAIN,
        **_CLOSE,
    },
    (S, "recv"): {
        (HS, Opcode.HELLO): AUTH,
        (OPEN, Opcode.PING): OPEN,
        (OPEN, Opcode.DATA): OPEN,
        (DRAIN, Opcode.PING): DRAIN,
        (DRAIN, Opcode.DATA): DRAIN,
        **_CLOSE,
    },
}


class Link:
    """Two connections joined by an in-memory 'wire'."""

    def __init__(self) -> None:
        self.client = Connection(C)
        self.server = Connection(S)

    def deliver(self, src: Connection, dst: Connection) -> list[Frame]:
        return dst.receive_data(src.data_to_send())

    def c2s(self) -> list[Frame]:
        return self.deliver(self.client, self.server)

    def s2c(self) -> list[Frame]:
        return self.deliver(self.server, self.client)


def link_in(state: State) -> Link:
    """A client/server pair both in ``state``, reached through real frames."""
    link = Link()
    if state is HS:
        return link
    link.client.send(SAMPLE[Opcode.HELLO])
    assert link.c2s() == [SAMPLE[Opcode.HELLO]]
    if state is AUTH:
        return link
    link.server.send(SAMPLE[Opcode.WELCOME])
    assert link.s2c() == [SAMPLE[Opcode.WELCOME]]
    if state is OPEN:
        return link
    if state is DRAIN:
        link.server.send(SAMPLE[Opcode.RECONNECT])
        assert link.s2c() == [SAMPLE[Opcode.RECONNECT]]
        return link
    link.client.send(Bye())
    assert link.c2s() == [Bye()]
    return link


def _end(link: Link, role: Role) -> Connection:
    return link.client if role is C else link.server


CASES = list(itertools.product((C, S), list(State), list(Opcode)))
CASE_IDS = [f"{r.value}-{s.value}-{o.name}" for r, s, o in CASES]


@pytest.mark.parametrize(("role", "state", "opcode"), CASES, ids=CASE_IDS)
def test_send_table(role: Role, state: State, opcode: Opcode) -> None:
    link = link_in(state)
    conn = _end(link, role)
    assert conn.state is state
    expected = EXPECTED[(role, "send")].get((state, opcode))
    if expected is None:
        with pytest.raises(LocalProtocolError) as info:
            conn.send(SAMPLE[opcode])
        assert info.value.code is ErrorCode.UNEXPECTED_FRAME
        assert conn.state is state  # a refused send changes nothing
        assert conn.data_to_send() == b""
    else:
        conn.send(SAMPLE[opcode])
        assert conn.state is expected
        assert conn.data_to_send() == encode(SAMPLE[opcode])


@pytest.mark.parametrize(("role", "state", "opcode"), CASES, ids=CASE_IDS)
def test_receive_table(role: Role, state: State, opcode: Opcode) -> None:
    link = link_in(state)
    conn = _end(link, role)
    wire = encode(SAMPLE[opcode])
    expected = EXPECTED[(role, "recv")].get((state, opcode))
    if state is CLOSED:
        assert conn.receive_data(wire) == []  # ignored, whatever it is
        assert conn.data_to_send() == b""
    elif expected is None:
        with pytest.raises(RemoteProtocolError) as info:
            conn.receive_data(wire)
        assert info.value.code is ErrorCode.UNEXPECTED_FRAME
        assert conn.state is CLOSED
        queued = FrameDecoder().feed(conn.data_to_send())
        assert len(queued) == 1 and isinstance(queued[0], Error)
        assert queued[0].code == ErrorCode.UNEXPECTED_FRAME
    else:
        assert conn.receive_data(wire) == [SAMPLE[opcode]]
        assert conn.state is expected
        auto = conn.data_to_send()
        if role is S and opcode is Opcode.PING:
            assert auto == encode(Pong(1))
        else:
            assert auto == b""


def test_full_session_over_fake_link() -> None:
    link = Link()
    link.client.send(Hello("t", "alice"))
    assert link.c2s() == [Hello("t", "alice")]
    link.server.send(Welcome("sess", 1000, 3000))
    assert link.s2c() == [Welcome("sess", 1000, 3000)]
    link.client.send_data(b"hello")
    link.client.send(Ping(42))
    assert link.c2s() == [Data(b"hello"), Ping(42)]
    link.server.send_data(b"hello")
    assert link.s2c() == [Pong(42), Data(b"hello")]  # auto-PONG was queued first
    link.server.send(Reconnect(2500, "draining"))
    assert link.s2c() == [Reconnect(2500, "draining")]
    assert link.client.state is DRAIN and link.server.state is DRAIN
    link.client.send_data(b"still flowing")
    assert link.c2s() == [Data(b"still flowing")]
    link.client.send(Bye())
    assert link.c2s() == [Bye()]
    assert link.client.state is CLOSED and link.server.state is CLOSED


def test_data_before_welcome_is_unexpected_and_queues_error() -> None:
    server = Connection(S)
    server.receive_data(encode(Hello("t", "c")))
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(encode(Data(b"too early")))
    assert info.value.code is ErrorCode.UNEXPECTED_FRAME
    assert server.state is CLOSED
    [err] = FrameDecoder().feed(server.data_to_send())
    assert isinstance(err, Error) and err.code == ErrorCode.UNEXPECTED_FRAME
    assert "DATA" in err.reason


def test_client_rejects_data_before_welcome() -> None:
    client = Connection(C)
    client.send(Hello("t", "c"))
    client.data_to_send()
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(encode(Data(b"x")))
    assert info.value.code is ErrorCode.UNEXPECTED_FRAME
    [err] = FrameDecoder().feed(client.data_to_send())
    assert isinstance(err, Error) and err.code == ErrorCode.UNEXPECTED_FRAME


def test_server_answers_every_ping_in_order() -> None:
    link = link_in(OPEN)
    wire = b"".join(encode(Ping(n)) for n in (1, 2, 3))
    assert link.server.receive_data(wire) == [Ping(1), Ping(2), Ping(3)]
    assert link.server.data_to_send() == b"".join(encode(Pong(n)) for n in (1, 2, 3))


def test_client_does_not_auto_pong() -> None:
    link = link_in(OPEN)
    with pytest.raises(RemoteProtocolError):
        link.client.receive_data(encode(Ping(5)))  # the gateway never pings


def test_reconnect_moves_to_draining() -> None:
    link = link_in(OPEN)
    link.server.send(Reconnect(1234, "bye soon"))
    assert link.server.state is DRAIN
    assert link.s2c() == [Reconnect(1234, "bye soon")]
    assert link.client.state is DRAIN


@pytest.mark.parametrize("state", [HS, AUTH, OPEN, DRAIN])
@pytest.mark.parametrize("closing", [Bye(), Error(304, "draining")])
def test_bye_and_error_close_from_any_live_state(state: State, closing: Frame) -> None:
    link = link_in(state)
    if state is not HS:
        link.server.send(closing)
        assert link.s2c() == [closing]
        assert link.server.state is CLOSED and link.client.state is CLOSED
    else:
        # in HANDSHAKE the gateway may refuse (e.g. OVERLOADED) before HELLO
        link.server.send(closing)
        assert link.client.receive_data(link.server.data_to_send()) == [closing]
        assert link.client.state is CLOSED


def test_bytes_after_bye_are_ignored_in_the_same_chunk() -> None:
    link = link_in(OPEN)
    garbage = b"\xff" * 50
    assert link.server.receive_data(encode(Bye()) + encode(Data(b"late")) + garbage) == [Bye()]
    assert link.server.state is CLOSED
    assert link.server.data_to_send() == b""


def test_data_after_closed_is_ignored() -> None:
    link = link_in(CLOSED)
    assert link.server.receive_data(encode(Data(b"x"))) == []
    assert link.server.receive_data(b"\x00garbage") == []
    link.server.receive_eof()
    assert link.server.state is CLOSED and link.server.data_to_send() == b""


def test_after_remote_error_everything_is_ignored() -> None:
    server = Connection(S)
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"\x00\x00\x00\x02\x09\x01")
    server.data_to_send()
    assert server.receive_data(encode(Hello("t", "c"))) == []
    assert server.data_to_send() == b""


@pytest.mark.parametrize("state", [OPEN, DRAIN])
def test_local_protocol_error_when_sending_out_of_order(state: State) -> None:
    link = link_in(state)
    with pytest.raises(LocalProtocolError):
        link.client.send(Hello("again", "c"))
    with pytest.raises(LocalProtocolError):
        link.server.send(Welcome("again", 1, 1))


def test_send_data_only_when_open_or_draining() -> None:
    for state in (HS, AUTH, CLOSED):
        link = link_in(state)
        for conn in (link.client, link.server):
            with pytest.raises(LocalProtocolError):
                conn.send_data(b"x")
    for state in (OPEN, DRAIN):
        link = link_in(state)
        link.client.send_data(b"x")
        assert link.c2s() == [Data(b"x")]


def test_fail_queues_error_from_any_state_once() -> None:
    for state in (HS, AUTH, OPEN, DRAIN):
        conn = _end(link_in(state), S)
        conn.data_to_send()
        conn.fail(ErrorCode.OVERLOADED, "full")
        assert conn.state is CLOSED
        assert FrameDecoder().feed(conn.data_to_send()) == [Error(300, "full")]
        conn.fail(ErrorCode.OVERLOADED, "again")
        assert conn.data_to_send() == b""


def test_receive_eof_clean_and_truncated() -> None:
    link = link_in(OPEN)
    link.server.receive_eof()
    assert link.server.state is CLOSED and link.server.data_to_send() == b""

    link = link_in(OPEN)
    link.server.receive_data(encode(Data(b"abc"))[:4])
    with pytest.raises(RemoteProtocolError) as info:
        link.server.receive_eof()
    assert info.value.code is ErrorCode.TRUNCATED_FRAME
    assert link.server.state is CLOSED
    [err] = FrameDecoder().feed(link.server.data_to_send())
    assert isinstance(err, Error) and err.code == ErrorCode.TRUNCATED_FRAME


def test_frame_too_large_is_enforced_per_connection() -> None:
    server = Connection(S, max_frame_size=64)
    server.receive_data(encode(Hello("t", "c")))
    server.send(Welcome("s", 1, 1))
    server.data_to_send()
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(encode(Data(b"x" * 100)))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_first_violation_wins_whatever_the_chunking() -> None:
    # UNEXPECTED DATA followed by a frame with a bad version: DATA is judged first.
    stream = encode(Data(b"early")) + b"\x00\x00\x00\x02\x07\x08"
    for chunk in (1, 3, len(stream)):
        server = Connection(S)
        with pytest.raises(RemoteProtocolError) as info:
            for i in range(0, len(stream), chunk):
                server.receive_data(stream[i : i + chunk])
        assert info.value.code is ErrorCode.UNEXPECTED_FRAME, chunk
