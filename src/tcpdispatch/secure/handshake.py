"""The encrypted handshake, sans-I/O, on the ``noiseprotocol`` library.

First contact: ``Noise_NK_25519_ChaChaPoly_SHA256``. The client knows the gateway's
static public key (pinned, or from the dispatcher's answer) and encrypts its first
message to it; only the holder of the private key can answer, so a completed handshake
authenticates the gateway. Reconnects with a grant: ``Noise_NNpsk0_25519_ChaChaPoly_SHA256``
keyed by the grant's PSK (:mod:`.resumption`), which saves the gateway the DH with its
static key. Both take one round trip, the same as a plain HELLO/WELCOME: the client's
first handshake message carries the start of the frame stream (its HELLO) and the
gateway's answer is followed, in the same write, by WELCOME in a transport message.

Wire layout (docs/protocol.md section 9.2)::

    client, full:    E1 | key_id (8)              | u16 n | Noise message 1 (n)
    client, resume:  E2 | u8 m | grant id (m)     | u16 n | Noise message 1 (n)
    gateway:         E1 or E2 (echoed)            | u16 n | Noise message 2 (n)
                     or a plain ERROR frame (first byte 0x00), then close

Everything before ``u16 n`` in the client's message, prefixed by ``tcpdispatch/1 ``, is
the Noise prologue, so an attacker cannot change the mode, key id or grant id
unnoticed. The mode byte is never a valid first byte of a plain frame (those start with
0x00 or 0x01), which is how a gateway in migration tells the two kinds of client apart.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from noise.connection import Keypair, NoiseConnection

from tcpdispatch.errors import ErrorCode, RemoteProtocolError, SecureHandshakeError
from tcpdispatch.protocol.frames import Error, FrameDecoder
from tcpdispatch.secure.backend import backend
from tcpdispatch.secure.keys import KEY_ID_SIZE, PublicKey, StaticKey
from tcpdispatch.secure.resumption import (
    ResumptionGrant,
    check_grant_id,
    issue_grant,
    parse_grant,
)
from tcpdispatch.secure.transport import SecureTransport

FULL_PROTOCOL = b"Noise_NK_25519_ChaChaPoly_SHA256"
RESUME_PROTOCOL = b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"
PROLOGUE = b"tcpdispatch/1 "
MODE_FULL = 0xE1
MODE_RESUME = 0xE2
MAX_HANDSHAKE = 8192  # largest Noise handshake message accepted (a HELLO is at most 4361 bytes)
_U16 = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    """A completed handshake: what to write first, the transport, and decrypted early bytes."""

    transport: SecureTransport
    reply: bytes = b""  # gateway: its handshake answer, to write before anything else
    plaintext: bytes = b""  # frame-stream bytes that came with the handshake
    resumed: bool = False
    grant: ResumptionGrant | None = None  # client: the grant the gateway handed out


def _split(conn: NoiseConnection) -> SecureTransport:
    proto = conn.noise_protocol
    return SecureTransport(proto.cipher_state_encrypt.k, proto.cipher_state_decrypt.k)


# -- gateway side -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ServerSecurity:
    """A gateway's encryption settings: its keys (first = current) and what it accepts."""

    keys: tuple[StaticKey, ...]
    allow_plain: bool = False
    resume_lifetime: int = 3600  # seconds; 0 = hand out no grants
    clock: Callable[[], float] = time.time
    by_id: dict[bytes, StaticKey] = field(init=False, repr=False)
    _keypairs: dict[bytes, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("ServerSecurity needs at least one key")
        object.__setattr__(self, "by_id", {k.id: k for k in self.keys})
        # Loading a private key costs about as much as a DH: do it once, not per handshake.
        kp = backend.keypairs["25519"]
        object.__setattr__(
            self, "_keypairs", {k.id: kp.from_private_bytes(k.private) for k in self.keys}
        )

    @property
    def current(self) -> StaticKey:
        return self.keys[0]

    def keypair(self, kid: bytes) -> Any:
        return self._keypairs[kid]


def _failed(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.HANDSHAKE_FAILED, reason)


class ServerHandshake:
    """Collects the client's first message (any chunking) and answers it.

    :meth:`receive` returns None until the message is complete, then a
    :class:`HandshakeDone`. It raises only RemoteProtocolError (UNKNOWN_SERVER_KEY,
    RESUME_REJECTED, HANDSHAKE_FAILED); the gateway answers that with a plain ERROR.
    """

    __slots__ = ("_buf", "_sec")

    def __init__(self, security: ServerSecurity) -> None:
        self._sec = security
        self._buf = b""

    def receive(self, data: bytes) -> HandshakeDone | None:
        buf = self._buf + data
        self._buf = buf
        if not buf:
            return None
        mode = buf[0]
        if mode == MODE_FULL:
            head = 1 + KEY_ID_SIZE
        elif mode == MODE_RESUME:
            if len(buf) < 2:
                return None
            head = 2 + buf[1]
        else:
            raise _failed(f"unknown handshake mode 0x{mode:02x}")
        if len(buf) < head + 2:
            return None
        (n,) = _U16.unpack_from(buf, head)
        if n > MAX_HANDSHAKE:
            raise _failed(f"handshake message of {n} bytes exceeds {MAX_HANDSHAKE}")
        end = head + 2 + n
        if len(buf) < end:
            return None
        self._buf = b""
        prologue = PROLOGUE + buf[:head]
        message = buf[head + 2 : end]
        if mode == MODE_FULL:
            done = self._full(buf[1:head], prologue, message)
        else:
            done = self._resume(buf[2:head], prologue, message)
        rest = buf[end:]
        if rest:  # the client may pipeline transport messages behind its handshake
            done = HandshakeDone(
                done.transport,
                done.reply,
                done.plaintext + done.transport.decrypt(rest),
                done.resumed,
            )
        return done

    def _full(self, kid: bytes, prologue: bytes, message: bytes) -> HandshakeDone:
        sec = self._sec
        key = sec.by_id.get(kid)
        if key is None:
            raise RemoteProtocolError(
                ErrorCode.UNKNOWN_SERVER_KEY,
                f"this gateway does not hold the key with id {kid.hex()}; its key is "
                f"{sec.current.public.text}",
            )
        conn = NoiseConnection.from_name(FULL_PROTOCOL, backend=backend)
        conn.set_as_responder()
        conn.noise_protocol.keypairs["s"] = sec.keypair(kid)
        return self._run(conn, prologue, message, resumed=False)

    def _resume(self, grant_id: bytes, prologue: bytes, message: bytes) -> HandshakeDone:
        sec = self._sec
        psk = check_grant_id(grant_id, sec.by_id, sec.clock())
        conn = NoiseConnection.from_name(RESUME_PROTOCOL, backend=backend)
        conn.set_as_responder()
        conn.set_psks(psk)
        return self._run(conn, prologue, message, resumed=True)

    def _run(
        self, conn: NoiseConnection, prologue: bytes, message: bytes, *, resumed: bool
    ) -> HandshakeDone:
        sec = self._sec
        conn.set_prologue(prologue)
        conn.start_handshake()
        try:
            payload = bytes(conn.read_message(message))
        except Exception:  # noqa: BLE001 - the library raises several types for bad bytes
            if resumed:
                raise RemoteProtocolError(
                    ErrorCode.RESUME_REJECTED,
                    "resumption did not authenticate (forged grant, or not issued by this key)",
                ) from None
            raise _failed(
                "handshake message did not decrypt (not encrypted to this "
                "gateway's key, or altered)"
            ) from None
        # The next grant is bound to the current key (so grants follow a rotation); it
        # travels encrypted under this handshake, which authenticated ``key``.
        grant = issue_grant(sec.current, sec.clock(), sec.resume_lifetime)
        answer = bytes(conn.write_message(grant))
        mode = MODE_RESUME if resumed else MODE_FULL
        reply = bytes((mode,)) + _U16.pack(len(answer)) + answer
        return HandshakeDone(_split(conn), reply, payload, resumed)


# -- client side --------------------------------------------------------------------
class ClientHandshake:
    """The client's half: :meth:`first_message`, then :meth:`receive` until it returns.

    ``early`` is frame-stream plaintext (the HELLO) to carry in the first message.
    :meth:`receive` raises :class:`SecureHandshakeError` with the reason when the
    gateway refuses (plain ERROR, unauthenticated) or fails to prove its key.
    """

    def __init__(
        self,
        server_key: PublicKey,
        early: bytes = b"",
        grant: ResumptionGrant | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server_key = server_key
        self.grant = grant
        self._early = early
        self._clock = clock
        self._conn: NoiseConnection | None = None
        self._buf = b""
        self._mode = MODE_RESUME if grant is not None else MODE_FULL

    @property
    def resuming(self) -> bool:
        return self._mode == MODE_RESUME

    def first_message(self) -> bytes:
        if self.grant is not None:
            gid = self.grant.id
            head = bytes((MODE_RESUME, len(gid))) + gid
            conn = NoiseConnection.from_name(RESUME_PROTOCOL, backend=backend)
            conn.set_psks(self.grant.psk)
        else:
            head = bytes((MODE_FULL,)) + self.server_key.id
            conn = NoiseConnection.from_name(FULL_PROTOCOL, backend=backend)
            conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, self.server_key.raw)
        conn.set_as_initiator()
        conn.set_prologue(PROLOGUE + head)
        conn.start_handshake()
        message = bytes(conn.write_message(self._early))
        self._conn = conn
        return head + _U16.pack(len(message)) + message

    def receive(self, data: bytes) -> HandshakeDone | None:
        conn = self._conn
        if conn is None:
            raise RuntimeError("first_message() was not called")
        buf = self._buf + data
        self._buf = buf
        if not buf:
            return None
        if buf[0] in (0x00, 0x01):
            return self._refused(buf)
        if buf[0] != self._mode:
            raise SecureHandshakeError(
                int(ErrorCode.HANDSHAKE_FAILED),
                f"gateway answered with handshake mode 0x{buf[0]:02x}, expected "
                f"0x{self._mode:02x} (not a tcpdispatch gateway, or a man-in-the-middle)",
            )
        if len(buf) < 3:
            return None
        (n,) = _U16.unpack_from(buf, 1)
        if n > MAX_HANDSHAKE:
            raise SecureHandshakeError(
                int(ErrorCode.HANDSHAKE_FAILED),
                f"gateway handshake message of {n} bytes is too large",
            )
        end = 3 + n
        if len(buf) < end:
            return None
        self._buf = b""
        try:
            payload = bytes(conn.read_message(bytes(buf[3:end])))
        except Exception:  # noqa: BLE001 - the library raises several types for bad bytes
            what = (
                "the resumption key"
                if self.resuming
                else f"the private key of {self.server_key.text}"
            )
            raise SecureHandshakeError(
                int(ErrorCode.HANDSHAKE_FAILED),
                f"gateway did not prove it holds {what}: its handshake answer failed "
                f"authentication (a man-in-the-middle, or the wrong key pinned)",
            ) from None
        try:
            grant = parse_grant(payload, self.server_key, self._clock())
        except ValueError as exc:
            raise SecureHandshakeError(int(ErrorCode.HANDSHAKE_FAILED), str(exc)) from None
        transport = _split(conn)
        self._conn = None
        rest = buf[end:]
        plaintext = b""
        if rest:
            try:
                plaintext = transport.decrypt(rest)
            except RemoteProtocolError as exc:
                raise SecureHandshakeError(int(exc.code), exc.reason, authenticated=True) from None
        return HandshakeDone(transport, b"", plaintext, self.resuming, grant)

    def _refused(self, buf: bytes) -> HandshakeDone | None:
        decoder = FrameDecoder()
        try:
            frames = decoder.feed(buf)
        except RemoteProtocolError as exc:
            raise SecureHandshakeError(
                int(ErrorCode.HANDSHAKE_FAILED),
                f"gateway answered with a malformed frame: {exc.reason}",
            ) from None
        if not frames:
            return None
        frame = frames[0]
        if isinstance(frame, Error):
            raise SecureHandshakeError(frame.code, frame.reason or f"error {frame.code}")
        raise SecureHandshakeError(
            int(ErrorCode.HANDSHAKE_FAILED),
            f"gateway answered in clear with {frame.opcode.name} (it does not speak the "
            f"encrypted protocol, or something in between strips it)",
        )
