"""Gateway static keys (X25519): generation, key files and the public key text.

A gateway's identity is its X25519 static key pair. Clients learn the public key
from the dispatcher's answer (``"key"``, fetched over HTTPS) or from a key pinned in
their configuration, and the Noise NK handshake proves the gateway holds the
private half.

Text forms (docs/protocol.md section 9.1):

* public key: the 32 raw bytes in URL-safe base64 without padding (43 characters);
* key id: the first 8 bytes of SHA-256 over the 32 raw public key bytes; it tells a
  gateway holding several keys (during a rotation) which one a client expects;
* key file: one private key per non-empty line (same base64 form, ``#`` starts a
  comment line). The first key is current: it is the one the gateway announces and
  binds new resumption grants to; every listed key is accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tcpdispatch.errors import ConfigError

KEY_SIZE = 32
KEY_ID_SIZE = 8
_RESUME_INFO = b"tcpdispatch resumption key v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str, what: str) -> bytes:
    text = text.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not URL-safe base64") from None
    if len(raw) != KEY_SIZE or _b64(raw) != text:
        raise ValueError(
            f"{what} must be {KEY_SIZE} bytes in URL-safe base64 without padding "
            f"(43 characters), got {len(text)} characters"
        )
    return raw


def key_id(public: bytes) -> bytes:
    """The 8-byte id of a raw public key."""
    return hashlib.sha256(public).digest()[:KEY_ID_SIZE]


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A gateway public key as a client pins it."""

    raw: bytes
    id: bytes = field(init=False, repr=False, compare=False)  # key_id(raw), computed once

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_SIZE:
            raise ValueError(f"a public key is {KEY_SIZE} bytes")
        object.__setattr__(self, "id", key_id(self.raw))

    @property
    def text(self) -> str:
        return _b64(self.raw)

    def __str__(self) -> str:
        return self.text


def parse_public_key(text: str) -> PublicKey:
    """Parse the 43-character text form; ValueError says what is wrong."""
    if not isinstance(text, str):
        raise TypeError("a public key must be a string")
    return PublicKey(_unb64(text, "public key"))


@dataclass(frozen=True, slots=True)
class StaticKey:
    """One gateway key pair, with the values derived from it once."""

    private: bytes
    public: PublicKey = field(init=False)
    resume_key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pub = X25519PrivateKey.from_private_bytes(self.private).public_key().public_bytes_raw()
        object.__setattr__(self, "public", PublicKey(pub))
        # Bound to the static key: a grant verifies only where this private key is held,
        # and replacing the key invalidates every grant issued under it.
        object.__setattr__(
            self, "resume_key", hmac.new(self.private, _RESUME_INFO + pub, hashlib.sha256).digest()
        )

    @classmethod
    def generate(cls) -> StaticKey:
        return cls(X25519PrivateKey.generate().private_bytes_raw())

    @property
    def id(self) -> bytes:
        return self.public.id

    @property
    def private_text(self) -> str:
        return _b64(self.private)

    def __repr__(self) -> str:
        return f"StaticKey(public={self.public.text})"


def load_key_file(path: str | os.PathLike[str]) -> tuple[StaticKey, ...]:
    """Read a gateway key file; ConfigError names the file and line on any problem."""
    p = Path(path)
    try:
        text = p.read_text("ascii")
    except OSError as exc:
        raise ConfigError(f"cannot read key file: {exc.strerror or exc}", file=str(p)) from None
    except UnicodeDecodeError:
        raise ConfigError("key file is not ASCII text", file=str(p)) from None
    keys: list[StaticKey] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            raw = _unb64(line, "private key")
        except ValueError as exc:
            raise ConfigError(f"line {n}: {exc}", file=str(p)) from None
        keys.append(StaticKey(raw))
    if not keys:
        raise ConfigError(
            "key file holds no key (make one with `tcpdispatch keygen FILE`)", file=str(p)
        )
    if len({k.id for k in keys}) != len(keys):
        raise ConfigError("key file lists the same key twice", file=str(p))
    return tuple(keys)


def key_file_is_private(path: str | os.PathLike[str]) -> bool:
    """False when group or others may read the file (the caller warns)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return True
    return not mode & (stat.S_IRWXG | stat.S_IRWXO)


def write_key_file(path: str | os.PathLike[str], key: StaticKey) -> None:
    """Create ``path`` (mode 0600, never overwriting) holding ``key``; its ``.pub`` beside it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"# tcpdispatch gateway key; public key {key.public.text}\n{key.private_text}\n")
    pub = Path(f"{os.fspath(path)}.pub")
    pub.write_text(key.public.text + "\n")
