"""Noise transport messages over TCP: the encrypted byte stream after the handshake.

Each direction is a sequence of messages ``u16 length | ciphertext`` (Noise spec,
section 13: a 16-bit big-endian length prefix). ``ciphertext`` is ChaCha20-Poly1305
(RFC 8439) of up to 65519 plaintext bytes under that direction's key from the
handshake's Split(), with a nonce of 4 zero bytes and the message counter as a 64-bit
little-endian integer (Noise section 12.3), starting at 0, and empty associated data —
byte for byte what the ``noiseprotocol`` library's ``encrypt``/``decrypt`` produce
(tests/secure/test_transport.py checks it against the library). The plaintexts, joined,
are the plain tcpdispatch frame stream of docs/protocol.md sections 1-8; message
boundaries mean nothing to it.

Memory is the point of this class: an idle gateway connection keeps two 32-byte keys
and two counters. A ``ChaCha20Poly1305`` object costs about 2.2 KiB (an OpenSSL cipher
context), so it is built per burst of messages and dropped, never kept per connection.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from tcpdispatch.errors import ErrorCode, RemoteProtocolError

MAX_MESSAGE = 65535
TAG_SIZE = 16
MAX_PLAINTEXT = MAX_MESSAGE - TAG_SIZE
_LEN = struct.Struct("!H")
_ZERO4 = b"\x00\x00\x00\x00"
_MAX_NONCE = 2**64 - 1  # reserved by Noise; never used as a nonce


def _nonce(n: int) -> bytes:
    return _ZERO4 + n.to_bytes(8, "little")


class SecureTransport:
    """Both directions of one encrypted connection (sans-I/O)."""

    __slots__ = ("_buf", "_rx_key", "_rx_n", "_tx_key", "_tx_n")

    def __init__(self, tx_key: bytes, rx_key: bytes) -> None:
        self._tx_key = tx_key
        self._rx_key = rx_key
        self._tx_n = 0
        self._rx_n = 0
        self._buf = b""

    def encrypt(self, plaintext: bytes) -> bytes:
        """Wrap ``plaintext`` (any length) into length-prefixed transport messages."""
        if not plaintext:
            return b""
        aead = ChaCha20Poly1305(self._tx_key)
        n = self._tx_n
        if len(plaintext) <= MAX_PLAINTEXT:
            if n >= _MAX_NONCE:
                raise RemoteProtocolError(ErrorCode.DECRYPT_FAILED, "send nonce exhausted")
            ct = aead.encrypt(_nonce(n), plaintext, None)
            self._tx_n = n + 1
            return _LEN.pack(len(ct)) + ct
        out = bytearray()
        view = memoryview(plaintext)
        for start in range(0, len(plaintext), MAX_PLAINTEXT):
            if n >= _MAX_NONCE:
                raise RemoteProtocolError(ErrorCode.DECRYPT_FAILED, "send nonce exhausted")
            ct = aead.encrypt(_nonce(n), bytes(view[start : start + MAX_PLAINTEXT]), None)
            n += 1
            out += _LEN.pack(len(ct))
            out += ct
        self._tx_n = n
        return bytes(out)

    def decrypt(self, data: bytes) -> bytes:
        """Feed received bytes; return the plaintext of the messages they complete.

        Raises RemoteProtocolError(DECRYPT_FAILED) for a message shorter than its tag or
        one that fails authentication (tampered, reordered, replayed or not ours); the
        transport is unusable after that.
        """
        if not self._rx_key:
            raise RemoteProtocolError(ErrorCode.DECRYPT_FAILED, "transport failed earlier")
        buf = self._buf + data if self._buf else data
        size = len(buf)
        pos = 0
        out: list[bytes] = []
        aead: ChaCha20Poly1305 | None = None
        n = self._rx_n
        try:
            while size - pos >= 2:
                (length,) = _LEN.unpack_from(buf, pos)
                if length < TAG_SIZE:
                    raise RemoteProtocolError(
                        ErrorCode.DECRYPT_FAILED,
                        f"transport message of {length} bytes is shorter "
                        f"than its {TAG_SIZE}-byte tag",
                    )
                end = pos + 2 + length
                if end > size:
                    break
                if aead is None:
                    aead = ChaCha20Poly1305(self._rx_key)
                if n >= _MAX_NONCE:
                    raise RemoteProtocolError(ErrorCode.DECRYPT_FAILED, "receive nonce exhausted")
                try:
                    out.append(aead.decrypt(_nonce(n), bytes(buf[pos + 2 : end]), None))
                except InvalidTag:
                    raise RemoteProtocolError(
                        ErrorCode.DECRYPT_FAILED, f"transport message {n} failed authentication"
                    ) from None
                n += 1
                pos = end
        except RemoteProtocolError:
            self._buf = b""
            self._rx_key = b""
            raise
        self._rx_n = n
        self._buf = bytes(buf[pos:]) if pos < size else b""
        return out[0] if len(out) == 1 else b"".join(out)

    @property
    def buffered(self) -> int:
        """Bytes of a partial transport message held."""
        return len(self._buf)
