"""Scenario 6, capacity: a thin wrapper over ``bench.gateway_capacity`` (gateway work).

That script opens N idle, handshaken connections to one ``--workers`` gateway
node from several client processes (each < 20,000 fds, bound to distinct
127.0.0.x sources) and prints RSS per connection and the connect rate. Its
``main(argv)`` returns only an exit code, so it runs as a child process here
and its output is parsed. The heartbeat-CPU figure (issue 6) is not measured by
that script: it runs with ``--heartbeat 3600``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from bench.common import headline, write_result

NAME = "capacity"
TARGET_KIB = 3.0


def run(quick: bool) -> dict[str, Any]:
    n, workers, clients = (2000, 1, 1) if quick else (100_000, 6, 7)
    args = [sys.executable, "-m", "bench.gateway_capacity", "--connections", str(n), "--workers", str(workers),
            "--client-processes", str(clients), "--timeout", "60" if quick else "420"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120 if quick else 540, check=False,
                       start_new_session=True)
    out = p.stdout
    m_conn = re.search(r"connections: (\d+) open, (\d+) failed, gateway /status says (\d+)", out)
    m_rate = re.search(r"-> (\d+) connections/s", out)
    m_rss = re.search(r"= ([\d.]+) KiB per connection", out)
    m_base = re.search(r"baseline RSS ([\d.]+) MiB", out)
    if not (m_conn and m_rate and m_rss):
        raise RuntimeError(f"bench.gateway_capacity failed (exit {p.returncode}):\n{out}\n{p.stderr[-2000:]}")
    kib = float(m_rss.group(1))
    text = (f"{int(m_conn.group(1)):,} connections on one node: {kib:.2f} KiB RSS per connection "
            f"(target <= {TARGET_KIB}; goim publishes ~14 KiB -> {14 / kib:.1f}x less), "
            f"{int(m_rate.group(1)):,} connects/s")
    headline(NAME, text)
    result = {"connections_target": n, "open": int(m_conn.group(1)), "failed": int(m_conn.group(2)),
              "status_connections": int(m_conn.group(3)), "workers": workers, "client_processes": clients,
              "connect_rate_per_s": int(m_rate.group(1)), "kib_per_connection": kib,
              "baseline_rss_mib": float(m_base.group(1)) if m_base else None, "target_kib": TARGET_KIB,
              "met": kib <= TARGET_KIB and int(m_conn.group(1)) == n, "raw_output": out.splitlines(),
              "headline": text, "ok": p.returncode == 0}
    result["ok"] = result["ok"] and result["met"]
    write_result(NAME, quick, result)
    return result


def table(r: dict[str, Any]) -> str:
    return "\n".join([
        "### 6. Capacity (one gateway node)\n",
        "| connections open | workers | KiB RSS / connection | target | connects/s | met |",
        "|---|---|---|---|---|---|",
        (f"| {r['open']:,} of {r['connections_target']:,} | {r['workers']} | {r['kib_per_connection']:.2f} | "
        f"<= {r['target_kib']} | {r['connect_rate_per_s']:,} | {'yes' if r['met'] else 'no'} |\n"),
    ])


def main() -> int:
    return 0 if run("--quick" in sys.argv).get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
