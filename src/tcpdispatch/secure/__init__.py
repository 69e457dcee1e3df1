"""Encrypted, server-authenticated gateway connections (the Noise Protocol Framework).

* :mod:`.keys` — gateway static keys: generation, key files, public key text, key ids.
* :mod:`.handshake` — the sans-I/O handshakes: ``Noise_NK_25519_ChaChaPoly_SHA256`` for first
  contact (the client knows the gateway's public key) and
  ``Noise_NNpsk0_25519_ChaChaPoly_SHA256`` for resumption; both run by the ``noiseprotocol``
  library.
* :mod:`.transport` — Noise transport messages with a 16-bit length prefix, carrying the
  plain tcpdispatch frame stream.
* :mod:`.resumption` — resumption grants (a gateway-issued id and pre-shared key).

docs/protocol.md section 9 is the normative description; docs/security.md says why Noise
and not in-process TLS (measured).
"""

from tcpdispatch.secure.handshake import (
    MODE_FULL,
    MODE_RESUME,
    ClientHandshake,
    HandshakeDone,
    ServerHandshake,
    ServerSecurity,
)
from tcpdispatch.secure.keys import PublicKey, StaticKey, load_key_file, parse_public_key
from tcpdispatch.secure.resumption import ResumptionGrant, ResumptionStore
from tcpdispatch.secure.transport import SecureTransport

__all__ = [
    "MODE_FULL",
    "MODE_RESUME",
    "ClientHandshake",
    "HandshakeDone",
    "PublicKey",
    "ResumptionGrant",
    "ResumptionStore",
    "SecureTransport",
    "ServerHandshake",
    "ServerSecurity",
    "StaticKey",
    "load_key_file",
    "parse_public_key",
]
