"""Health-check settings and check specifications (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from tcpdispatch.health.overload import OverloadThresholds
from tcpdispatch.settings import SettingError, setting, validate

CHECK_KINDS = ("http", "agent", "tcp", "push")  # the kinds of CheckSpec


@dataclass(frozen=True)
class HealthSettings:
    """How gateways are checked, the ``[health]`` config section; the defaults detect a crash
    within 1 s and a hang within 2 s (SettingError, a ValueError, names a bad field).

    See docs/health.md for the arithmetic behind the defaults and their probe cost.
    """

    interval: float = setting(
        0.25, gt=0, unit="s", help="seconds between probe starts of one gateway"
    )
    timeout: float = setting(0.5, gt=0, unit="s", help="per probe")
    rise: int = setting(2, ge=1, le=1000, help="consecutive successes to come up")
    fall: int = setting(2, ge=1, le=1000, help="consecutive failures to go down")
    jitter: float = setting(0.1, ge=0, lt=1, help="+- fraction of `interval`, random per probe")
    ttl: float = setting(
        3.0, gt=0, unit="s", help="push mode: a gateway whose heartbeats stop this long is down"
    )
    watch: bool = setting(
        True,
        help="`http://` checks: keep one status stream per gateway "
        "(polling when the other side does not stream)",
    )
    # Overload protection by performance (health/overload.py); enter / exit thresholds.
    overload: bool = setting(True, help="stop handing out gateways whose performance collapses")
    overload_busy: float = setting(
        0.9,
        gt=0,
        le=1,
        help="busiest worker's event-loop busy fraction (of one core) to enter overload",
    )
    overload_busy_exit: float = setting(0.7, gt=0, le=1, help="... to leave overload")
    overload_lag: float = setting(
        0.1, gt=0, le=60, unit="s", help="busiest worker's event-loop lag to enter"
    )
    overload_lag_exit: float = setting(0.03, gt=0, le=60, unit="s", help="... to leave")
    overload_latency: float = setting(
        0.25,
        gt=0,
        le=60,
        unit="s",
        help="status tick lateness (watch) or answer time (poll) to enter",
    )
    overload_latency_exit: float = setting(0.1, gt=0, le=60, unit="s", help="... to leave")
    overload_samples: int = setting(
        2, ge=1, le=100, help="consecutive late statuses before latency alone counts"
    )

    def __post_init__(self) -> None:
        validate(self)
        for name in ("overload_busy", "overload_lag", "overload_latency"):
            enter, leave = getattr(self, name), getattr(self, name + "_exit")
            if leave > enter:
                raise SettingError(
                    name, f"must not be below {name}_exit ({leave!r}), got {enter!r}"
                )

    @property
    def overload_thresholds(self) -> OverloadThresholds:
        """The overload enter/exit thresholds as the pure judge takes them."""
        return OverloadThresholds(
            busy=self.overload_busy,
            busy_exit=self.overload_busy_exit,
            lag=self.overload_lag,
            lag_exit=self.overload_lag_exit,
            latency=self.overload_latency,
            latency_exit=self.overload_latency_exit,
            samples=self.overload_samples,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> HealthSettings:
        """Build from a config table (e.g. TOML ``[health]``); ValueError names the bad key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{unknown[0]}: unknown health setting (known: {', '.join(sorted(known))})"
            )
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
        return (
            self.max_interval
            + (self.fall - 1) * max(self.timeout, self.max_interval)
            + self.timeout
        )

    def worst_recovery(self) -> float:
        """Upper bound (s) from a gateway answering again to `up`, ignoring probe RTT."""
        return self.rise * self.max_interval


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
        raise ValueError(
            "check is empty; expected http://HOST:PORT/PATH, "
            "agent://HOST:PORT, tcp://HOST:PORT or push"
        )
    if text.lower() == "push":
        return CheckSpec(kind="push")
    if "://" not in text:
        raise ValueError(
            f"check {spec!r} has no scheme; expected http://, agent://, tcp:// or push"
        )
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"check {spec!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "agent", "tcp"):
        raise ValueError(
            f"check {spec!r}: unknown scheme {parts.scheme!r}; "
            "expected http, https, agent, tcp or push"
        )
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
