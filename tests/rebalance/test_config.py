"""``[rebalance]`` in the dispatcher config: defaults, values, and errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tcpdispatch.errors import ConfigError
from tcpdispatch.rebalance.settings import RebalanceSettings


def test_defaults_and_values(make_config: Any, tmp_path: Path) -> None:
    assert make_config().rebalance == RebalanceSettings()
    (tmp_path / "gw.token").write_text("gateway-token\n")
    cfg = make_config(
        rebalance={
            "mode": "manual",
            "moves_per_s": 50,
            "abs_threshold": 10,
            "min_session_age_s": 5,
            "gateway_admin_token_file": "gw.token",
        }
    )
    r = cfg.rebalance
    assert (r.mode, r.moves_per_s, r.abs_threshold, r.min_session_age_s, r.gateway_admin_token) == (
        "manual",
        50.0,
        10,
        5.0,
        "gateway-token",
    )
    assert "gateway-token" not in repr(r)


@pytest.mark.parametrize(
    "table, key, reason",
    [
        ({"mode": "sometimes"}, "rebalance.mode", "auto, manual, off"),
        ({"abs_threshold": 1.5}, "rebalance.abs_threshold", "integer"),
        ({"moves_per_s": 0}, "rebalance.moves_per_s", ">= 0.1"),
        ({"bogus": 1}, "rebalance.bogus", "unknown key"),
        ({"gateway_admin_token": "x"}, "rebalance.gateway_admin_token", "gateway_admin_token_file"),
        ({"gateway_admin_token_file": "missing.token"}, "rebalance.gateway_admin_token_file", ""),
    ],
)
def test_errors_name_the_key(
    make_config: Any, table: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_config(rebalance=table)
    assert info.value.key == key and reason in info.value.reason
