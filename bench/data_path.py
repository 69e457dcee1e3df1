"""Scenario 7, data path: what a proxy costs every byte, which dispatching avoids.

One ``tcpdispatch gateway --handler echo`` and two peers in front of it: HAProxy
(``mode tcp``) and nginx ``stream``. The same closed-loop load runs against each
target in turn: C connections each send a DATA frame (256 bytes payload), wait
for the echo, repeat, for D seconds. Measured: message round-trip percentiles
and messages/s, at one connection (latency) and at C connections (throughput).
The client runs in this process on uvloop and speaks the real protocol.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    ProcGroup,
    free_port,
    haproxy_config,
    headline,
    nginx_has_stream,
    nginx_stream_config,
    percentile,
    plot,
    run_as_script,
    start_gateway,
    start_haproxy,
    start_nginx,
    wait_until,
    write_result,
)
from tcpdispatch import aio
from tcpdispatch.protocol import Connection, Data, Hello, Role, Welcome

NAME = "data_path"
PAYLOAD = b"x" * 256


async def _one(port: int, until: float, rtts: list[float], cid: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = Connection(Role.CLIENT)
    conn.send(Hello("", cid))
    writer.write(conn.data_to_send())
    n = 0
    try:
        while not any(isinstance(f, Welcome) for f in conn.receive_data(await reader.read(65536))):
            pass
        while time.monotonic() < until:
            t0 = time.perf_counter()
            conn.send_data(PAYLOAD)
            writer.write(conn.data_to_send())
            while not any(isinstance(f, Data) for f in conn.receive_data(await reader.read(65536))):
                pass
            rtts.append(time.perf_counter() - t0)
            n += 1
    finally:
        writer.transport.abort()
    return n


async def _load(port: int, conns: int, seconds: float) -> dict[str, Any]:
    rtts: list[float] = []
    until = time.monotonic() + seconds
    t0 = time.monotonic()
    counts = await asyncio.wait_for(
        asyncio.gather(*(_one(port, until, rtts, f"dp-{i}") for i in range(conns))), seconds + 30
    )
    elapsed = time.monotonic() - t0
    us = [r * 1e6 for r in rtts]
    return {
        "connections": conns,
        "messages": sum(counts),
        "msgs_per_s": round(sum(counts) / elapsed),
        "mib_per_s_each_way": round(sum(counts) * len(PAYLOAD) / elapsed / 2**20, 2),
        "rtt_us": {
            "p50": round(percentile(us, 50) or 0),
            "p99": round(percentile(us, 99) or 0),
            "max": round(max(us, default=0)),
        },
    }


def run(quick: bool) -> dict[str, Any]:
    conns, seconds = (10, 1.5) if quick else (100, 6.0)
    with tempfile.TemporaryDirectory(prefix="tcpdsuite-dp-") as tmp:
        work = Path(tmp)
        group = ProcGroup(work)
        try:
            gw = start_gateway(
                group, "dp", "--handler", "echo", "--capacity", "100000", "--heartbeat", "600"
            )
            ha_port, ng_port = free_port(), free_port()
            cfg = haproxy_config(
                work / "haproxy.cfg", front=ha_port, servers=[("dp", gw.port, 1, 0)]
            )
            start_haproxy(group, cfg)
            targets = {"direct (dispatched)": gw.port, "via HAProxy mode tcp": ha_port}
            if nginx_has_stream():
                start_nginx(
                    group, nginx_stream_config(work, front=ng_port, servers=[(gw.port, 1)]), work
                )
                targets["via nginx stream"] = ng_port
            else:
                print(
                    "  nginx has no stream module (Debian: libnginx-mod-stream): nginx path skipped"
                )
            for port in targets.values():
                wait_until(
                    lambda p=port: aio.run(_load(p, 1, 0.05)), 15, 0.05, f"port {port} echoing"
                )
            runs: dict[str, dict[str, Any]] = {}
            for load, (c, s) in {
                "latency (1 connection)": (1, seconds / 2),
                f"throughput ({conns} connections)": (conns, seconds),
            }.items():
                for name, port in targets.items():
                    runs.setdefault(name, {})[load] = aio.run(_load(port, c, s))
        finally:
            group.stop()
    loads = list(next(iter(runs.values())))
    direct = runs["direct (dispatched)"]
    ha = runs["via HAProxy mode tcp"]
    tput = loads[1]
    ratio_t = direct[tput]["msgs_per_s"] / max(ha[tput]["msgs_per_s"], 1)
    ratio_l = ha[loads[0]]["rtt_us"]["p50"] / max(direct[loads[0]]["rtt_us"]["p50"], 1)
    text = (
        f"direct vs via HAProxy: {ratio_t:.2f}x the messages/s at {conns} connections, "
        f"HAProxy adds {ratio_l:.2f}x p50 round trip at 1 connection"
    )
    headline(NAME, text)
    result = {
        "payload_bytes": len(PAYLOAD),
        "seconds": seconds,
        "runs": runs,
        "loads": loads,
        "throughput_ratio_direct_vs_haproxy": round(ratio_t, 3),
        "latency_ratio_haproxy_vs_direct": round(ratio_l, 3),
        "headline": text,
        "ok": True,
    }
    write_result(NAME, quick, result)

    def draw(fig: Any) -> None:
        names = list(runs)
        ax1, ax2 = fig.subplots(1, 2)
        ax1.bar(
            range(len(names)),
            [runs[n][tput]["msgs_per_s"] for n in names],
            color=["C0", "C1", "C2"],
        )
        ax1.set_title(f"echo msgs/s, {conns} connections", fontsize=9)
        ax2.bar(
            range(len(names)),
            [runs[n][loads[0]]["rtt_us"]["p50"] for n in names],
            color=["C0", "C1", "C2"],
        )
        ax2.set_title("p50 round trip (µs), 1 connection", fontsize=9)
        for ax in (ax1, ax2):
            ax.set_xticks(
                range(len(names)),
                [n.replace(" (dispatched)", "").replace("via ", "") for n in names],
                fontsize=8,
            )

    plot(NAME, quick, draw)
    return result


def table(r: dict[str, Any]) -> str:
    rows = [
        "### 7. Data path\n",
        (
            f"Echo of {r['payload_bytes']}-byte DATA frames, "
            f"closed loop, {r['seconds']:g} s per run.\n"
        ),
        "| path | load | msgs/s | MiB/s each way | p50 RTT µs | p99 RTT µs |",
        "|---|---|---|---|---|---|",
    ]
    for name, loads in r["runs"].items():
        for load, v in loads.items():
            rows.append(
                f"| {name} | {load} | {v['msgs_per_s']:,} | {v['mib_per_s_each_way']} | "
                f"{v['rtt_us']['p50']:,} | {v['rtt_us']['p99']:,} |"
            )
    rows.append(
        f"\nDirect carries {r['throughput_ratio_direct_vs_haproxy']:.2f}x "
        "the messages/s of the HAProxy path; HAProxy's p50 round trip is "
        f"{r['latency_ratio_haproxy_vs_direct']:.2f}x the direct one.\n"
    )
    rows.append("![data path](../bench/results/data_path.png)\n")
    return "\n".join(rows)


if __name__ == "__main__":
    run_as_script(run)
