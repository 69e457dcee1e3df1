"""A health-result sink for prober tests (importable as ``health_recorder``)."""

from __future__ import annotations

import time
from collections import defaultdict

from tcpdispatch.health import HealthSettings, HealthState, ProbeResult


class Recorder:
    """on_result sink: every result with its time, and a HealthState per gateway."""

    def __init__(self, settings: HealthSettings) -> None:
        self.settings = settings
        self.calls: dict[str, list[tuple[float, ProbeResult]]] = defaultdict(list)
        self.states: dict[str, HealthState] = {}
        self.changed_at: dict[str, list[tuple[float, bool]]] = defaultdict(list)

    def __call__(self, gid: str, result: ProbeResult) -> None:
        now = time.monotonic()
        self.calls[gid].append((now, result))
        state = self.states.setdefault(gid, HealthState(self.settings.rise, self.settings.fall))
        if state.observe(result.ok):
            self.changed_at[gid].append((now, state.up))

    def up(self, gid: str) -> bool:
        return gid in self.states and self.states[gid].up

    def down_since(self, gid: str, t0: float) -> float | None:
        """Seconds from t0 to the first down transition after t0."""
        for when, up in self.changed_at[gid]:
            if when >= t0 and not up:
                return when - t0
        return None
