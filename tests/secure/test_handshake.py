"""The encrypted handshake without sockets: both halves, byte at a time, against the library."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from noise.connection import Keypair, NoiseConnection

from tcpdispatch.errors import ErrorCode, RemoteProtocolError, SecureHandshakeError
from tcpdispatch.protocol import Error, Hello, encode
from tcpdispatch.secure.handshake import (
    FULL_PROTOCOL,
    MODE_FULL,
    PROLOGUE,
    ClientHandshake,
    HandshakeDone,
    ServerHandshake,
    ServerSecurity,
)
from tcpdispatch.secure.keys import StaticKey
from tcpdispatch.secure.resumption import ResumptionGrant

HELLO = encode(Hello("v1.ticket", "alice"))
KEY = StaticKey.generate()


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def handshake(sec: ServerSecurity, client: ClientHandshake) -> tuple[HandshakeDone, HandshakeDone]:
    server = ServerHandshake(sec)
    msg = client.first_message()
    done = None
    for i in range(len(msg)):  # byte at a time: nothing is decided before the message is whole
        done = server.receive(msg[i : i + 1])
        assert (done is None) == (i < len(msg) - 1)
    assert done is not None
    answer = done.reply + done.transport.encrypt(b"WELCOME")
    for i in range(len(answer)):
        got = client.receive(answer[i : i + 1])
        if got is not None:  # whole answer in: the rest belongs to the transport
            assert i == len(done.reply) - 1 and not got.plaintext
            rest = got.transport.decrypt(answer[i + 1 :])
            return done, HandshakeDone(got.transport, b"", rest, got.resumed, got.grant)
    raise AssertionError("the client never completed")


def test_full_handshake_carries_hello_and_agrees_on_keys() -> None:
    sec = ServerSecurity((KEY,), clock=Clock())
    client = ClientHandshake(KEY.public, HELLO, clock=Clock(0.0))
    server, mine = handshake(sec, client)
    assert server.plaintext == HELLO and not server.resumed
    assert mine.plaintext == b"WELCOME" and not mine.resumed
    assert mine.grant is not None and mine.grant.server_key == KEY.public
    assert mine.grant.expires_at == pytest.approx(3600 * 0.9)
    assert server.transport.decrypt(mine.transport.encrypt(b"x" * 70_000)) == b"x" * 70_000


def test_hello_is_not_on_the_wire_in_clear() -> None:
    msg = ClientHandshake(KEY.public, HELLO).first_message()
    assert b"v1.ticket" not in msg and b"alice" not in msg
    assert msg[0] == MODE_FULL and msg[1:9] == KEY.id


def test_interop_with_the_library_as_initiator_and_as_responder() -> None:
    """Our halves talk to plain ``noiseprotocol`` connections (default backend): the wire
    is the named Noise pattern with our prologue, nothing else."""
    sec = ServerSecurity((KEY,))
    head = bytes((MODE_FULL,)) + KEY.id
    lib = NoiseConnection.from_name(FULL_PROTOCOL)
    lib.set_as_initiator()
    lib.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, KEY.public.raw)
    lib.set_prologue(PROLOGUE + head)
    lib.start_handshake()
    m1 = bytes(lib.write_message(HELLO))
    done = ServerHandshake(sec).receive(head + len(m1).to_bytes(2, "big") + m1)
    assert done is not None and done.plaintext == HELLO
    lib.read_message(done.reply[3:])
    assert lib.decrypt(done.transport.encrypt(b"hi")[2:]) == b"hi"
    assert done.transport.decrypt(len(c := lib.encrypt(b"yo")).to_bytes(2, "big") + c) == b"yo"

    client = ClientHandshake(KEY.public, HELLO)
    first = client.first_message()
    lib = NoiseConnection.from_name(FULL_PROTOCOL)
    lib.set_as_responder()
    lib.set_keypair_from_private_bytes(Keypair.STATIC, KEY.private)
    lib.set_prologue(PROLOGUE + first[:9])
    lib.start_handshake()
    assert bytes(lib.read_message(first[11:])) == HELLO
    m2 = bytes(lib.write_message(b""))
    got = client.receive(bytes((MODE_FULL,)) + len(m2).to_bytes(2, "big") + m2)
    assert got is not None and got.grant is None
    assert lib.decrypt(got.transport.encrypt(b"hi")[2:]) == b"hi"


def test_wrong_pinned_key_is_refused_by_the_gateway_naming_its_key() -> None:
    other = StaticKey.generate()
    with pytest.raises(RemoteProtocolError) as err:
        ServerHandshake(ServerSecurity((KEY,))).receive(
            ClientHandshake(other.public, HELLO).first_message()
        )
    assert err.value.code == ErrorCode.UNKNOWN_SERVER_KEY
    assert KEY.public.text in err.value.reason and other.id.hex() in err.value.reason
    # ... and the client reports the refusal it gets in clear.
    client = ClientHandshake(other.public, HELLO)
    client.first_message()
    with pytest.raises(SecureHandshakeError) as refused:
        client.receive(encode(Error(int(err.value.code), err.value.reason)))
    assert refused.value.code == ErrorCode.UNKNOWN_SERVER_KEY and not refused.value.authenticated


def test_impostor_answering_with_its_own_key_is_refused() -> None:
    """A man-in-the-middle holding another key: it cannot read the client's message, and
    whatever it answers (here: its own honest handshake under its key) fails."""
    impostor = StaticKey.generate()
    client = ClientHandshake(KEY.public, HELLO)
    first = client.first_message()
    forged_first = bytes((MODE_FULL,)) + impostor.id + first[9:]
    with pytest.raises(RemoteProtocolError) as err:  # it cannot decrypt what was sent to KEY
        ServerHandshake(ServerSecurity((impostor,))).receive(forged_first)
    assert err.value.code == ErrorCode.HANDSHAKE_FAILED
    fake = ClientHandshake(impostor.public, HELLO)  # so it runs its own handshake instead
    done = ServerHandshake(ServerSecurity((impostor,))).receive(fake.first_message())
    assert done is not None
    with pytest.raises(SecureHandshakeError) as refused:
        client.receive(done.reply)
    assert refused.value.code == ErrorCode.HANDSHAKE_FAILED
    assert "did not prove" in refused.value.reason and KEY.public.text in refused.value.reason


@pytest.mark.parametrize("where", [1, 5, 12, 40, -1])
def test_any_altered_byte_of_the_first_message_fails(where: int) -> None:
    msg = bytearray(ClientHandshake(KEY.public, HELLO).first_message())
    msg[where] ^= 0x01
    with pytest.raises(RemoteProtocolError) as err:
        ServerHandshake(ServerSecurity((KEY,))).receive(bytes(msg))
    assert err.value.code in (ErrorCode.HANDSHAKE_FAILED, ErrorCode.UNKNOWN_SERVER_KEY)


def test_oversized_or_unknown_handshake_is_refused_before_buffering_it() -> None:
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        ServerHandshake(ServerSecurity((KEY,))).receive(bytes((MODE_FULL,)) + KEY.id + b"\xff\xff")
    with pytest.raises(RemoteProtocolError, match="mode"):
        ServerHandshake(ServerSecurity((KEY,))).receive(b"\xe9")


def test_resumption_then_a_fresh_grant_each_time() -> None:
    clock = Clock()
    sec = ServerSecurity((KEY,), clock=clock)
    _, first = handshake(sec, ClientHandshake(KEY.public, HELLO))
    assert first.grant is not None
    resumed_srv, resumed = handshake(sec, ClientHandshake(KEY.public, HELLO, first.grant))
    assert resumed_srv.resumed and resumed.resumed and resumed_srv.plaintext == HELLO
    assert resumed.grant is not None and resumed.grant.id != first.grant.id
    msg = ClientHandshake(KEY.public, HELLO, first.grant).first_message()
    assert first.grant.id in msg and b"alice" not in msg


def _refused(sec: ServerSecurity, grant: ResumptionGrant) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as err:
        ServerHandshake(sec).receive(ClientHandshake(KEY.public, HELLO, grant).first_message())
    assert err.value.code == ErrorCode.RESUME_REJECTED
    return err.value


def test_expired_forged_and_foreign_grants_are_rejected() -> None:
    clock = Clock()
    sec = ServerSecurity((KEY,), resume_lifetime=60, clock=clock)
    _, done = handshake(sec, ClientHandshake(KEY.public, HELLO))
    grant = done.grant
    assert grant is not None
    clock.now += 61
    assert "expired" in _refused(sec, grant).reason
    clock.now -= 61
    forged = ResumptionGrant(grant.server_key, grant.id, bytes(32), grant.expires_at)
    assert "did not authenticate" in _refused(sec, forged).reason
    rotated = ServerSecurity((StaticKey.generate(),), clock=clock)  # the key was replaced
    assert "does not hold" in _refused(rotated, grant).reason
    assert (
        "wrong length"
        in _refused(sec, ResumptionGrant(grant.server_key, b"x", bytes(32), 0)).reason
    )


def test_no_grant_when_resumption_is_off_and_rotation_accepts_old_key() -> None:
    old, new = KEY, StaticKey.generate()
    sec = ServerSecurity((new, old), resume_lifetime=0)
    _, done = handshake(sec, ClientHandshake(old.public, HELLO))  # pinned to the old key
    assert done.grant is None
    sec = ServerSecurity((new, old))
    _, done = handshake(sec, ClientHandshake(old.public, HELLO))
    assert done.grant is not None and done.grant.id[:8] == new.id  # grants follow the rotation
    server, resumed = handshake(sec, ClientHandshake(old.public, HELLO, done.grant))
    assert server.resumed and resumed.resumed


def test_plain_answer_to_an_encrypted_hello_is_refused() -> None:
    client = ClientHandshake(KEY.public, HELLO)
    client.first_message()
    with pytest.raises(SecureHandshakeError, match="in clear with WELCOME"):
        client.receive(bytes.fromhex("0000000d01020000271000007530027331"))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"", b"\xe1", b"\xe2", b"\xe2\x1c"]))
def test_garbage_only_ever_raises_the_protocol_error(data: bytes, prefix: bytes) -> None:
    """Whatever a client sends, the gateway's handshake either waits for more, completes,
    or raises RemoteProtocolError (which the gateway turns into a plain ERROR)."""
    server = ServerHandshake(ServerSecurity((KEY,)))
    try:
        for i in range(0, len(prefix + data), 7):
            server.receive((prefix + data)[i : i + 7])
    except RemoteProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_answers_only_ever_raise_the_handshake_error(data: bytes) -> None:
    client = ClientHandshake(KEY.public, HELLO)
    client.first_message()
    try:
        client.receive(data)
    except SecureHandshakeError:
        pass


def test_low_order_ephemeral_key_fails_the_handshake() -> None:
    """An all-zero ``e`` makes the X25519 result all zeros; libsodium refuses it."""
    msg = bytearray(ClientHandshake(KEY.public, HELLO).first_message())
    msg[11:43] = bytes(32)
    with pytest.raises(RemoteProtocolError) as err:
        ServerHandshake(ServerSecurity((KEY,))).receive(bytes(msg))
    assert err.value.code == ErrorCode.HANDSHAKE_FAILED
