"""Reconnect backoff settings: the client's backoff and the dispatcher's ``[retry]`` hints.

One class for both, so the defaults and ranges are written once: the dispatcher refuses a
``[retry]`` value outside a range, and the client clamps a hint from the network into the
same range (:meth:`BackoffConfig.clamped`). The defaults are gRPC's connection-backoff ones.
The keys in the config file and in a dispatch answer's ``retry`` object end in ``_s``
(``initial_s``, ``max_s``); the SDK's field names do not (``BackoffConfig(initial=0.5)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from tcpdispatch.settings import SettingError, setting, settings_of


@dataclass(frozen=True, slots=True)
class BackoffConfig:
    """Reconnect backoff parameters plus when to forget failures (``reset_after``)."""

    initial: float = setting(
        1.0, key="initial_s", ge=0.05, le=60, unit="s", help="first reconnect delay"
    )
    multiplier: float = setting(1.6, ge=1, le=10, help="backoff growth per attempt")
    jitter: float = setting(0.2, ge=0, le=1, help="+- random fraction of each delay")
    max: float = setting(120.0, key="max_s", ge=0.05, le=3600, unit="s", help="the longest delay")
    # Client only (not a hint): a connection up this long resets the backoff.
    reset_after: float = setting(
        10.0, key="", ge=0, le=3600, unit="s", help="a connection up this long resets the backoff"
    )

    def clamped(self) -> BackoffConfig:
        """A copy with every field forced into its declared range (hints come from the network)."""
        values: dict[str, float] = {}
        for name, spec in settings_of(BackoffConfig):
            assert spec.ge is not None and spec.le is not None
            values[name] = min(max(getattr(self, name), spec.ge), spec.le)
        values["max"] = max(values["max"], values["initial"])
        return BackoffConfig(**values)

    def with_hints(self, retry: Mapping[str, Any] | None) -> BackoffConfig:
        """Apply the dispatcher's ``retry`` hints (initial_s, multiplier, jitter, max_s)."""
        if not isinstance(retry, Mapping):
            return self
        changes: dict[str, float] = {}
        for name, spec in settings_of(BackoffConfig):
            value = retry.get(spec.key) if spec.key else None
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                changes[name] = float(value)
        return replace(self, **changes).clamped() if changes else self

    def as_hints(self) -> dict[str, float]:
        """The ``retry`` object of a dispatch answer (the keys :meth:`with_hints` reads)."""
        return {
            spec.key: getattr(self, name) for name, spec in settings_of(BackoffConfig) if spec.key
        }

    def check(self) -> None:
        """Refuse a value outside its range (SettingError naming the key): for a config file."""
        for name, spec in settings_of(BackoffConfig):
            spec.check(getattr(self, name))
        if self.max < self.initial:
            raise SettingError(
                "max_s", f"must be >= initial_s ({self.initial!r}), got {self.max!r}"
            )
