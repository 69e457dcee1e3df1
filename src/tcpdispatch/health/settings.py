"""Health-check settings and check specifications (pure: no I/O)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

CHECK_KINDS = ("http", "agent", "tcp", "push")


@dataclass(frozen=True)
class HealthSettings:
    """How gateways are checked; the defaults detect a crash within 1 s and a hang within 2 s.

    See docs/health.md for the arithmetic behind the defaults and their probe cost.
    """

    interval: float = 0.25  # seconds between probe starts for one gateway
    timeout: float = 0.5  # per probe
    rise: int = 2  # consecutive successes to come up
    fall: int = 2  # consecutive failures to go down
    jitter: float = 0.1  # +- fraction of interval, random per probe
    ttl: float = 3.0  # push mode: heartbeats missing this long -> down

    def __post_init__(self) -> None:
        for name in ("interval", "timeout", "ttl"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        for name in ("rise", "fall"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
                raise ValueError(f"{name} must be an integer between 1 and 1000, got {value!r}")
        if not _is_number(self.jitter) or not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be a number in [0, 1), got {self.jitter!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> HealthSettings:
        """Build from a config table (e.g. TOML ``[health]``); ValueError names the bad key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown health setting (known: {', '.join(sorted(known))})")
        return cls(**dict(data))

    @property
    def max_interval(self) -> float:
        """Longest gap between two probe starts while probes are fast."""
        return self.interval * (1 + self.jitter)

    def worst_refused_detection(self) -> float:
        """Upper bound (s) from a crash (probes fail at once) to `down`, ignoring probe RTT."""
        return self.fall * self.max_interval

    def worst_hung_detection(self) -> float:
        """Upper bound (s) from a hang or black hole (probes time out) to `down`.

        The first failing probe starts at most ``max_interval`` after the failure and each
        lasts ``timeout``; probes never overlap, so when ``timeout`` exceeds the interval the
        failing probes run back to back.
        """
        return self.max_interval + (self.fall - 1) * max(self.timeout, self.max_interval) + self.timeout

    def worst_recovery(self) -> float:
        """Upper bound (s) from a gateway answering again to `up`, ignoring probe RTT."""
        return self.rise * self.max_interval


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class CheckSpec:
    """How one gateway is checked: ``http`` uses ``url``; ``agent``/``tcp`` use host and port."""

    kind: str  # "http" | "agent" | "tcp" | "push"
    url: str | None = None  # http
    host: str | None = None  # agent / tcp
    port: int | None = None

    def __str__(self) -> str:
        if self.kind == "http":
            return str(self.url)
        if self.kind == "push":
            return "push"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{self.kind}://{host}:{self.port}"


def parse_check(spec: str) -> CheckSpec:
    """Parse ``http(s)://h:p/path``, ``agent://h:p``, ``tcp://h:p`` or ``push``.

    Raises ValueError with the reason.
    """
    if not isinstance(spec, str):
        raise ValueError(f"check must be a string, got {type(spec).__name__}")
    text = spec.strip()
    if not text:
        raise ValueError("check is empty; expected http://HOST:PORT/PATH, agent://HOST:PORT, tcp://HOST:PORT or push")
    if text.lower() == "push":
        return CheckSpec(kind="push")
    if "://" not in text:
        raise ValueError(f"check {spec!r} has no scheme; expected http://, agent://, tcp:// or push")
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"check {spec!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "agent", "tcp"):
        raise ValueError(f"check {spec!r}: unknown scheme {parts.scheme!r}; expected http, https, agent, tcp or push")
    if not parts.hostname:
        raise ValueError(f"check {spec!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"check {spec!r}: credentials in the URL are not supported")
    if port == 0:
        raise ValueError(f"check {spec!r}: port 0 is not a valid destination")
    if scheme in ("http", "https"):
        if parts.fragment:
            raise ValueError(f"check {spec!r}: a URL fragment makes no sense here")
        return CheckSpec(kind="http", url=text)
    if port is None:
        raise ValueError(f"check {spec!r} needs a port ({scheme}://HOST:PORT)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"check {spec!r}: {scheme}:// takes only HOST:PORT, no path or query")
    return CheckSpec(kind=scheme, host=parts.hostname, port=port)
