"""Scenario 3, balance: shares of new connections per gateway, per policy, vs HAProxy leastconn.

tcpdispatch: three real gateways with weights 1:2:3, then equal; for each policy a
real dispatcher answers N ``/v1/dispatch`` requests (distinct client ids, 8
keep-alive connections). These are dispatch-only requests: holding 60,000 real
client connections (plus 60,000 on the gateways) is beyond the 20,000-fd,
2-core budget of this machine, so the share measured is the share of answers
(as primary). The gateways keep reporting their (idle) state every 0.25 s.

HAProxy: ``balance leastconn`` with the same weights proxies M real client
connections (HELLO with a valid ticket, then held) to the same gateways; the
share is what each gateway's ``/status`` reports, sampled over time (M is
bounded by HAProxy's 2 fds per connection within the 20,000-fd limit).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    GatewayHandle,
    HttpDispatcher,
    ProcGroup,
    free_port,
    haproxy_config,
    headline,
    plot,
    run_as_script,
    start_dispatcher,
    start_gateway,
    start_haproxy,
    wait_until,
    write_result,
)
from tcpdispatch import aio
from tcpdispatch.protocol import Connection, Hello, Role, Welcome
from tcpdispatch.tickets import TicketSigner

NAME = "balance"
WEIGHTS = {"1:2:3": (1, 2, 3), "equal": (1, 1, 1)}
SECRET = "bench-secret-0123456789abcdef"
TARGET_POINTS = 2.0


def _shares(counts: dict[str, int], weights: tuple[int, ...], ids: list[str]) -> dict[str, Any]:
    total = max(1, sum(counts.values()))
    exp = [w / sum(weights) for w in weights]
    got = [counts.get(g, 0) / total for g in ids]
    return {
        "counts": {g: counts.get(g, 0) for g in ids},
        "shares_pct": [round(100 * s, 2) for s in got],
        "expected_pct": [round(100 * e, 2) for e in exp],
        "max_dev_points": round(max(abs(a - b) for a, b in zip(got, exp)) * 100, 2),
        "max_over_mean": round(max(a / b for a, b in zip(got, exp)), 3),
    }


async def _dispatch_run(
    url: str, n: int, ids: list[str], tag: str
) -> tuple[dict[str, int], list[Any], float]:
    host, port = url.split("//")[1].split(":")
    clients = [HttpDispatcher(host, int(port)) for _ in range(8)]
    counts = {g: 0 for g in ids}
    series: list[Any] = []
    step = max(1, n // 40)
    done = 0
    t0 = time.monotonic()

    async def worker(c: HttpDispatcher, k: int) -> None:
        nonlocal done
        for i in range(k, n, len(clients)):
            status, body = await c.dispatch(f"{tag}-{i}")
            if status == 200 and body:
                counts[body["gateway"]["id"]] += 1
            done += 1
            if done % step == 0:
                series.append([done, *[counts[g] for g in ids]])

    try:
        await asyncio.wait_for(asyncio.gather(*(worker(c, k) for k, c in enumerate(clients))), 600)
    finally:
        for c in clients:
            c.close()
    return counts, series, time.monotonic() - t0


async def _hold_via_haproxy(
    front: int, m: int, ids: list[str], gws: list[GatewayHandle], rate: float
) -> tuple[dict[str, int], list[Any], int]:
    signer = TicketSigner(SECRET.encode(), 120)
    writers: list[asyncio.StreamWriter] = []
    failed = 0
    series: list[Any] = []
    t0 = time.monotonic()

    async def one(i: int) -> None:
        nonlocal failed
        await asyncio.sleep(i / rate)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", front)
            conn = Connection(Role.CLIENT)
            conn.send(Hello(signer.issue(ids, f"ha-{i}"), f"ha-{i}"))
            writer.write(conn.data_to_send())
            while True:
                data = await asyncio.wait_for(reader.read(4096), 10)
                if not data:
                    raise ConnectionError("closed")
                if any(isinstance(f, Welcome) for f in conn.receive_data(data)):
                    break
            writers.append(writer)
        except (TimeoutError, OSError, ConnectionError):
            failed += 1

    async def sample() -> None:
        while True:
            counts = await asyncio.to_thread(lambda: [int(g.status()["connections"]) for g in gws])
            series.append([round(time.monotonic() - t0, 2), *counts])
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    try:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(m))), m / rate + 60)
        await asyncio.to_thread(
            wait_until,
            lambda: sum(int(g.status()["connections"]) for g in gws) >= m - failed,
            20,
            0.05,
            "gateways report every held connection",
        )
        final = {g.id: int(g.status()["connections"]) for g in gws}
        await asyncio.sleep(0.6)
    finally:
        sampler.cancel()
        for w in writers:
            w.transport.abort()
    return final, series, failed


def run(quick: bool) -> dict[str, Any]:
    n = 2000 if quick else 60_000
    m, rate = (200, 1000.0) if quick else (5000, 1000.0)
    policies = (
        ["p2c"]
        if quick
        else ["p2c", "round_robin", "random", "least_conn", "consistent_hash", "load"]
    )
    equal_policies = ["p2c"] if quick else ["p2c", "round_robin", "least_conn"]
    ours: dict[str, dict[str, Any]] = {}
    peer: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tcpdsuite-bal-") as tmp:
        work = Path(tmp)
        secret = work / "ticket.secret"
        secret.write_text(SECRET + "\n")
        group = ProcGroup(work)
        try:
            gws = [
                start_gateway(group, f"g{i}", "--capacity", "100000", secret_file=secret)
                for i in (1, 2, 3)
            ]
            ids = [g.id for g in gws]
            for wname, weights in WEIGHTS.items():
                for g, w in zip(gws, weights):
                    g.weight = w
                for policy in policies if wname == "1:2:3" else equal_policies:
                    disp = start_dispatcher(
                        group,
                        work,
                        gws,
                        secret,
                        extra_toml=f'policy = "{policy}"\n[balancing]\nslow_start_s = 0\n',
                    )
                    counts, series, secs = aio.run(
                        _dispatch_run(disp.url, n, ids, f"{policy}-{wname}")
                    )
                    disp.proc.stop()
                    r = _shares(counts, weights, ids) | {
                        "series": series,
                        "seconds": round(secs, 1),
                        "dispatches_per_s": round(n / secs),
                    }
                    ours.setdefault(policy, {})[wname] = r
                    print(
                        f"  {policy:16s} {wname:6s} shares {r['shares_pct']} (expected "
                        f"{r['expected_pct']}), max dev {r['max_dev_points']} points, "
                        f"{r['dispatches_per_s']} dispatches/s",
                        flush=True,
                    )
                front = free_port()
                cfg = haproxy_config(
                    work / f"haproxy-{wname}.cfg",
                    front=front,
                    balance="leastconn",
                    servers=[(g.id, g.port, w, 0) for g, w in zip(gws, weights)],
                )
                ha = start_haproxy(group, cfg, name=f"haproxy-{wname}")
                wait_until(
                    lambda f=front: (
                        aio.run(asyncio.open_connection("127.0.0.1", f))[1].close() or True
                    ),
                    10,
                    0.05,
                    "HAProxy listening",
                )
                final, series, failed = aio.run(_hold_via_haproxy(front, m, ids, gws, rate))
                ha.stop()
                wait_until(
                    lambda: sum(int(g.status()["connections"]) for g in gws) == 0,
                    20,
                    0.05,
                    "gateways empty",
                )
                peer[wname] = _shares(final, weights, ids) | {
                    "series": series,
                    "failed": failed,
                    "held": m,
                }
                print(
                    f"  haproxy leastconn {wname:6s} shares {peer[wname]['shares_pct']}, "
                    f"max dev {peer[wname]['max_dev_points']} points ({failed} failed)",
                    flush=True,
                )
        finally:
            group.stop()
    worst = max(ours[p]["1:2:3"]["max_dev_points"] for p in policies)
    p2c = ours["p2c"]["1:2:3"]["max_dev_points"]
    text = (
        f"weights 1:2:3 over {n:,} dispatches: p2c within {p2c} points, worst policy {worst} "
        f"points (target {TARGET_POINTS}); HAProxy leastconn over {m:,} held connections within "
        f"{peer['1:2:3']['max_dev_points']} points"
    )
    headline(NAME, text)
    result = {
        "dispatches": n,
        "haproxy_held": m,
        "weights": WEIGHTS,
        "ids": ids,
        "policies": ours,
        "haproxy_leastconn": peer,
        "target_points": TARGET_POINTS,
        "met": {p: ours[p]["1:2:3"]["max_dev_points"] <= TARGET_POINTS for p in policies},
        "headline": text,
    }
    result["ok"] = all(result["met"].values())
    write_result(NAME, quick, result)

    def draw(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        s = ours["p2c"]["1:2:3"]["series"]
        for k, g in enumerate(ids):
            ax1.plot(
                [r[0] for r in s], [r[1 + k] for r in s], label=f"{g} (w={WEIGHTS['1:2:3'][k]})"
            )
        ax1.set_title("tcpdispatch p2c: dispatches per gateway", fontsize=9)
        ax1.set_xlabel("dispatches so far", fontsize=8)
        ax1.legend(fontsize=7)
        s = peer["1:2:3"]["series"]
        for k, g in enumerate(ids):
            ax2.plot([r[0] for r in s], [r[1 + k] for r in s], label=g)
        ax2.set_title("HAProxy leastconn: connections per gateway", fontsize=9)
        ax2.set_xlabel("seconds", fontsize=8)
        for ax in (ax1, ax2):
            ax.tick_params(labelsize=7)

    plot(NAME, quick, draw)
    return result


def table(r: dict[str, Any]) -> str:
    rows = [
        "### 3. Balance\n",
        (
            f"tcpdispatch: {r['dispatches']:,} dispatches per row (dispatch-only requests, see "
            f"text); HAProxy: {r['haproxy_held']:,} real connections held through it.\n"
        ),
        (
            "| balancer | weights | shares % (g1, g2, g3) | expected % | "
            "max deviation (points) | max/mean | rate /s |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for p, ws in r["policies"].items():
        for w, v in ws.items():
            rows.append(
                f"| tcpdispatch {p} | {w} | {v['shares_pct']} | {v['expected_pct']} | "
                f"{v['max_dev_points']} | {v['max_over_mean']} | {v['dispatches_per_s']:,} |"
            )
    for w, v in r["haproxy_leastconn"].items():
        rows.append(
            f"| HAProxy leastconn | {w} | {v['shares_pct']} | {v['expected_pct']} | "
            f"{v['max_dev_points']} | {v['max_over_mean']} | - |"
        )
    rows.append("\n![balance](../bench/results/balance.png)\n")
    return "\n".join(rows)


if __name__ == "__main__":
    run_as_script(run)
