"""Health-check settings and check specifications (pure: no I/O)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from tcpdispatch.health.overload import OverloadThresholds

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
    watch: bool = True  # http checks: ask for a status stream first (polling if not offered)
    # Overload protection by performance (health/overload.py); enter / exit thresholds.
    overload: bool = True  # stop handing out gateways that report or show collapse
    overload_busy: float = 0.9  # busiest worker's event-loop busy fraction (0..1 of one core)
    overload_busy_exit: float = 0.7
    overload_lag: float = 0.1  # busiest worker's event-loop lag, seconds
    overload_lag_exit: float = 0.03
    overload_latency: float = 0.25  # status tick lateness (watch) or answer time (poll), seconds
    overload_latency_exit: float = 0.1
    overload_samples: int = 2  # consecutive late statuses before latency alone counts

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
        for name in ("watch", "overload"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")  # noqa: TRY004
        for name, top in (("overload_busy", 1.0), ("overload_lag", 60.0), ("overload_latency", 60.0)):
            enter, leave = getattr(self, name), getattr(self, name + "_exit")
            for key, value in ((name, enter), (name + "_exit", leave)):
                if not _is_number(value) or not 0 < value <= top:
                    raise ValueError(f"{key} must be a number > 0 and <= {top:g}, got {value!r}")
            if leave > enter:
                raise ValueError(f"{name} ({enter!r}) must not be below {name}_exit ({leave!r})")
        n = self.overload_samples
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 100:
            raise ValueError(f"overload_samples must be an integer between 1 and 100, got {n!r}")

    @property
    def overload_thresholds(self) -> OverloadThresholds:
        """The overload enter/exit thresholds as the pure judge takes them."""
        return OverloadThresholds(
            busy=self.overload_busy, busy_exit=self.overload_busy_exit, lag=self.overload_lag,
            lag_exit=self.overload_lag_exit, latency=self.overload_latency,
            latency_exit=self.overload_latency_exit, samples=self.overload_samples)

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
        raise ValueError(f"check must be a string, got {type(spec).__name__}")  # noqa: TRY004 (config errors are ValueError)
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
