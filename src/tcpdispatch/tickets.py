"""Connect tickets: issued by the dispatcher, verified by the gateway.

A ticket is ``v1.<payload>.<mac>`` in URL-safe base64 without padding. The
payload is binary (all integers big-endian)::

    u32 issued_at (unix s) | u16 lifetime (s) | 8 bytes nonce
    u8 n | n x (u8 len, gateway id) | u8 len, client id

and the MAC is HMAC-SHA256 over ``b"v1." + payload``, truncated to 16 bytes.
One ticket names the chosen gateway and its alternates, so the dispatcher
signs once per dispatch. Verification tries every configured secret, so a
secret can be rotated by listing the new one first in the file, then removing
the old one after one ticket lifetime.

Replay rule: a gateway admits each ticket nonce at most once while the ticket
is valid (see :class:`NonceCache`). A reconnect therefore always goes back
through the dispatcher for a fresh ticket.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import random
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path

from tcpdispatch.errors import ConfigError, ErrorCode, TicketError

PREFIX = b"v1."
MAC_SIZE = 16
MIN_SECRET = 16
_HEAD = struct.Struct("!IH8s")
_HEAD_ISSUE = struct.Struct("!IHQB")  # same bytes as _HEAD + gateway count, nonce as int


@dataclass(frozen=True, slots=True)
class TicketClaims:
    """What a verified ticket asserts."""

    gateway_ids: tuple[str, ...]
    client_id: str
    issued_at: int
    expires_at: int
    nonce: bytes


def load_secrets(path: str | os.PathLike[str]) -> list[bytes]:
    """Read secrets from a file: one per non-empty line, the first signs.

    Raises ConfigError naming the file when it is missing, empty or a secret
    is shorter than 16 bytes.
    """
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read secret file: {exc.strerror}", file=str(p)) from None
    secrets = [line.strip().encode() for line in text.splitlines() if line.strip()]
    if not secrets:
        raise ConfigError("secret file is empty", file=str(p))
    for i, s in enumerate(secrets, 1):
        if len(s) < MIN_SECRET:
            raise ConfigError(f"secret on line {i} is shorter than {MIN_SECRET} bytes", file=str(p))
    return secrets


def generate_secret() -> str:
    """A fresh random secret suitable for a secret file."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _unb64(raw: bytes) -> bytes:
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


def _mac(secret: bytes, msg: bytes) -> bytes:
    return hmac.new(secret, msg, hashlib.sha256).digest()[:MAC_SIZE]


def _pack_str8(s: str) -> bytes:
    raw = s.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"id longer than 255 bytes: {s[:40]!r}")
    return bytes((len(raw),)) + raw


class TicketSigner:
    """Issues tickets (dispatcher side). ``clock`` and ``nonce`` are injectable for tests."""

    def __init__(
        self,
        secret: bytes,
        lifetime: float = 60.0,
        *,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], int] | None = None,
    ) -> None:
        if len(secret) < MIN_SECRET:
            raise ValueError(f"secret must be at least {MIN_SECRET} bytes")
        if not 1 <= lifetime <= 65535:
            raise ValueError("lifetime must be between 1 and 65535 seconds")
        self._secret = secret
        self._lifetime = int(lifetime)
        self._clock = clock
        # Nonces must be unique, not secret (the MAC covers them): a PRNG seeded from the OS suffices.
        self._nonce = nonce or partial(random.Random(os.urandom(16)).getrandbits, 64)
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)
        self._encoded_ids: dict[str, bytes] = {}

    def issue(self, gateway_ids: Sequence[str], client_id: str) -> str:
        """A ticket valid at every gateway in ``gateway_ids`` for ``client_id``."""
        if not 1 <= len(gateway_ids) <= 255:
            raise ValueError("a ticket names 1 to 255 gateways")
        enc = self._encoded_ids
        try:
            ids = b"".join([enc[g] for g in gateway_ids])
        except KeyError:
            if len(enc) > 100_000:
                enc.clear()
            for g in gateway_ids:
                enc[g] = _pack_str8(g)
            ids = b"".join([enc[g] for g in gateway_ids])
        head = _HEAD_ISSUE.pack(int(self._clock()), self._lifetime, self._nonce(), len(gateway_ids))
        signed = PREFIX + _b64(head + ids + _pack_str8(client_id))
        mac = self._keyed.copy()
        mac.update(signed)
        return (signed + b"." + _b64(mac.digest()[:MAC_SIZE])).decode("ascii")


def _forged(reason: str) -> TicketError:
    return TicketError(ErrorCode.TICKET_FORGED, reason)


class TicketVerifier:
    """Verifies tickets (gateway side).

    ``leeway`` tolerates clock skew between dispatcher and gateway hosts.
    """

    def __init__(
        self,
        secrets: Sequence[bytes],
        *,
        leeway: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secrets:
            raise ValueError("at least one secret is required")
        self._secrets = list(secrets)
        self._leeway = leeway
        self._clock = clock

    def verify(self, ticket: str, gateway_id: str, client_id: str | None = None) -> TicketClaims:
        """Return the claims, or raise TicketError with the precise refusal code."""
        try:
            raw = ticket.encode("ascii")
        except UnicodeEncodeError:
            raise _forged("ticket is not ASCII") from None
        signed, dot, mac_b64 = raw.rpartition(b".")
        if not dot or not signed.startswith(PREFIX):
            raise _forged("ticket has an unknown format")
        try:
            mac = _unb64(mac_b64)
            payload = _unb64(signed[len(PREFIX) :])
        except (binascii.Error, ValueError):
            raise _forged("ticket is not valid base64") from None
        if not any(hmac.compare_digest(mac, _mac(s, signed)) for s in self._secrets):
            raise _forged("ticket signature does not match")
        claims = _parse(payload)
        now = self._clock()
        if now > claims.expires_at + self._leeway:
            raise TicketError(
                ErrorCode.TICKET_EXPIRED, f"ticket expired {now - claims.expires_at:.0f}s ago"
            )
        if claims.issued_at > now + self._leeway:
            raise _forged("ticket issued in the future")
        if gateway_id not in claims.gateway_ids:
            raise TicketError(
                ErrorCode.TICKET_WRONG_GATEWAY,
                f"ticket is for {','.join(claims.gateway_ids)}, not {gateway_id}",
            )
        if client_id is not None and client_id != claims.client_id:
            raise TicketError(ErrorCode.TICKET_WRONG_CLIENT, "ticket was issued to another client id")
        return claims


def _parse(payload: bytes) -> TicketClaims:
    """Decode a payload whose MAC already checked out (so malformed means a bug or old key)."""
    try:
        issued, lifetime, nonce = _HEAD.unpack_from(payload)
        pos = _HEAD.size
        n = payload[pos]
        pos += 1
        ids = []
        for _ in range(n + 1):
            ln = payload[pos]
            ids.append(payload[pos + 1 : pos + 1 + ln].decode("utf-8"))
            if len(ids[-1].encode()) != ln:
                raise ValueError("short id")
            pos += 1 + ln
        if pos != len(payload):
            raise ValueError("trailing bytes")
    except (struct.error, IndexError, ValueError, UnicodeDecodeError):
        raise _forged("ticket payload is malformed") from None
    return TicketClaims(tuple(ids[:-1]), ids[-1], issued, issued + lifetime, nonce)


class NonceCache:
    """Remembers admitted ticket nonces until their tickets expire (replay guard).

    Memory is bounded by the admission rate times the ticket lifetime; entries
    are pruned lazily on insert, oldest first.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, leeway: float = 5.0) -> None:
        self._seen: dict[bytes, float] = {}
        self._clock = clock
        self._leeway = leeway

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, claims: TicketClaims) -> None:
        """Record the nonce, or raise TICKET_REPLAYED if it was admitted before."""
        now = self._clock()
        seen = self._seen
        # dicts keep insertion order and expiry mostly grows with it: prune from the front
        stale = []
        for key in islice(seen, 64):
            if seen[key] >= now:
                break
            stale.append(key)
        for key in stale:
            del seen[key]
        if claims.nonce in seen:
            raise TicketError(ErrorCode.TICKET_REPLAYED, "ticket was already used at this gateway")
        seen[claims.nonce] = claims.expires_at + self._leeway
