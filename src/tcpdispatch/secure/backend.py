"""A ``noiseprotocol`` backend with faster bindings for the same primitives.

The library's default backend computes SHA-256 and HMAC through ``cryptography``'s
object API, about 5 µs a call; a handshake makes 10 to 16 such calls. This backend
keeps the library's state machine, DH and cipher classes and swaps only the two hash
entry points for the standard library's one-shot ``hashlib.sha256`` and
``hmac.digest`` (the same OpenSSL functions, ~1 µs a call). The results are identical
(tests/secure/test_handshake.py runs handshakes between this backend and the default
one in both directions). Only SHA-256 is offered: it is the one our protocols name.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from noise.backends.default import DefaultNoiseBackend
from noise.backends.default.hashes import SHA256Hash

_sha256 = hashlib.sha256
_digest = hmac.digest


class _FastSHA256(SHA256Hash):
    def hash(self, data: bytes) -> bytes:
        return _sha256(data).digest()


def _hmac_sha256(key: bytes, data: bytes, algorithm: Any = None) -> bytes:
    return _digest(key, data, "sha256")


class FastBackend(DefaultNoiseBackend):  # type: ignore[misc]
    """The default backend with stdlib SHA-256 and HMAC-SHA256."""

    def __init__(self) -> None:
        super().__init__()
        self.hashes = {"SHA256": _FastSHA256}
        self.hmac = _hmac_sha256


backend = FastBackend()
