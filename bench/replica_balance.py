"""Balance across gateways when 4 dispatcher replicas decide independently (issue 5).

Simulated in-process, with the real ``Pool`` and pickers of each replica (real
processes cannot be paced finely enough on a 2-core machine): 4 replicas, each
with its own pool, share the dispatch stream (nginx round robin); every gateway
reports its true connection count to each replica every ``interval`` of
simulated time, at a phase per replica (they probe independently). Between two
reports a replica only knows the tickets *it* issued. With ``--shared`` every
replica also sees every other replica's tickets at once (all pools share one
LoadCounter per gateway): the best case of sharing ticket counts through Redis,
with zero latency. The balance is max/mean of the true connections over the
gateways after N dispatches (goal <= 1.05).

Also measures what sharing would cost: the round trip of one Redis ``INCR``
from redis-py asyncio against a local redis-server (if installed), next to the
in-process cost of one dispatch decision.

    python -m bench.replica_balance [--quick] [--dispatches N] [--gateways G]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import headline, write_result
from tcpdispatch.balancing.base import PickRequest
from tcpdispatch.config import parse_config
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.health import ProbeResult

REPLICAS = 4
POLICIES = ("p2c", "least_conn", "load")


def _pools(policy: str, gateways: int, seed: int, shared: bool, tmp: Path) -> list[Pool]:
    (tmp / "s").write_text("0123456789abcdef0123\n")
    doc = {
        "dispatcher": {"secret_file": "s", "policy": policy},
        "balancing": {"slow_start_s": 0},
        "gateways": [{"id": f"g{i}", "address": f"127.0.0.1:{9000 + i}"} for i in range(gateways)],
    }
    cfg = parse_config(doc, file="bench.toml", base=tmp, env={})
    pools = [Pool(cfg, rng=random.Random(seed * 100 + r)) for r in range(REPLICAS)]
    for pool in pools:
        for gid in pool.gateways:
            for _ in range(2):
                pool.on_result(
                    gid, ProbeResult(ok=True, connections=0, capacity=10**9, utilization=0.0)
                )
    if shared:  # one LoadCounter per gateway, seen by every replica
        for pool in pools[1:]:
            for gid, gw in pool.gateways.items():
                gw.load = pools[0].gateways[gid].load
    for pool in pools:
        pool.rebuild()
    return pools


def simulate(
    policy: str,
    *,
    gateways: int,
    dispatches: int,
    rate: float,
    interval: float,
    shared: bool,
    seed: int,
    tmp: Path,
    join: bool = False,
) -> dict[str, Any]:
    """Run one scenario; returns the final balance and the worst balance seen along the way.

    ``join``: every gateway but one already holds ``dispatches / (2 x gateways)``
    connections and the last one joins empty (the case where stale views herd).
    """
    pools = _pools(policy, gateways, seed, shared, tmp)
    ids = list(pools[0].gateways)
    true = dict.fromkeys(ids, 0)
    if join:
        for gid in ids[:-1]:
            true[gid] = dispatches // (2 * gateways)
        for pool in pools:
            for gid in ids:
                pool.gateways[gid].load.report(true[gid])
    peak = 0.0
    rng = random.Random(seed)
    # Replica r's reports land at (n + phase_r) * interval.
    next_report = [interval * ((r + rng.random()) / REPLICAS) for r in range(REPLICAS)]
    refused = 0
    for k in range(dispatches):
        now = k / rate
        for r in range(REPLICAS):
            while next_report[r] <= now:
                for gid in ids:
                    # The load policy balances on utilization: make it the connection share.
                    util = true[gid] / max(1, dispatches)
                    pools[r].on_result(
                        gid,
                        ProbeResult(
                            ok=True, connections=true[gid], capacity=10**9, utilization=util
                        ),
                    )
                next_report[r] += interval
                mean = sum(true.values()) / len(true)
                if now > interval and mean > 0:
                    peak = max(peak, max(true.values()) / mean)
        chosen = pools[k % REPLICAS].picker.pick(PickRequest(f"c{k}"), 1)
        if not chosen:
            refused += 1
            continue
        true[chosen[0].id] += 1
    mean = sum(true.values()) / len(true)
    return {
        "policy": policy,
        "shared": shared,
        "rate": rate,
        "interval": interval,
        "join": join,
        "gateways": gateways,
        "dispatches": dispatches,
        "refused": refused,
        "peak_max_over_mean": round(peak, 4),
        "max_over_mean": round(max(true.values()) / mean, 4),
        "min_over_mean": round(min(true.values()) / mean, 4),
    }


def dispatch_cost(tmp: Path, n: int = 20_000) -> float:
    """In-process cost of one p2c pick (seconds), for comparison with a Redis round trip."""
    pool = _pools("p2c", 10, 1, False, tmp)[0]
    picker = pool.picker
    req = PickRequest("x")
    t0 = time.perf_counter()
    for _ in range(n):
        picker.pick(req, 1)
    return (time.perf_counter() - t0) / n


def redis_round_trip(n: int = 2000) -> float | None:
    """Mean latency of one awaited INCR against a throwaway local redis-server, or None."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        return None
    import socket

    import redis.asyncio as aioredis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                d,
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:

            async def go() -> float:
                client = aioredis.Redis(port=port)
                for _ in range(100):  # wait for it to listen (bounded)
                    with contextlib.suppress(Exception):
                        await client.ping()
                        break
                    await asyncio.sleep(0.05)
                t0 = time.perf_counter()
                for _ in range(n):
                    await client.incr("bench:issued:g1")
                took = (time.perf_counter() - t0) / n
                await client.aclose()
                return took

            return asyncio.run(go())
        finally:
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="10,000 dispatches, one seed")
    ap.add_argument("--dispatches", type=int, default=100_000)
    ap.add_argument("--gateways", type=int, default=10)
    ap.add_argument("--interval", type=float, default=0.25, help="report interval (s, simulated)")
    args = ap.parse_args(argv)
    n = 10_000 if args.quick else args.dispatches
    seeds = (1,) if args.quick else (1, 2, 3)
    # 4,000/s: busy steady state; 40,000/s: a reconnect storm (10,000 dispatches per interval).
    rates = (4_000.0, 40_000.0)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for join in (False, True):
            for policy in POLICIES:
                for rate in rates:
                    for shared in (False, True):
                        runs = [
                            simulate(
                                policy,
                                gateways=args.gateways,
                                dispatches=n,
                                rate=rate,
                                interval=args.interval,
                                shared=shared,
                                seed=s,
                                tmp=tmp,
                                join=join,
                            )
                            for s in seeds
                        ]
                        worst = max(runs, key=lambda x: x["max_over_mean"])
                        worst["peak_max_over_mean"] = max(x["peak_max_over_mean"] for x in runs)
                        rows.append(worst)
                        print(
                            f"  {'join' if join else 'even':4s} {policy:10s} rate {rate:>7,.0f}/s  "
                            f"shared={'yes' if shared else 'no ':3s}  final max/mean "
                            f"{worst['max_over_mean']:.4f}  peak {worst['peak_max_over_mean']:.4f}"
                            f"  (worst of {len(runs)} seeds)",
                            flush=True,
                        )
        pick_s = dispatch_cost(tmp)
    rtt = redis_round_trip()
    print(
        f"  p2c pick in-process: {pick_s * 1e6:.1f} us;  Redis INCR round trip: "
        f"{'n/a' if rtt is None else f'{rtt * 1e6:.1f} us'}"
    )
    unshared = max(r["max_over_mean"] for r in rows if not r["shared"] and r["policy"] != "load")
    shared = max(r["max_over_mean"] for r in rows if r["shared"] and r["policy"] != "load")
    write_result(
        "replica_balance",
        args.quick,
        {
            "replicas": REPLICAS,
            "dispatches": n,
            "gateways": args.gateways,
            "interval_s": args.interval,
            "rows": rows,
            "pick_us": round(pick_s * 1e6, 2),
            "redis_incr_us": None if rtt is None else round(rtt * 1e6, 1),
        },
    )
    headline(
        "replica_balance",
        f"4 replicas, p2c/least_conn: max/mean {unshared:.3f} without shared ticket "
        f"counts, {shared:.3f} with (goal <= 1.05)",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
