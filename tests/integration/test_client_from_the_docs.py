"""An encrypted client written from docs/protocol.md alone (sections 1, 2 and 9): it uses
only ``noiseprotocol``, ``hashlib``, ``struct`` and a socket — nothing of tcpdispatch but
the key file writer — against a real gateway process."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import start_gateway
from helpers import Proc, scaled
from noise.connection import Keypair, NoiseConnection

from tcpdispatch.secure.keys import StaticKey, write_key_file

pytestmark = pytest.mark.integration


def frame(op: int, payload: bytes) -> bytes:  # section 1
    return struct.pack("!IBB", len(payload) + 2, 1, op) + payload


def hello(ticket: str, client_id: str) -> bytes:  # section 2
    t, c = ticket.encode(), client_id.encode()
    return frame(1, struct.pack("!H", len(t)) + t + struct.pack("!H", len(c)) + c)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("gateway closed")
        out += chunk
    return out


class DocClient:
    """Section 9.8, step by step."""

    def __init__(self, addr: tuple[str, int], public_key_text: str) -> None:
        pub = base64.urlsafe_b64decode(public_key_text + "=")  # section 9.1: 43 chars, no padding
        self.sock = socket.create_connection(addr, timeout=scaled(5))
        self.noise = NoiseConnection.from_name(b"Noise_NK_25519_ChaChaPoly_SHA256")
        self.noise.set_as_initiator()
        self.noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, pub)
        head = b"\xe1" + hashlib.sha256(pub).digest()[:8]  # mode byte + key id
        self.noise.set_prologue(b"tcpdispatch/1 " + head)
        self.noise.start_handshake()
        self.head = head

    def handshake(self, first_frames: bytes) -> bytes:
        m1 = bytes(self.noise.write_message(first_frames))
        self.sock.sendall(self.head + struct.pack("!H", len(m1)) + m1)
        mode = recv_exact(self.sock, 1)
        if mode == b"\x00":  # a plain ERROR frame: u32 length (first byte read), ver, op, payload
            rest = recv_exact(self.sock, 3)
            (length,) = struct.unpack("!I", mode + rest)
            body = recv_exact(self.sock, length)
            code = struct.unpack("!H", body[2:4])[0]
            raise ConnectionRefusedError(code, body[4:].decode())
        assert mode == b"\xe1"
        (n,) = struct.unpack("!H", recv_exact(self.sock, 2))
        return bytes(self.noise.read_message(recv_exact(self.sock, n)))  # the grant (9.2)

    def send(self, frames: bytes) -> None:
        c = self.noise.encrypt(frames)
        self.sock.sendall(struct.pack("!H", len(c)) + c)

    def recv_frame(self) -> tuple[int, bytes]:
        """One frame (this simple reader assumes one frame per transport message)."""
        (n,) = struct.unpack("!H", recv_exact(self.sock, 2))
        plain = self.noise.decrypt(recv_exact(self.sock, n))
        length, _ver, op = struct.unpack("!IBB", plain[:6])
        assert len(plain) == 4 + length
        return op, plain[6:]


def test_a_client_written_from_the_spec_connects_securely(
    tmp_path: Path,
    procs: Callable[..., Proc],
) -> None:
    key = StaticKey.generate()
    write_key_file(tmp_path / "g.key", key)
    gw = start_gateway(procs, "g1", "--key-file", str(tmp_path / "g.key"))
    c = DocClient(("127.0.0.1", gw.port), key.public.text)
    grant = c.handshake(hello("", "doc-client"))
    lifetime, m = struct.unpack("!IB", grant[:5])
    assert lifetime == 3600 and m == 28 and len(grant) == 5 + m + 32
    op, _welcome = c.recv_frame()
    assert op == 2  # WELCOME
    c.send(frame(5, b"written from the docs"))  # DATA, echoed
    assert c.recv_frame() == (5, b"written from the docs")
    c.send(frame(3, struct.pack("!Q", 7)))  # PING
    assert c.recv_frame() == (4, struct.pack("!Q", 7))

    wrong = DocClient(("127.0.0.1", gw.port), StaticKey.generate().public.text)
    with pytest.raises(ConnectionRefusedError) as refused:
        wrong.handshake(hello("", "doc-client"))
    assert refused.value.args[0] == 401 and key.public.text in refused.value.args[1]
