"""Frame codec of the tcpdispatch wire protocol (sans-I/O, no asyncio).

Every frame on the wire is::

    +----------------+-----------+----------+-------------------+
    | length: u32 BE | version u8| opcode u8| payload           |
    +----------------+-----------+----------+-------------------+

``length`` counts the bytes after itself (``2 + len(payload)``) and may not
exceed the receiver's maximum frame size. docs/protocol.md is the normative
description of each payload.

Encoding a frame whose fields do not fit the wire format (an id too long, an
integer out of range) raises ValueError: that is a local bug, never sent.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from tcpdispatch.errors import ErrorCode, RemoteProtocolError

VERSION = 1
HEADER = struct.Struct("!IBB")
HEADER_SIZE = HEADER.size  # 6
DEFAULT_MAX_FRAME = 64 * 1024
MAX_CLIENT_ID = 255  # bytes; the ticket format (tickets.py) holds at most 255
MAX_TICKET = 4096  # bytes; equals tickets.MAX_TICKET

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_WELCOME = struct.Struct("!IIB")
_RECONNECT = struct.Struct("!I")
_ERROR = struct.Struct("!H")


class Opcode(IntEnum):
    """Frame types; the numbers are part of the wire format."""

    HELLO = 1
    WELCOME = 2
    PING = 3
    PONG = 4
    DATA = 5
    RECONNECT = 6
    ERROR = 7
    BYE = 8


@dataclass(frozen=True, slots=True)
class Hello:
    """Client -> gateway, first frame: the dispatcher's ticket and the client's id."""

    ticket: str
    client_id: str
    opcode = Opcode.HELLO


@dataclass(frozen=True, slots=True)
class Welcome:
    """Gateway -> client: the session is open; ping every ``heartbeat_ms``."""

    session_id: str
    heartbeat_ms: int
    idle_timeout_ms: int
    opcode = Opcode.WELCOME


@dataclass(frozen=True, slots=True)
class Ping:
    """Client -> gateway heartbeat; the gateway answers PONG with the same nonce."""

    nonce: int
    opcode = Opcode.PING


@dataclass(frozen=True, slots=True)
class Pong:
    """Gateway -> client: answer to PING, echoing its nonce."""

    nonce: int
    opcode = Opcode.PONG


@dataclass(frozen=True, slots=True)
class Data:
    """Either side, once open: one application message (opaque bytes)."""

    payload: bytes
    opcode = Opcode.DATA


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Gateway -> client: reconnect through the dispatcher after ``delay_ms``."""

    delay_ms: int
    reason: str = ""
    opcode = Opcode.RECONNECT


@dataclass(frozen=True, slots=True)
class Error:
    """Either side: fatal error; the sender closes the connection after it."""

    code: int
    reason: str = ""
    opcode = Opcode.ERROR


@dataclass(frozen=True, slots=True)
class Bye:
    """Either side: orderly close."""

    opcode = Opcode.BYE


Frame = Hello | Welcome | Ping | Pong | Data | Reconnect | Error | Bye


def _pack_str16(s: str, limit: int, what: str) -> bytes:
    raw = s.encode("utf-8")
    if len(raw) > limit:
        raise ValueError(f"{what} longer than {limit} bytes")
    return _U16.pack(len(raw)) + raw


def encode_payload(frame: Frame) -> bytes:
    """Serialize the payload of ``frame`` (no header)."""
    if isinstance(frame, Data):
        return bytes(frame.payload)
    if isinstance(frame, (Ping, Pong)):
        return _U64.pack(frame.nonce)
    if isinstance(frame, Hello):
        return _pack_str16(frame.ticket, MAX_TICKET, "ticket") + _pack_str16(
            frame.client_id, MAX_CLIENT_ID, "client_id"
        )
    if isinstance(frame, Welcome):
        sid = frame.session_id.encode("utf-8")
        if len(sid) > 255:
            raise ValueError("session_id longer than 255 bytes")
        return _WELCOME.pack(frame.heartbeat_ms, frame.idle_timeout_ms, len(sid)) + sid
    if isinstance(frame, Reconnect):
        return _RECONNECT.pack(frame.delay_ms) + frame.reason.encode("utf-8")
    if isinstance(frame, Error):
        return _ERROR.pack(frame.code) + frame.reason.encode("utf-8")
    if isinstance(frame, Bye):
        return b""
    raise TypeError(f"not a frame: {frame!r}")


def encode(frame: Frame) -> bytes:
    """Serialize ``frame`` with its header; ValueError if a field does not fit."""
    try:
        payload = encode_payload(frame)
        return HEADER.pack(len(payload) + 2, VERSION, frame.opcode) + payload
    except struct.error as exc:
        raise ValueError(f"cannot encode {frame!r}: {exc}") from None


def encode_data(payload: bytes) -> bytes:
    """Fast path for DATA frames (the gateway's per-message hot path)."""
    return HEADER.pack(len(payload) + 2, VERSION, Opcode.DATA) + payload


def _truncated(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.TRUNCATED_FRAME, f"{what} payload is truncated")


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(ErrorCode.MALFORMED_FRAME, f"{what} is not valid UTF-8") from None


def _str16(p: bytes, pos: int, what: str, limit: int) -> tuple[str, int]:
    if pos + 2 > len(p):
        raise _truncated(what)
    (n,) = _U16.unpack_from(p, pos)
    if n > limit:
        raise RemoteProtocolError(ErrorCode.MALFORMED_FRAME, f"{what} longer than {limit} bytes")
    end = pos + 2 + n
    if end > len(p):
        raise _truncated(what)
    return _text(p[pos + 2 : end], what), end


def _no_trailing(p: bytes, end: int, what: str) -> None:
    if end != len(p):
        raise RemoteProtocolError(
            ErrorCode.MALFORMED_FRAME, f"{what} has {len(p) - end} trailing bytes"
        )


def decode_payload(opcode: int, p: bytes) -> Frame:
    """Parse one payload; raises RemoteProtocolError for anything malformed."""
    if opcode == Opcode.DATA:
        return Data(p)
    if opcode == Opcode.PING or opcode == Opcode.PONG:
        if len(p) < 8:
            raise _truncated(Opcode(opcode).name)
        _no_trailing(p, 8, Opcode(opcode).name)
        (nonce,) = _U64.unpack(p)
        return Ping(nonce) if opcode == Opcode.PING else Pong(nonce)
    if opcode == Opcode.HELLO:
        ticket, pos = _str16(p, 0, "HELLO ticket", MAX_TICKET)
        client_id, pos = _str16(p, pos, "HELLO client_id", MAX_CLIENT_ID)
        _no_trailing(p, pos, "HELLO")
        return Hello(ticket, client_id)
    if opcode == Opcode.WELCOME:
        if len(p) < _WELCOME.size:
            raise _truncated("WELCOME")
        hb, idle, n = _WELCOME.unpack_from(p)
        end = _WELCOME.size + n
        if end > len(p):
            raise _truncated("WELCOME")
        _no_trailing(p, end, "WELCOME")
        return Welcome(_text(p[_WELCOME.size : end], "WELCOME session_id"), hb, idle)
    if opcode == Opcode.RECONNECT:
        if len(p) < 4:
            raise _truncated("RECONNECT")
        (delay,) = _RECONNECT.unpack_from(p)
        return Reconnect(delay, _text(p[4:], "RECONNECT reason"))
    if opcode == Opcode.ERROR:
        if len(p) < 2:
            raise _truncated("ERROR")
        (code,) = _ERROR.unpack_from(p)
        return Error(code, _text(p[2:], "ERROR reason"))
    if opcode == Opcode.BYE:
        _no_trailing(p, 0, "BYE")
        return Bye()
    raise RemoteProtocolError(ErrorCode.UNKNOWN_OPCODE, f"unknown opcode {opcode}")


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole frames.

    Raises only :class:`RemoteProtocolError`. After an error the decoder is
    poisoned and every later call re-raises, so a caller cannot resync on
    garbage by accident. Header checks (size, version, opcode) happen as soon
    as a frame's 6 header bytes are in, before its payload arrives.
    """

    __slots__ = ("_buf", "_failed", "_max")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame_size < 2:
            raise ValueError("max_frame_size must be at least 2")
        self._buf = bytearray()
        self._max = max_frame_size
        self._failed: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole frame."""
        return len(self._buf)

    @property
    def failed(self) -> RemoteProtocolError | None:
        """The error that poisoned this decoder, if any."""
        return self._failed

    def receive(self, data: bytes) -> None:
        """Buffer ``data`` without parsing; pull frames with :meth:`next_frame`."""
        if self._failed is not None:
            raise self._failed.with_traceback(None)
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next whole frame in the buffer, or None until more bytes arrive."""
        if self._failed is not None:
            raise self._failed.with_traceback(None)
        buf = self._buf
        if len(buf) < HEADER_SIZE:
            return None
        try:
            length, version, opcode = HEADER.unpack_from(buf)
            if length > self._max:
                raise RemoteProtocolError(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"frame of {length} bytes exceeds the maximum of {self._max}",
                )
            if length < 2:
                raise RemoteProtocolError(
                    ErrorCode.TRUNCATED_FRAME, f"frame length {length} is shorter than its header"
                )
            if version != VERSION:
                raise RemoteProtocolError(
                    ErrorCode.BAD_VERSION, f"protocol version {version} (expected {VERSION})"
                )
            if not 1 <= opcode <= 8:
                raise RemoteProtocolError(ErrorCode.UNKNOWN_OPCODE, f"unknown opcode {opcode}")
            end = 4 + length
            if end > len(buf):
                return None
            frame = decode_payload(opcode, bytes(buf[HEADER_SIZE:end]))
        except RemoteProtocolError as exc:
            self._failed = exc
            buf.clear()
            raise
        del buf[:end]  # O(1): bytearray deletes from the front by moving its start
        return frame

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they complete (possibly none).

        On an error, frames completed earlier in the same call are discarded
        with the rest of the stream.
        """
        self.receive(data)
        frames: list[Frame] = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def feed_eof(self) -> None:
        """The stream ended; a partial frame left in the buffer is an error."""
        if self._failed is not None:
            raise self._failed.with_traceback(None)
        if self._buf:
            self._failed = RemoteProtocolError(
                ErrorCode.TRUNCATED_FRAME, f"stream ended inside a frame ({len(self._buf)} bytes)"
            )
            self._buf.clear()
            raise self._failed
