"""Resumption grants: a cheaper, still authenticated handshake for reconnects.

After a full handshake the gateway hands the client a *grant* inside the (encrypted)
second handshake message: an id and a 32-byte pre-shared key (PSK). The gateway keeps
no per-client state; like a TLS 1.3 stateless session ticket, the id carries what the
gateway needs and the PSK is derived from it under a key only the gateway holds::

    id  = key_id (8) | u32 expires_at (unix s, gateway clock) | 16 random bytes
    psk = HMAC-SHA256(resume_key, id)
    resume_key = HMAC-SHA256(static private key, "tcpdispatch resumption key v1" | public key)

A reconnect then runs ``Noise_NNpsk0_25519_ChaChaPoly_SHA256`` with that PSK, sending the
id in clear before it. Only a holder of the static private key can derive the PSK, so
the resumed handshake authenticates the gateway as the full one does, and its ``ee``
exchange keeps forward secrecy. A grant is bound to the static key it was issued under:
it works at every gateway holding that key (a fleet may share one) until it expires or
the key leaves the gateway's key file. Clients use each grant once and keep the fresh
one the resumed handshake hands out.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from tcpdispatch.errors import ErrorCode, RemoteProtocolError
from tcpdispatch.secure.keys import KEY_ID_SIZE, PublicKey, StaticKey

ID_SIZE = KEY_ID_SIZE + 4 + 16
PSK_SIZE = 32
_ID = struct.Struct(f"!{KEY_ID_SIZE}sI16s")
_GRANT_HEAD = struct.Struct("!IB")  # lifetime_s, id length
MAX_LIFETIME = 7 * 24 * 3600  # as TLS 1.3 caps ticket lifetimes


def derive_psk(key: StaticKey, grant_id: bytes) -> bytes:
    return hmac.digest(key.resume_key, grant_id, "sha256")


def issue_grant(key: StaticKey, now: float, lifetime: int) -> bytes:
    """The grant payload of a gateway's handshake answer (empty when resumption is off)."""
    if lifetime <= 0:
        return b""
    grant_id = _ID.pack(key.id, int(now) + lifetime, os.urandom(16))
    return _GRANT_HEAD.pack(lifetime, len(grant_id)) + grant_id + derive_psk(key, grant_id)


def check_grant_id(grant_id: bytes, keys: Mapping[bytes, StaticKey], now: float) -> bytes:
    """The PSK for ``grant_id``; RemoteProtocolError(RESUME_REJECTED) when it cannot be used.

    A forged id with a valid layout passes here; it fails when its handshake message
    does not decrypt under the derived PSK (the caller reports that the same way).
    """
    if len(grant_id) != ID_SIZE:
        raise RemoteProtocolError(ErrorCode.RESUME_REJECTED, "resumption id has the wrong length")
    kid, expires_at, _ = _ID.unpack(grant_id)
    key = keys.get(kid)
    if key is None:
        raise RemoteProtocolError(
            ErrorCode.RESUME_REJECTED,
            "resumption was granted under a key this gateway does not hold",
        )
    if now > expires_at:
        raise RemoteProtocolError(ErrorCode.RESUME_REJECTED, "resumption grant has expired")
    return derive_psk(key, grant_id)


@dataclass(frozen=True, slots=True)
class ResumptionGrant:
    """What a client keeps to resume with one gateway key."""

    server_key: PublicKey
    id: bytes
    psk: bytes
    expires_at: float  # client clock (the ``clock`` the store was given)


def parse_grant(payload: bytes, server_key: PublicKey, now: float) -> ResumptionGrant | None:
    """Parse the grant payload of a handshake answer; None when empty; ValueError if malformed."""
    if not payload:
        return None
    if len(payload) < _GRANT_HEAD.size:
        raise ValueError("resumption grant is truncated")
    lifetime, n = _GRANT_HEAD.unpack_from(payload)
    end = _GRANT_HEAD.size + n
    if n == 0 or len(payload) != end + PSK_SIZE:
        raise ValueError("resumption grant has the wrong length")
    # Expire a little early so a grant never arrives at the gateway just after its end.
    life = min(lifetime, MAX_LIFETIME) * 0.9
    return ResumptionGrant(
        server_key, bytes(payload[_GRANT_HEAD.size : end]), bytes(payload[end:]), now + life
    )


class ResumptionStore:
    """A client's grants, one per gateway public key, each used at most once."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._grants: OrderedDict[bytes, ResumptionGrant] = OrderedDict()
        self._max = max_entries

    def take(self, server_key: PublicKey, now: float) -> ResumptionGrant | None:
        """Remove and return a usable grant for ``server_key`` (None if none or expired)."""
        grant = self._grants.pop(server_key.raw, None)
        if grant is None or grant.expires_at <= now:
            return None
        return grant

    def put(self, grant: ResumptionGrant) -> None:
        self._grants[grant.server_key.raw] = grant
        self._grants.move_to_end(grant.server_key.raw)
        while len(self._grants) > self._max:
            self._grants.popitem(last=False)

    def forget(self, server_key: PublicKey) -> None:
        self._grants.pop(server_key.raw, None)

    def __len__(self) -> int:
        return len(self._grants)
