"""A ``noiseprotocol`` backend with faster bindings for the same primitives.

The library's default backend runs SHA-256 and HMAC through ``cryptography``'s object
API (about 5 µs a call; a handshake makes 10 to 16 calls) and X25519 through
``cryptography``'s key objects. This backend keeps the library's state machine and
cipher classes and swaps only the bindings:

* SHA-256 and HMAC-SHA256: the standard library's one-shot ``hashlib.sha256`` and
  ``hmac.digest`` (the same OpenSSL functions, ~1 µs a call);
* ChaCha20-Poly1305: the same ``cryptography`` AEAD, but built on first use instead of
  at every MixKey (building one costs an OpenSSL context; a psk handshake replaces its
  key several times before using it);
* X25519: libsodium through PyNaCl (``crypto_scalarmult_base`` for key generation,
  ``crypto_scalarmult`` for DH), about a third cheaper per operation here, keys kept as
  raw 32-byte strings. libsodium refuses a DH whose result is all zeros (a low-order
  public key); the handshake then fails, as Noise allows.

The results are byte-identical (tests/secure/test_handshake.py runs handshakes between
this backend and the library's default one in both directions). Only the algorithms
our protocol names are offered: 25519, ChaChaPoly, SHA256.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from noise.backends.default import DefaultNoiseBackend
from noise.backends.default.ciphers import ChaCha20Cipher
from noise.backends.default.hashes import SHA256Hash
from noise.functions.dh import DH
from noise.functions.keypair import KeyPair

_sha256 = hashlib.sha256
_digest = hmac.digest


class _FastSHA256(SHA256Hash):
    def hash(self, data: bytes) -> bytes:
        return _sha256(data).digest()


def _hmac_sha256(key: bytes, data: bytes, algorithm: Any = None) -> bytes:
    return _digest(key, data, "sha256")


class _LazyChaCha(ChaCha20Cipher):  # type: ignore[misc]
    cipher: ChaCha20Poly1305 | None

    def initialize(self, key: bytes) -> None:
        self.cipher = None  # built from ``k`` when first used

    def encrypt(self, k: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
        c = self.cipher
        if c is None:
            c = self.cipher = ChaCha20Poly1305(k)
        return bytes(c.encrypt(self.format_nonce(n), plaintext, ad))

    def decrypt(self, k: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
        c = self.cipher
        if c is None:
            c = self.cipher = ChaCha20Poly1305(k)
        return bytes(c.decrypt(self.format_nonce(n), ciphertext, ad))


class KeyPair25519(KeyPair):  # type: ignore[misc]
    """An X25519 key pair as raw bytes (``private`` is None for a remote public key)."""

    @classmethod
    def from_private_bytes(cls, private_bytes: bytes) -> KeyPair25519:
        if len(private_bytes) != 32:
            raise ValueError("an X25519 private key is 32 bytes")
        public = crypto_scalarmult_base(bytes(private_bytes))
        return cls(bytes(private_bytes), public, public)

    @classmethod
    def from_public_bytes(cls, public_bytes: bytes) -> KeyPair25519:
        if len(public_bytes) != 32:
            raise ValueError("an X25519 public key is 32 bytes")
        return cls(None, bytes(public_bytes), bytes(public_bytes))


class X25519(DH):  # type: ignore[misc]
    @property
    def klass(self) -> type[KeyPair25519]:
        return KeyPair25519

    @property
    def dhlen(self) -> int:
        return 32

    def generate_keypair(self) -> KeyPair25519:
        private = os.urandom(32)  # libsodium clamps the scalar, as RFC 7748 says
        public = crypto_scalarmult_base(private)
        return KeyPair25519(private, public, public)

    def dh(self, private_key: bytes, public_key: bytes) -> bytes:
        return bytes(crypto_scalarmult(private_key, public_key))


class FastBackend(DefaultNoiseBackend):  # type: ignore[misc]
    """The default backend with stdlib SHA-256/HMAC and libsodium X25519."""

    def __init__(self) -> None:
        super().__init__()
        self.hashes = {"SHA256": _FastSHA256}
        self.hmac = _hmac_sha256
        self.diffie_hellmans = {"25519": X25519}
        self.keypairs = {"25519": KeyPair25519}
        self.ciphers = {"ChaChaPoly": _LazyChaCha}


backend = FastBackend()
