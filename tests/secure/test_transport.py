"""Noise transport messages: framing, chunking, tampering, and the library's own bytes."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from noise.connection import NoiseConnection

from tcpdispatch.errors import ErrorCode, RemoteProtocolError
from tcpdispatch.secure.transport import MAX_PLAINTEXT, SecureTransport


def pair() -> tuple[SecureTransport, SecureTransport]:
    a, b = os.urandom(32), os.urandom(32)
    return SecureTransport(a, b), SecureTransport(b, a)


def test_same_bytes_as_the_library() -> None:
    """After a handshake run purely by ``noiseprotocol``, our transport built from the split
    keys produces and accepts exactly the library's transport messages."""
    i = NoiseConnection.from_name(b"Noise_NN_25519_ChaChaPoly_SHA256")
    r = NoiseConnection.from_name(b"Noise_NN_25519_ChaChaPoly_SHA256")
    i.set_as_initiator()
    r.set_as_responder()
    i.start_handshake()
    r.start_handshake()
    r.read_message(i.write_message())
    i.read_message(r.write_message())
    ours = SecureTransport(
        i.noise_protocol.cipher_state_encrypt.k, i.noise_protocol.cipher_state_decrypt.k
    )
    for n in range(3):
        msg = ours.encrypt(b"m%d" % n)
        assert int.from_bytes(msg[:2], "big") == len(msg) - 2
        assert r.decrypt(msg[2:]) == b"m%d" % n
        c = r.encrypt(b"r%d" % n)
        assert ours.decrypt(len(c).to_bytes(2, "big") + c) == b"r%d" % n


@given(st.binary(max_size=3000), st.integers(1, 50))
def test_any_chunking_gives_back_the_stream(payload: bytes, step: int) -> None:
    tx, rx = pair()
    wire = tx.encrypt(payload) + tx.encrypt(b"tail")
    got = b"".join(rx.decrypt(wire[i : i + step]) for i in range(0, len(wire), step))
    assert got == payload + b"tail" and rx.buffered == 0


def test_large_writes_are_split_into_maximum_messages() -> None:
    tx, rx = pair()
    data = os.urandom(MAX_PLAINTEXT * 2 + 5)
    wire = tx.encrypt(data)
    assert wire[:2] == b"\xff\xff" and len(wire) == len(data) + 3 * (2 + 16)
    assert rx.decrypt(wire) == data


@pytest.mark.parametrize("mutate", ["flip", "replay", "short"])
def test_tampering_fails_and_the_transport_stays_failed(mutate: str) -> None:
    tx, rx = pair()
    first = tx.encrypt(b"hello")
    if mutate == "flip":
        bad = first[:-1] + bytes((first[-1] ^ 1,))
    elif mutate == "replay":
        rx.decrypt(first)
        bad = first
    else:
        bad = b"\x00\x05abcde"
    with pytest.raises(RemoteProtocolError) as err:
        rx.decrypt(bad)
    assert err.value.code == ErrorCode.DECRYPT_FAILED
    with pytest.raises(RemoteProtocolError):
        rx.decrypt(tx.encrypt(b"next"))


def test_idle_state_is_small() -> None:
    tx, _ = pair()
    assert not hasattr(tx, "__dict__")
