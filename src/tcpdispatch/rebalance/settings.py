"""The ``[rebalance]`` config section: one frozen dataclass, its defaults and its ranges."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MODES = ("auto", "manual", "off")

# name -> (low, high): the one place the numeric ranges live (config.py reads them).
RANGES: dict[str, tuple[float, float]] = {
    "interval_s": (0.05, 60.0),
    "rel_threshold": (0.0, 10.0),
    "abs_threshold": (0, 10_000_000),
    "stop_within": (0.0, 1.0),
    "moves_per_s": (0.1, 1_000_000.0),
    "per_donor_per_s": (0.1, 1_000_000.0),
    "min_session_age_s": (0.0, 86_400.0),
    "settle_s": (0.0, 600.0),
    "breaker_cooldown_s": (0.0, 3600.0),
    "max_error_rate": (0.0, 1.0),
    "lost_ratio": (0.0, 1.0),
    "lease_ttl_s": (0.5, 600.0),
}


@dataclass(frozen=True, slots=True)
class RebalanceSettings:
    """Pacing, thresholds and safety of rebalancing (ValueError names the bad field).

    Defaults follow EMQX's evacuation/rebalance defaults where they exist
    (``rel_conn_threshold`` 1.1, ``abs_conn_threshold`` 1000 is for huge nodes, we use
    50; ``conn-evict-rate`` 500/s fleet-wide is ours split 200/s fleet, 100/s per donor).
    """

    mode: str = "auto"  # auto: start rounds by itself | manual: only when triggered | off
    interval_s: float = 1.0  # decision tick; each donor's order is spread over one tick
    rel_threshold: float = 0.10  # a donor holds more than target x (1 + rel_threshold) ...
    abs_threshold: int = 50  # ... and more than target + abs_threshold (both must hold)
    stop_within: float = 0.01  # hysteresis: a donor sheds until within this share of its target
    moves_per_s: float = 200.0  # fleet-wide budget of RECONNECTs per second
    per_donor_per_s: float = 100.0  # most RECONNECTs per second asked of one donor
    min_session_age_s: float = 60.0  # only sessions at least this old are asked to move
    settle_s: float = 3.0  # after an order's window: time for its clients to land and be reported
    breaker_cooldown_s: float = 10.0  # the breaker stays open this long after its cause clears
    max_error_rate: float = 0.05  # share of dispatches answered 503 in a tick that opens the breaker
    lost_ratio: float = 0.2  # fleet held falling by more than this share of the moves in flight
    lease_ttl_s: float = 3.0  # leadership lease; a dead leader is replaced within about this long
    gateway_admin_token: str | None = field(default=None, repr=False)  # for the gateways' POST /shed

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name, (lo, hi) in RANGES.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a number, got {v!r}")
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be >= {lo} and <= {hi}, got {v!r}")
