"""Connect tickets: issued by the dispatcher, verified by the gateway.

A ticket is the ASCII string ``v1.<payload>.<mac>``; ``<payload>`` and
``<mac>`` are URL-safe base64 without ``=`` padding. The payload is binary
(all integers big-endian)::

    u32 issued_at (unix s) | u16 lifetime (s) | 8 bytes nonce
    u8 n | n x (u8 len, gateway id UTF-8) | u8 len, client id UTF-8

The MAC is HMAC-SHA256, keyed with the shared secret, over the ASCII text
``v1.<payload>`` (prefix and base64 payload exactly as they appear in the
ticket), truncated to its first 16 bytes (22 base64 characters). One ticket
names the chosen gateway and its alternates, so the dispatcher signs once per
dispatch. Verification tries every configured secret, so a secret can be
rotated by listing the new one first in the file, then removing the old one
after one ticket lifetime.

Replay rule: a gateway admits each ticket nonce at most once while the ticket
is valid (see :class:`NonceCache`), so a ticket opens at most one session per
gateway. A reconnect therefore always goes back through the dispatcher for a
fresh ticket.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import mmap
import os
import random
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tcpdispatch.errors import ConfigError, ErrorCode, TicketError
from tcpdispatch.rng import SplitMixRandom, default_generator

PREFIX = b"v1."
MAC_SIZE = 16
MAC_B64_SIZE = 22  # base64 characters of a 16-byte MAC without padding
MIN_SECRET = 16
MAX_TICKET = 4096  # longest ticket (characters) a HELLO frame may carry
_HEAD = struct.Struct("!IH8s")
_HEAD_ISSUE = struct.Struct("!IHQ")  # same bytes as _HEAD, nonce as an int
_NONCE_INT = struct.Struct("!Q").unpack
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_b2a = binascii.b2a_base64
_LEN = [bytes((i,)) for i in range(256)]  # u8 length prefixes, prebuilt for issue()


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

    Surrounding whitespace of each line is ignored. Raises ConfigError naming
    the file when it is missing, unreadable, not UTF-8, empty, or a secret is
    shorter than 16 bytes.
    """
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read secret file: {exc.strerror or exc}", file=str(p)) from None
    except UnicodeDecodeError:
        raise ConfigError("secret file is not UTF-8 text", file=str(p)) from None
    secrets = [line.strip().encode() for line in text.splitlines() if line.strip()]
    if not secrets:
        raise ConfigError("secret file is empty", file=str(p))
    for i, s in enumerate(secrets, 1):
        if len(s) < MIN_SECRET:
            raise ConfigError(f"secret #{i} is shorter than {MIN_SECRET} bytes", file=str(p))
    return secrets


def generate_secret() -> str:
    """A fresh random secret suitable for a secret file."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def _b64(raw: bytes) -> bytes:
    return _b2a(raw, newline=False).translate(_TO_URLSAFE).rstrip(b"=")


def _unb64(raw: bytes) -> bytes:
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


class _Mac:
    """HMAC-SHA256 with the key schedule done once (RFC 2104 inner/outer states).

    Copying two precomputed hash states is the cheapest HMAC the standard
    library offers; the result equals ``hmac.new(secret, msg, sha256)``.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, secret: bytes) -> None:
        key = hashlib.sha256(secret).digest() if len(secret) > 64 else secret
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def b64(self, msg: bytes) -> bytes:
        """The truncated MAC of ``msg`` in its ticket (base64) form."""
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return _b2a(outer.digest()[:MAC_SIZE], newline=False).translate(_TO_URLSAFE)[:MAC_B64_SIZE]


def pack_id(s: str) -> bytes:
    """One id as the payload carries it: u8 length, then UTF-8 (ValueError past 255 bytes)."""
    raw = s.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"id longer than 255 bytes: {s[:40]!r}")
    return bytes((len(raw),)) + raw


class TicketSigner:
    """Issues tickets (dispatcher side).

    Nonces are the next 64-bit output of ``rng`` (the dispatcher passes the generator its
    pickers draw from, which the C hot path shares); without one, a generator seeded from the
    OS and reseeded after fork. ``nonce`` (a callable) overrides both, for tests.
    """

    _CACHE_MAX = 4096

    def __init__(
        self,
        secret: bytes,
        lifetime: float = 60.0,
        *,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if len(secret) < MIN_SECRET:
            raise ValueError(f"secret must be at least {MIN_SECRET} bytes")
        if not 1 <= lifetime <= 65535:
            raise ValueError("lifetime must be between 1 and 65535 seconds")
        self._lifetime = int(lifetime)
        self._clock = clock
        if nonce is None:
            # Nonces must be unique, not secret (the MAC covers them): splitmix64 repeats no
            # output within one stream, and forked children are reseeded (tcpdispatch.rng). The
            # generator is held: the fork hook reseeds live ones only.
            rng = self._rng = rng or default_generator()
            nonce = rng.next64 if isinstance(rng, SplitMixRandom) else partial(rng.getrandbits, 64)
        self._nonce = nonce
        self._mac = _Mac(secret)
        # gateway-id tuple -> encoded "u8 n | ids" (the dispatcher repeats the same few sets)
        self._ids: dict[tuple[str, ...], bytes] = {}

    @property
    def lifetime(self) -> int:
        """Seconds a ticket stays valid after issue."""
        return self._lifetime

    def _encode_ids(self, key: tuple[str, ...]) -> bytes:
        if not 1 <= len(key) <= 255:
            raise ValueError("a ticket names 1 to 255 gateways")
        ids = _LEN[len(key)] + b"".join([pack_id(g) for g in key])
        if len(self._ids) >= self._CACHE_MAX:
            self._ids.clear()
        self._ids[key] = ids
        return ids

    def issue(self, gateway_ids: Sequence[str], client_id: str) -> str:
        """A ticket valid at every gateway in ``gateway_ids`` for ``client_id``.

        Raises ValueError for 0 or more than 255 gateways, an id longer than
        255 UTF-8 bytes, or a ticket longer than MAX_TICKET characters.
        """
        key = gateway_ids if type(gateway_ids) is tuple else tuple(gateway_ids)
        ids = self._ids.get(key) or self._encode_ids(key)
        cid = client_id.encode("utf-8")
        if len(cid) > 255:
            raise ValueError(f"client id longer than 255 bytes: {client_id[:40]!r}")
        head = _HEAD_ISSUE.pack(int(self._clock()), self._lifetime, self._nonce())
        signed = PREFIX + _b64(b"".join((head, ids, _LEN[len(cid)], cid)))
        ticket = signed + b"." + self._mac.b64(signed)
        if len(ticket) > MAX_TICKET:
            raise ValueError(f"ticket of {len(ticket)} characters exceeds {MAX_TICKET}")
        return ticket.decode("ascii")


def _full() -> TicketError:
    return TicketError(
        ErrorCode.OVERLOADED, "replay guard is full (too many live tickets); retry later"
    )


def _forged(reason: str) -> TicketError:
    return TicketError(ErrorCode.TICKET_FORGED, reason)


class TicketVerifier:
    """Verifies tickets (gateway side).

    ``secrets`` are tried in order (rotation: new first, old after).
    ``leeway`` (seconds) tolerates clock skew between dispatcher and gateway
    hosts, on both the expiry and the issue time.
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
        self._macs = [_Mac(s) for s in self._secrets]
        self._leeway = leeway
        self._clock = clock

    def verify(self, ticket: Any, gateway_id: str, client_id: str | None = None) -> TicketClaims:
        """Return the claims, or raise TicketError with the precise refusal code.

        Checks, in order: length (MALFORMED_FRAME past MAX_TICKET, as in HELLO),
        format, MAC and payload layout (TICKET_FORGED: no gateway, lifetime 0), expiry
        (TICKET_EXPIRED), issue time not in the future (TICKET_FORGED), gateway
        (TICKET_WRONG_GATEWAY), client id when given (TICKET_WRONG_CLIENT).
        Never raises anything but TicketError, whatever ``ticket`` holds.
        """
        if not isinstance(ticket, str):
            raise _forged("ticket is not a string")
        if len(ticket) > MAX_TICKET:
            # The same code a gateway sends when HELLO carries one (the frame check comes first).
            raise TicketError(
                ErrorCode.MALFORMED_FRAME, f"ticket is longer than {MAX_TICKET} characters"
            )
        try:
            raw = ticket.encode("ascii")
        except UnicodeEncodeError:
            raise _forged("ticket is not ASCII") from None
        signed, dot, mac_b64 = raw.rpartition(b".")
        if not dot or not signed.startswith(PREFIX) or len(mac_b64) != MAC_B64_SIZE:
            raise _forged("ticket has an unknown format")
        # Comparing the canonical base64 form rejects every other spelling of the same MAC.
        if not any(hmac.compare_digest(mac_b64, m.b64(signed)) for m in self._macs):
            raise _forged("ticket signature does not match")
        claims = _parse(signed[len(PREFIX) :])
        now = self._clock()
        if now > claims.expires_at + self._leeway:
            raise TicketError(
                ErrorCode.TICKET_EXPIRED, f"ticket expired {now - claims.expires_at:.0f}s ago"
            )
        if claims.issued_at > now + self._leeway:
            raise _forged("ticket issued in the future (clock skew?)")
        if gateway_id not in claims.gateway_ids:
            raise TicketError(
                ErrorCode.TICKET_WRONG_GATEWAY,
                f"ticket is for {','.join(claims.gateway_ids)}, not {gateway_id}",
            )
        if client_id is not None and client_id != claims.client_id:
            raise TicketError(
                ErrorCode.TICKET_WRONG_CLIENT, "ticket was issued to another client id"
            )
        return claims


def _parse(payload_b64: bytes) -> TicketClaims:
    """Decode a payload whose MAC already checked out (so malformed means a bug or old key)."""
    try:
        payload = _unb64(payload_b64)
        issued, lifetime, nonce = _HEAD.unpack_from(payload)
        if lifetime == 0:
            raise ValueError("lifetime 0")  # the layout allows 1..65535
        pos = _HEAD.size
        n = payload[pos]
        if n == 0:
            raise ValueError("no gateway")  # 1..255 gateway ids
        pos += 1
        ids = []
        for _ in range(n + 1):
            ln = payload[pos]
            end = pos + 1 + ln
            if end > len(payload):
                raise ValueError("short id")
            ids.append(payload[pos + 1 : end].decode("utf-8"))
            pos = end
        if pos != len(payload):
            raise ValueError("trailing bytes")
    except (struct.error, IndexError, ValueError, binascii.Error):  # UnicodeError is a ValueError
        raise _forged("ticket payload is malformed") from None
    return TicketClaims(tuple(ids[:-1]), ids[-1], issued, issued + lifetime, nonce)


class NonceCache:
    """Remembers admitted ticket nonces until their tickets expire (replay guard).

    A fixed-size open-addressing table of ``slots`` entries (a power of two),
    each ``u64 nonce`` plus ``u32 forget_at`` (unix seconds, rounded up from
    ``expires_at + leeway``; 0 marks a never-used slot), so memory is fixed:
    12 bytes per slot, 3 MiB for the default 2**18. Use a leeway at least the
    verifier's, or an expired-but-tolerated ticket could be replayed.

    A nonce hashes to a home slot; linear probing looks for it, and stores
    it, within the ``PROBES`` slots from there. An expired entry is free: the
    probe that meets it reuses it, and every admission sweeps the next
    ``SWEEP`` slots of the table and deletes expired entries with Knuth's
    algorithm R (later entries of the run move back), so there are no
    tombstones and a lookup stops at the first empty slot. One slot always
    stays empty. When a nonce's window holds only live entries, or the table
    is one slot from full, :meth:`admit` refuses with ``OVERLOADED`` rather
    than admit a ticket it could not remember. Keep the live entries
    (admissions per second x (lifetime + leeway)) under half of ``slots``:
    refusals are then under 1 in 10,000 (simulated; 0.5% at 70%, 2% at 80%).

    ``buffer`` (at least :meth:`nbytes` bytes, zero-filled) and ``lock`` let
    several processes share one table: pass a region of a ``MAP_SHARED`` mmap
    created before forking and a ``multiprocessing.Lock``
    (see ``tcpdispatch.gateway.shm.NodeCounters.nonce_cache``). Without them
    the table is private to the process and unlocked.
    """

    SLOTS = 1 << 18
    PROBES = 32
    SWEEP = 8
    _GOLDEN = 0x9E3779B97F4A7C15  # Fibonacci hashing: spreads sequential nonces too

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        leeway: float = 5.0,
        slots: int = SLOTS,
        buffer: Any = None,
        lock: Any = None,
    ) -> None:
        if slots < 2 or slots & (slots - 1):
            raise ValueError("slots must be a power of two >= 2")
        if buffer is None:
            buffer = mmap.mmap(-1, self.nbytes(slots), flags=mmap.MAP_PRIVATE)
        view = memoryview(buffer).cast("B")
        if len(view) < self.nbytes(slots):
            raise ValueError(f"buffer holds {len(view)} bytes, {self.nbytes(slots)} needed")
        self._buffer = buffer  # keep the mapping alive as long as the views
        self._keys = view[: 8 * slots].cast("Q")
        self._exp = view[8 * slots : 12 * slots].cast("I")
        # header: [0] where the clean-up sweep is, [1] non-empty slots (always < slots),
        # [2] the second of the last full clean-up
        self._hdr = view[12 * slots : 12 * slots + 24].cast("Q")
        self._slots = slots
        self._mask = slots - 1
        self._shift = 64 - slots.bit_length() + 1
        self._probes = min(self.PROBES, slots)
        self._sweep = min(self.SWEEP, slots)  # both powers of two: a block never wraps
        self._clock = clock
        self._leeway_s = math.ceil(leeway)  # whole seconds: u32 slots, never forget early
        self._lock = lock

    @staticmethod
    def nbytes(slots: int = SLOTS) -> int:
        """Bytes of buffer a table of ``slots`` entries needs."""
        return 12 * slots + 24

    @property
    def slots(self) -> int:
        return self._slots

    def _home(self, n: int) -> int:
        return ((n * self._GOLDEN) & 0xFFFFFFFFFFFFFFFF) >> self._shift

    def __len__(self) -> int:
        """Live entries (a scan of the whole table: for tests and diagnostics)."""
        now = self._clock()
        return sum(1 for e in self._exp if e >= now)

    def __contains__(self, nonce: object) -> bool:
        if not isinstance(nonce, bytes) or len(nonce) != 8:
            return False
        n = _NONCE_INT(nonce)[0]
        now = self._clock()
        keys, exp, mask = self._keys, self._exp, self._mask
        i = self._home(n)
        for _ in range(self._probes):
            e = exp[i]
            if e == 0:
                return False
            if e >= now and keys[i] == n:
                return True
            i = (i + 1) & mask
        return False

    def prune(self) -> int:
        """Rebuild the table without expired entries; returns how many were dropped.

        Not needed in operation (admissions delete expired entries as they
        go): a full scan for tests and diagnostics. Takes the lock for the whole rebuild.
        """
        if self._lock is None:
            return self._prune()
        with self._lock:
            return self._prune()

    def _prune(self) -> int:
        now = self._clock()
        keys, exp = self._keys, self._exp
        live = [(keys[i], e) for i, e in enumerate(exp) if e >= now]
        used = sum(1 for e in exp if e)
        exp[:] = memoryview(bytes(4 * self._slots)).cast("I")
        self._hdr[1] = 0
        for n, e in live:
            self._insert(n, e, now)
        return used - len(live)

    def admit(self, claims: TicketClaims) -> None:
        """Record the nonce, or raise TICKET_REPLAYED if it was admitted before.

        Raises TicketError(OVERLOADED) when the table has no free slot for it
        (nothing is recorded then).
        """
        forget = min(claims.expires_at + self._leeway_s or 1, 0xFFFFFFFF)
        if self._lock is None:
            self._insert(_NONCE_INT(claims.nonce)[0], forget, self._clock())
        else:
            with self._lock:
                self._insert(_NONCE_INT(claims.nonce)[0], forget, self._clock())

    def _insert(self, n: int, forget: int, now: float) -> None:
        keys, exp, mask = self._keys, self._exp, self._mask
        i = ((n * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> self._shift  # _home(n), inlined
        free = -1
        for _ in range(self._probes):
            e = exp[i]
            if e == 0:  # end of the run: n is nowhere further
                break
            if e < now:  # expired: free for reuse, but n may still lie beyond it
                if free < 0:
                    free = i
            elif keys[i] == n:
                raise TicketError(
                    ErrorCode.TICKET_REPLAYED, "ticket was already used at this gateway"
                )
            i = (i + 1) & mask
        else:  # the whole window was searched and holds no empty slot
            if free < 0:
                raise _full()
        if free < 0:
            hdr = self._hdr
            if hdr[1] + 2 > self._slots:  # keep one slot empty: _delete stops there
                # Full of entries, maybe expired ones no probe or sweep reached yet:
                # clear them all, at most once a second (it costs a pass over the table).
                if hdr[2] == int(now):
                    raise _full()
                hdr[2] = int(now)
                self._delete_expired(0, self._slots, now)
                self._insert(n, forget, now)
                return
            hdr[1] += 1
            free = i
        keys[free] = n
        exp[free] = forget
        # Sweep a block of slots per admission, so expired entries that no lookup walks
        # over still go: the whole table is swept every slots / SWEEP admissions.
        hdr = self._hdr
        c = hdr[0]
        self._delete_expired(c, self._sweep, now)
        hdr[0] = (c + self._sweep) & mask

    def _delete_expired(self, start: int, count: int, now: float) -> None:
        """Delete the expired entries of slots start .. start + count - 1 (no wrap)."""
        exp = self._exp
        for off, e in enumerate(exp[start : start + count].tolist()):
            if e and e < now:
                i = start + off
                e = exp[i]  # re-read: the delete before may have moved another entry here
                for _ in range(self._slots):
                    if not e or e >= now:
                        break
                    self._delete(i)
                    e = exp[i]

    def _delete(self, i: int) -> None:
        """Empty slot i, moving later entries of its run back so none is cut off from its home.

        (Knuth's algorithm R for linear probing: no tombstones, so lookups stop
        at the first empty slot.) Another slot is always empty and is never
        filled here, so the scan ends within ``slots`` steps.
        """
        keys, exp, mask, shift = self._keys, self._exp, self._mask, self._shift
        exp[i] = 0
        self._hdr[1] -= 1
        j = i
        for _ in range(self._slots):
            j = (j + 1) & mask
            e = exp[j]
            if e == 0:
                return
            k = ((keys[j] * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> shift
            # The entry at j stays if its home k lies cyclically in (i, j].
            if (i < k <= j) if i <= j else (i < k or k <= j):
                continue
            keys[i] = keys[j]
            exp[i] = e
            exp[j] = 0
            i = j
