"""The client's pure decision layer: backoff, failure memory, dispatch answers.

Nothing here does I/O or reads the real clock or global randomness: time comes
from an injected ``clock`` and randomness from an injected ``rng``, so every
rule is tested deterministically (tests/client/test_policy.py).

Backoff follows gRPC's connection-backoff document: the delay grows from
``initial`` by ``multiplier`` up to ``max`` and is jittered by +-``jitter``.
One addition: the first retry after the loss of a *stable* connection (up for
at least ``reset_after``) is drawn with full jitter from ``[0, initial)``. When
a gateway dies, all its clients lose their connection in the same millisecond;
full jitter spreads their return to the dispatcher over one second instead of
landing them all at once.
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tcpdispatch.aio import parse_hostport
from tcpdispatch.backoff import BackoffConfig
from tcpdispatch.errors import DispatchError

Clock = Callable[[], float]


# -- backoff -----------------------------------------------------------------
class Backoff:
    """Consecutive-failure counter that turns failures into delays.

    ``failure_delay`` for a failed connect round; ``loss_delay`` when an open
    connection ends. A connection that lived less than ``reset_after`` counts
    as a failure, so a gateway that accepts and drops at once cannot make the
    client loop fast.
    """

    def __init__(
        self, config: BackoffConfig | None = None, rng: random.Random | None = None
    ) -> None:
        self.config = (config or BackoffConfig()).clamped()
        self.rng = rng or random.Random()
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def base(self, failures: int) -> float:
        """The un-jittered delay after ``failures`` consecutive failures (>= 1)."""
        c = self.config
        exponent = max(failures - 1, 0)
        # Avoid float overflow for very long outages: cap the exponent first.
        if exponent > 200:
            return c.max
        return min(c.initial * c.multiplier**exponent, c.max)

    def failure_delay(self, hint: float | None = None) -> float:
        """Record one more failure; the delay before the next attempt.

        ``hint`` (Retry-After, RECONNECT delay) is a floor: the client never
        comes back earlier than it was asked to.
        """
        self.failures += 1
        base = self.base(self.failures)
        j = self.config.jitter
        delay = base * (1 + self.rng.uniform(-j, j))
        if hint is not None and hint > 0:
            delay = max(delay, hint * (1 + 0.1 * self.rng.random()))
        return delay

    def loss_delay(self, up_for: float, hint: float | None = None) -> float:
        """Delay before reconnecting after a connection that was open ``up_for`` seconds ended."""
        if up_for < self.config.reset_after:
            return self.failure_delay(hint)
        self.failures = 0
        if hint is not None and hint > 0:
            return hint * (1 + 0.1 * self.rng.random())
        return self.rng.uniform(0.0, self.config.initial)


# -- failure memory ----------------------------------------------------------
@dataclass(slots=True)
class _Strike:
    count: int
    until: float


class FailureMemory:
    """Per-address failure memory with a growing ban time.

    The n-th consecutive failure bans the address for
    ``min(base * factor**(n-1), max_ban)`` seconds; a success forgets it.
    """

    def __init__(
        self, clock: Clock, base: float = 1.0, factor: float = 2.0, max_ban: float = 60.0
    ) -> None:
        self.clock = clock
        self.base = base
        self.factor = factor
        self.max_ban = max_ban
        self._strikes: dict[str, _Strike] = {}

    def failed(self, key: str) -> float:
        """Record a failure; returns the ban length."""
        strike = self._strikes.get(key)
        count = strike.count + 1 if strike else 1
        ban = min(self.base * self.factor ** min(count - 1, 60), self.max_ban)
        self._strikes[key] = _Strike(count, self.clock() + ban)
        return ban

    def succeeded(self, key: str) -> None:
        self._strikes.pop(key, None)

    def banned(self, key: str) -> bool:
        strike = self._strikes.get(key)
        return strike is not None and strike.until > self.clock()

    def failures(self, key: str) -> int:
        strike = self._strikes.get(key)
        return strike.count if strike else 0

    def order(self, keys: Iterable[str]) -> list[str]:
        """Keys not banned (in their given order), then banned ones, soonest-unbanned first."""
        keys = list(dict.fromkeys(keys))
        free = [k for k in keys if not self.banned(k)]
        banned = sorted((k for k in keys if self.banned(k)), key=lambda k: self._strikes[k].until)
        return free + banned

    def usable(self, keys: Iterable[str]) -> list[str]:
        """Keys not banned right now, in their given order."""
        return [k for k in keys if not self.banned(k)]


# -- addresses and dispatch answers -------------------------------------------
@dataclass(frozen=True, slots=True)
class Endpoint:
    """One gateway to try: where, the ticket to present ("" for none) and its public key.

    ``key`` is the gateway's static public key text (docs/protocol.md section 9), from the
    dispatcher's answer or pinned in a static entry; "" when unknown.
    """

    host: str
    port: int
    id: str = ""
    ticket: str = ""
    source: str = "dispatcher"  # dispatcher | cache | static
    key: str = ""

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def label(self) -> str:
        """The gateway id when known, else its address."""
        return self.id or self.address


@dataclass(frozen=True, slots=True)
class DispatchAnswer:
    """A parsed ``200`` answer of ``GET /v1/dispatch``."""

    gateway: Endpoint
    alternates: tuple[Endpoint, ...] = ()
    heartbeat_s: float | None = None
    retry: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [self.gateway, *self.alternates]

    @classmethod
    def from_json(cls, obj: Any, source: str = "dispatcher") -> DispatchAnswer:
        """Parse and validate; raises DispatchError naming what is wrong."""
        if not isinstance(obj, dict):
            raise DispatchError("dispatch answer is not a JSON object")
        ticket = obj.get("ticket", "")
        if not isinstance(ticket, str):
            raise DispatchError("dispatch answer: 'ticket' is not a string")
        gateway = _endpoint(obj.get("gateway"), ticket, source, "gateway")
        alts_raw = obj.get("alternates") or []
        if not isinstance(alts_raw, list):
            raise DispatchError("dispatch answer: 'alternates' is not a list")
        alternates = tuple(
            _endpoint(
                a,
                a.get("ticket", ticket) if isinstance(a, dict) else ticket,
                source,
                f"alternates[{i}]",
            )
            for i, a in enumerate(alts_raw)
        )
        hb = obj.get("heartbeat_s")
        heartbeat = (
            float(hb)
            if isinstance(hb, (int, float)) and not isinstance(hb, bool) and hb > 0
            else None
        )
        retry_raw = obj.get("retry")
        retry: dict[str, Any] = retry_raw if isinstance(retry_raw, dict) else {}
        return cls(gateway, alternates, heartbeat, retry, obj)

    def with_source(self, source: str) -> DispatchAnswer:
        return replace(
            self,
            gateway=replace(self.gateway, source=source),
            alternates=tuple(replace(a, source=source) for a in self.alternates),
        )


def _endpoint(obj: Any, ticket: Any, source: str, where: str) -> Endpoint:
    if not isinstance(obj, dict):
        raise DispatchError(f"dispatch answer: {where} is not an object")
    host, port, gid = obj.get("host"), obj.get("port"), obj.get("id", "")
    if not isinstance(host, str) or not host:
        raise DispatchError(f"dispatch answer: {where}.host is missing")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise DispatchError(f"dispatch answer: {where}.port is not a port number")
    if not isinstance(ticket, str):
        raise DispatchError(f"dispatch answer: {where}.ticket is not a string")
    key = obj.get("key", "")
    if not isinstance(key, str) or (key and not _KEY_TEXT.fullmatch(key)):
        raise DispatchError(f"dispatch answer: {where}.key is not a gateway public key")
    return Endpoint(host, port, str(gid), ticket, source, key)


# 32 bytes in URL-safe base64 without padding (tcpdispatch.secure.keys checks it fully).
_KEY_TEXT = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


def parse_static(addresses: Iterable[str]) -> list[Endpoint]:
    """``["host:port", "KEY@host:port", ...]`` as ticketless static endpoints.

    ``KEY@`` pins the gateway's public key (43 characters, as ``tcpdispatch keygen``
    prints it), so the client connects encrypted and refuses an impostor even when the
    address was hijacked. ValueError names a bad entry.
    """
    out = []
    for text in addresses:
        text = text.strip()
        if text:
            key, at, addr = text.rpartition("@")
            if at and not _KEY_TEXT.fullmatch(key):
                raise ValueError(f"fallback address {text!r}: {key!r} is not a gateway public key")
            host, port = parse_hostport(addr, what="fallback address")
            out.append(Endpoint(host, port, "", "", "static", key))
    return out


def parse_retry_after(value: str | None, now: float, default: float = 1.0) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date)."""
    if not value:
        return default
    value = value.strip()
    try:
        return min(max(float(value), 0.0), 3600.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return default
    return min(max(when - now, 0.0), 3600.0)


def order_candidates(
    endpoints: Sequence[Endpoint],
    memory: FailureMemory,
    *,
    shuffle: bool = False,
    rng: random.Random | None = None,
) -> list[Endpoint]:
    """Race order: unbanned addresses first (shuffled in static random mode), banned last.

    Duplicates (same address twice from different sources) keep their first
    occurrence, so a dispatcher ticket wins over a stale cached one.
    """
    unique: dict[str, Endpoint] = {}
    for ep in endpoints:
        unique.setdefault(ep.address, ep)
    keys = list(unique)
    if shuffle:
        (rng or random.Random()).shuffle(keys)
    return [unique[k] for k in memory.order(keys)]
