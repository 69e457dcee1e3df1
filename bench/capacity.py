"""Scenario 6, capacity: a thin wrapper over ``bench.gateway_capacity`` (gateway work).

That script opens N handshaken connections to one ``--workers`` gateway node
from several client processes (each < 20,000 fds, bound to distinct 127.0.0.x
sources) and prints RSS per connection and the connect rate; then the node's
heartbeat CPU at the default 10 s interval (PINGs at N / 10 per second, minus
an idle window of the same length). Its ``main(argv)`` returns only an exit
code, so it runs as a child process here and its output is parsed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from bench.common import headline, write_result

NAME = "capacity"
TARGET_KIB = 3.0
HEARTBEAT_S = 10.0  # the gateway's default --heartbeat


def run(quick: bool) -> dict[str, Any]:
    n, workers, clients = (2000, 1, 1) if quick else (100_000, 6, 7)
    window = 3.0 if quick else 2 * HEARTBEAT_S
    args = [
        sys.executable,
        "-m",
        "bench.gateway_capacity",
        "--connections",
        str(n),
        "--workers",
        str(workers),
        "--client-processes",
        str(clients),
        "--heartbeat",
        f"{HEARTBEAT_S:g}",
        "--window",
        f"{window:g}",
        "--timeout",
        "60" if quick else "420",
    ]
    p = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=120 if quick else 540,
        check=False,
        start_new_session=True,
    )
    out = p.stdout
    m_conn = re.search(r"connections: (\d+) open, (\d+) failed, gateway /status says (\d+)", out)
    m_rate = re.search(r"-> (\d+) connections/s", out)
    m_rss = re.search(r"= ([\d.]+) KiB per connection", out)
    m_base = re.search(r"baseline RSS ([\d.]+) MiB", out)
    m_hb = re.search(
        r"(\d+) PINGs sent -> (\d+) PINGs/s \(expected (\d+)/s, [\d.]+ %\), (\d+) PONGs back, "
        r"(\d+) connections closed",
        out,
    )
    m_cpu = re.search(
        r"idle ([\d.-]+) cores, pinging ([\d.-]+) cores -> "
        r"([\d.-]+) of one core = ([\d.-]+) us per PING",
        out,
    )
    if not (m_conn and m_rate and m_rss and m_hb and m_cpu):
        raise RuntimeError(
            f"bench.gateway_capacity failed (exit {p.returncode}):\n{out}\n{p.stderr[-2000:]}"
        )
    kib = float(m_rss.group(1))
    pings, ping_rate, expected = int(m_hb.group(1)), int(m_hb.group(2)), int(m_hb.group(3))
    hb_share, hb_us = float(m_cpu.group(3)), float(m_cpu.group(4))
    rate_ok = abs(ping_rate / max(expected, 1) - 1) <= 0.10
    text = (
        f"{int(m_conn.group(1)):,} connections on one node: {kib:.2f} KiB RSS per connection "
        f"(target <= {TARGET_KIB}; goim publishes ~14 KiB -> {14 / kib:.1f}x less), "
        f"{int(m_rate.group(1)):,} connects/s; heartbeat every {HEARTBEAT_S:g} s: "
        f"{hb_share * 100:.1f} % of one core, {hb_us:.1f} µs per PING at {ping_rate:,} PINGs/s"
        + ("" if rate_ok else f" (NOT the expected {expected:,}/s)")
    )
    headline(NAME, text)
    result = {
        "connections_target": n,
        "open": int(m_conn.group(1)),
        "failed": int(m_conn.group(2)),
        "status_connections": int(m_conn.group(3)),
        "workers": workers,
        "client_processes": clients,
        "connect_rate_per_s": int(m_rate.group(1)),
        "kib_per_connection": kib,
        "baseline_rss_mib": float(m_base.group(1)) if m_base else None,
        "target_kib": TARGET_KIB,
        "heartbeat_s": HEARTBEAT_S,
        "heartbeat_window_s": window,
        "pings_sent": pings,
        "ping_rate_per_s": ping_rate,
        "ping_rate_expected_per_s": expected,
        "ping_rate_ok": rate_ok,
        "pongs_received": int(m_hb.group(4)),
        "closed_during_pings": int(m_hb.group(5)),
        "idle_cpu_cores": float(m_cpu.group(1)),
        "pinging_cpu_cores": float(m_cpu.group(2)),
        "heartbeat_cpu_share_of_core": hb_share,
        "heartbeat_us_per_ping": hb_us,
        "met": kib <= TARGET_KIB and int(m_conn.group(1)) == n,
        "raw_output": out.splitlines(),
        "headline": text,
        "ok": p.returncode == 0,
    }
    result["ok"] = result["ok"] and result["met"]
    write_result(NAME, quick, result)
    return result


def table(r: dict[str, Any]) -> str:
    lines = [
        "### 6. Capacity (one gateway node)\n",
        "| connections open | workers | KiB RSS / connection | target | connects/s | met |",
        "|---|---|---|---|---|---|",
        (
            f"| {r['open']:,} of {r['connections_target']:,} | {r['workers']} | "
            f"{r['kib_per_connection']:.2f} | <= {r['target_kib']} | {r['connect_rate_per_s']:,} | "
            f"{'yes' if r['met'] else 'no'} |\n"
        ),
    ]
    if (
        "heartbeat_us_per_ping" in r
    ):  # results written before the heartbeat measurement lack these keys
        lines += [
            (
                f"Heartbeat at the default interval ({r['heartbeat_s']:g} s), node CPU over "
                f"{r['heartbeat_window_s']:g} s windows:\n"
            ),
            (
                "| PINGs/s (expected) | PONGs back | node CPU idle | "
                "node CPU pinging | heartbeat CPU | per PING |"
            ),
            "|---|---|---|---|---|---|",
            (
                f"| {r['ping_rate_per_s']:,} ({r['ping_rate_expected_per_s']:,}"
                f"{'' if r['ping_rate_ok'] else ', NOT within 10 %'}) | {r['pongs_received']:,} of "
                f"{r['pings_sent']:,} | {r['idle_cpu_cores'] * 100:.1f} % | "
                f"{r['pinging_cpu_cores'] * 100:.1f} % | "
                f"{r['heartbeat_cpu_share_of_core'] * 100:.1f} % of one core | "
                f"{r['heartbeat_us_per_ping']:.1f} µs |\n"
            ),
        ]
    return "\n".join(lines)


def main() -> int:
    return 0 if run("--quick" in sys.argv).get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
