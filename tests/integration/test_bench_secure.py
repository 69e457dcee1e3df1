"""The encryption benchmark's parts work at a tiny size (the full run is `make bench`)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_handshake_costs_and_idle_encrypted_connections(tmp_path: Path) -> None:
    from bench import secure

    costs = secure.handshake_only(10, rounds=2)
    assert all(v > 0 for v in costs.values()), costs
    res = secure.idle_rss(tmp_path, 60, encrypted=True)
    assert res["connections"] == 60 and res["failed"] == 0, res
    row = {"cpu_us": 1.0, "per_s": 1.0}
    doc = secure.table(
        {
            "handshake": dict.fromkeys(
                ("plain", "noise_full", "noise_resumed", "haproxy_tls", "haproxy_resumed"), row
            ),
            "handshake_only": costs,
            "rss": dict.fromkeys(("plain", "noise", "haproxy_tls"), res),
            "failover": {
                "clients": 1,
                "moved_clients": 1,
                "unrepaired": 0,
                "time_to_pct_s": {"50": 1.0, "99": 1.0, "100": 1.0},
            },
            "met": {"rss": True},
        }
    )
    assert "Noise NK (full)" in doc
