"""The ``[rebalance]`` config section: one frozen dataclass, its defaults and its ranges."""

from __future__ import annotations

from dataclasses import dataclass

from tcpdispatch.settings import setting, validate

MODES = ("auto", "manual", "off")


@dataclass(frozen=True, slots=True)
class RebalanceSettings:
    """Pacing, thresholds and safety of rebalancing (ValueError names the bad field).

    Defaults follow EMQX's evacuation/rebalance defaults where they exist
    (``rel_conn_threshold`` 1.1, ``abs_conn_threshold`` 1000 is for huge nodes, we use
    50; ``conn-evict-rate`` 500/s fleet-wide is ours split 200/s fleet, 100/s per donor).
    """

    mode: str = setting(
        "auto",
        choices=MODES,
        help="`auto`: start rounds by itself; `manual`: only on "
        "`POST /v1/rebalance/trigger`; `off`",
    )
    interval_s: float = setting(
        1.0,
        ge=0.05,
        le=60,
        unit="s",
        help="decision tick; each donor's order is spread over one tick",
    )
    rel_threshold: float = setting(
        0.10, ge=0, le=10, help="a donor holds more than target x (1 + this) ..."
    )
    abs_threshold: int = setting(
        50, ge=0, le=10_000_000, help="... and more than target + this (both must hold)"
    )
    stop_within: float = setting(
        0.01, ge=0, le=1, help="hysteresis: a donor sheds until within this share of its target"
    )
    moves_per_s: float = setting(
        200.0, ge=0.1, le=1_000_000, help="fleet-wide budget of RECONNECTs per second"
    )
    per_donor_per_s: float = setting(
        100.0, ge=0.1, le=1_000_000, help="most RECONNECTs per second asked of one donor"
    )
    min_session_age_s: float = setting(
        60.0, ge=0, le=86_400, unit="s", help="only sessions at least this old are asked to move"
    )
    settle_s: float = setting(
        3.0,
        ge=0,
        le=600,
        unit="s",
        help="after an order's window: time for its clients to land and be reported",
    )
    breaker_cooldown_s: float = setting(
        10.0,
        ge=0,
        le=3600,
        unit="s",
        help="the breaker stays open this long after its cause clears",
    )
    max_error_rate: float = setting(
        0.05, ge=0, le=1, help="share of dispatches answered 503 in a tick that opens the breaker"
    )
    lost_ratio: float = setting(
        0.2,
        ge=0,
        le=1,
        help="fleet held falling by more than this share of the moves in flight opens the breaker",
    )
    lease_ttl_s: float = setting(
        3.0,
        ge=0.5,
        le=600,
        unit="s",
        help="leadership lease among replicas "
        "(Redis store); a dead leader is replaced within about this long",
    )
    gateway_admin_token: str | None = setting(
        None,
        key="gateway_admin_token_file",
        unit="file",
        repr=False,
        help="file with the gateways' admin token (their `--admin-token-file`), "
        "sent with `POST /shed`",
    )

    def __post_init__(self) -> None:
        validate(self)
