"""Cost of the zone choice: 1,000 gateways in 10 zones against the same 1,000 without zones.

Run as ``python -m bench.zone_pick_cost [--rounds R] [--budget S] [--json]``. Two pairs are
timed in one process, interleaved round by round so machine noise hits both sides alike; each
figure is the best of ``--rounds`` short rounds of this thread's CPU time
(``time.thread_time_ns``), in nanoseconds per call:

- ``pick``: the pick alone with two alternates (``k = 3``, p2c): ``picker.pick(request, 3)``
  over the pool-wide picker, against ``ZoneRouter.pick(zone, request, 3)`` (the zone's verdict,
  its picker, the alternate from another zone, the per-zone dispatch counter).
- ``dispatch``: a whole answer in Python (``DispatchService.dispatch_bytes``: parse, validate,
  pick, ticket, JSON), plain ``client_id=...`` with no zones against ``client_id=...&zone=zN``
  (the hint's parsing included), and by client network (a CIDR lookup per zone, cache warm).
  ``speedups = false`` on both sides so both are the Python path; the C path (zones off) is
  printed for context.

Exit status 1 when a zoned figure exceeds 1.5 x its zoneless pair (issue 16's bound).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcpdispatch.balancing.base import PickRequest
from tcpdispatch.config import parse_config
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.dispatcher.service import DispatchService
from tcpdispatch.health import ProbeResult
from tcpdispatch.rng import SplitMixRandom

GATEWAYS, ZONES = 1000, 10
MAX_RATIO = 1.5
N = 1024  # distinct requests cycled through


def build(tmp: Path, *, zones: bool, speedups: bool = False) -> DispatchService:
    (tmp / "secret").write_text("bench-secret-0123456789abcdef\n")
    doc: dict[str, Any] = {
        "dispatcher": {"secret_file": "secret", "policy": "p2c", "speedups": speedups},
        "balancing": {"slow_start_s": 0},
        "gateways": [
            {
                "id": f"gw-{i:04d}",
                "address": f"10.0.{i // 250}.{i % 250 + 1}:9000",
                "capacity": 1_000_000,
                "weight": 1 + i % 4,
                "zone": f"z{i % ZONES}",
            }
            for i in range(GATEWAYS)
        ],
    }
    if zones:
        doc["zones"] = [
            {
                "name": f"z{z}",
                "cidrs": [f"10.{100 + z}.0.0/16"],
                "spill_to": [f"z{(z + 1) % ZONES}"],
            }
            for z in range(ZONES)
        ]
    cfg = parse_config(doc, file="bench.toml", base=tmp, env={})
    pool = Pool(cfg, rng=SplitMixRandom(1))  # the generator the C path shares
    rng = random.Random(2)
    for gid in pool.gateways:
        for _ in range(2):
            pool.on_result(
                gid, ProbeResult(ok=True, connections=rng.randint(0, 100), capacity=1_000_000)
            )
    pool.rebuild()
    return DispatchService(cfg, pool, rng=random.Random(3))


def timed(fn: Callable[[int], object], count: int) -> float:
    """Nanoseconds of thread CPU per call of ``fn(i)`` over ``count`` calls."""
    t0 = time.thread_time_ns()
    for i in range(count):
        fn(i)
    return (time.thread_time_ns() - t0) / count


def measure(rounds: int, budget: float) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as d1,
        tempfile.TemporaryDirectory() as d2,
        tempfile.TemporaryDirectory() as d3,
    ):
        plain, zoned = build(Path(d1), zones=False), build(Path(d2), zones=True)
        c_path = build(Path(d3), zones=False, speedups=True)
        assert plain.pool.zones is None and zoned.pool.zones is not None
        router = zoned.pool.zones
        picker = plain.pool.picker
        reqs = [
            PickRequest(f"client-{i:06d}", f"10.{100 + i % ZONES}.{i >> 8 & 255}.{i & 255}")
            for i in range(N)
        ]
        zone_of = [f"z{i % ZONES}" for i in range(N)]
        qs_plain = [f"client_id=client-{i:06d}".encode() for i in range(N)]
        qs_hint = [f"client_id=client-{i:06d}&zone=z{i % ZONES}".encode() for i in range(N)]
        ips = [r.client_ip for r in reqs]
        m = N - 1
        cases: dict[str, Callable[[int], object]] = {
            "pick, no zones": lambda i: picker.pick(reqs[i & m], 3),
            "pick, 10 zones": lambda i: router.pick(zone_of[i & m], reqs[i & m], 3),
            "dispatch, no zones": lambda i: plain.dispatch_bytes(qs_plain[i & m], ips[i & m], []),
            "dispatch, 10 zones (hint)": lambda i: zoned.dispatch_bytes(
                qs_hint[i & m], ips[i & m], []
            ),
            "dispatch, 10 zones (network)": lambda i: zoned.dispatch_bytes(
                qs_plain[i & m], ips[i & m], []
            ),
            "dispatch, no zones, C path": lambda i: c_path.dispatch_bytes(
                qs_plain[i & m], ips[i & m], []
            ),
        }
        assert c_path.hot_path == "c" and zoned.hot_path == "python"
        counts = {k: max(2, int(budget * 1e9 / timed(fn, 50))) for k, fn in cases.items()}
        samples: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(rounds):
            for k, fn in cases.items():
                samples[k].append(timed(fn, counts[k]))
        best = {k: min(v) for k, v in samples.items()}
        spilled = sum(n for (cz, gz), n in router.counters.dispatched.items() if cz != gz)
    return {
        "ns": best,
        "ratio_pick": best["pick, 10 zones"] / best["pick, no zones"],
        "ratio_dispatch_hint": best["dispatch, 10 zones (hint)"] / best["dispatch, no zones"],
        "ratio_dispatch_network": best["dispatch, 10 zones (network)"] / best["dispatch, no zones"],
        "spilled_dispatches": spilled,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=31, help="interleaved rounds (default 31)")
    ap.add_argument(
        "--budget", type=float, default=0.01, help="CPU seconds per timed batch (default 0.01)"
    )
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    r = measure(args.rounds, args.budget)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(
            f"{GATEWAYS} gateways, p2c, 2 alternates; best "
            f"of {args.rounds} rounds, ns of CPU per call"
        )
        for name, ns in r["ns"].items():
            print(f"  {name:<32}{ns:>10,.0f}")
        print(f"  ratio pick                       {r['ratio_pick']:>10.2f}")
        print(f"  ratio dispatch (hint)            {r['ratio_dispatch_hint']:>10.2f}")
        print(f"  ratio dispatch (network)         {r['ratio_dispatch_network']:>10.2f}")
    worst = max(r["ratio_pick"], r["ratio_dispatch_hint"], r["ratio_dispatch_network"])
    if worst > MAX_RATIO:
        print(
            f"FAIL: the zone choice costs {worst:.2f} x the zoneless pick (bound {MAX_RATIO})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
