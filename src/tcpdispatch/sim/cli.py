"""tcpdispatch simulate SCENARIO: the fleet at any size, on modelled time.

Runs the project's own decision code (pool, pickers, health state machine, the
client's backoff, bans, cache and static-list fallback) against modelled time,
network and processes; deterministic per seed. See docs/simulation.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

from tcpdispatch.balancing.registry import POLICIES
from tcpdispatch.sim.run import JSON_FIELDS, Result, simulate
from tcpdispatch.sim.scenarios import SCENARIOS
from tcpdispatch.sim.world import BASELINES, SimConfig

MAX_CLIENTS = 10_000_000
MAX_GATEWAYS = 100_000


def _bounded(kind: str, lo: int, hi: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", "").replace(",", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(
                f"{kind} must be between {lo:,} and {hi:,}, got {value:,}"
            )
        return value

    return parse


def add_parser(subparsers: Any) -> None:
    scenarios = "\n".join(f"  {s.name:18} {s.help}" for s in SCENARIOS.values())
    p = subparsers.add_parser(
        "simulate",
        help="simulate the fleet at any size with the real decision code (modelled time)",
        description=__doc__ + "\nscenarios:\n" + scenarios,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "scenario",
        choices=list(SCENARIOS),
        metavar="SCENARIO",
        help=f"one of: {', '.join(SCENARIOS)}",
    )
    p.add_argument(
        "--clients",
        type=_bounded("--clients", 1, MAX_CLIENTS),
        default=10_000,
        metavar="N",
        help="clients (default 10,000)",
    )
    p.add_argument(
        "--gateways",
        type=_bounded("--gateways", 1, MAX_GATEWAYS),
        default=10,
        metavar="N",
        help="gateways at the start (default 10); capacity each = 2x the mean share",
    )
    p.add_argument(
        "--replicas",
        type=_bounded("--replicas", 1, 1000),
        default=2,
        metavar="N",
        help="dispatcher replicas behind nginx, each with its own stale view (default 2)",
    )
    p.add_argument(
        "--zones",
        type=_bounded("--zones", 1, 100),
        default=1,
        metavar="N",
        help="zones; gateway k and client k are in zone k mod N (default 1; zone-outage needs 2+)",
    )
    p.add_argument(
        "--policy",
        choices=sorted(POLICIES),
        default="p2c",
        metavar="P",
        help=(
            f"balancing policy of the replicas (default p2c; one of {', '.join(sorted(POLICIES))})"
        ),
    )
    p.add_argument(
        "--baseline",
        choices=BASELINES,
        default="none",
        metavar="NAME",
        help="what users would run instead: static-random (built-in list, client picks at "
        "random), goim (weighted top-5 on 10 s reports), least_conn (on 10 s reports), "
        "recycle (p2c + connections recycled at 10 min of age); default none",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        help="random seed; the same seed gives the same JSON (but for wall_s) (default 1)",
    )
    p.add_argument(
        "--json", metavar="FILE", default=None, help="write the summary as JSON ('-' = stdout)"
    )
    p.add_argument(
        "--plot",
        metavar="FILE",
        default=None,
        help="write a PNG of held connections per gateway and the dispatch rate over time "
        "(needs matplotlib: pip install 'tcpdispatch[bench]')",
    )
    p.add_argument(
        "--progress",
        choices=["auto", "on", "off"],
        default="auto",
        help="progress bar on stderr (auto: when stderr is a terminal)",
    )
    p.set_defaults(func=run)


class Progress:
    """A one-line bar on stderr, redrawn at most 4 times a second."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.last = 0.0
        self.started = time.monotonic()

    def __call__(self, now: float, end: float) -> None:
        wall = time.monotonic()
        if wall - self.last < 0.25:
            return
        self.last = wall
        frac = min(1.0, now / end) if end else 1.0
        bar = "#" * int(30 * frac)
        sys.stderr.write(
            f"\r{self.label} [{bar:<30}] {frac:5.1%} t={now:6.1f}/{end:.0f}s "
            f"{wall - self.started:5.0f}s wall"
        )
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\r" + " " * 90 + "\r")
        sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    # The replicas' pools log every modelled health change; thousands of them are noise here.
    logging.getLogger("tcpdispatch.dispatcher.pool").setLevel(logging.WARNING)
    cfg = SimConfig(
        scenario=args.scenario,
        clients=args.clients,
        gateways=args.gateways,
        replicas=args.replicas,
        zones=args.zones,
        policy=args.policy,
        baseline=args.baseline,
        seed=args.seed,
    )
    show = args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty())
    bar = Progress(f"{args.scenario}") if show else None
    if args.plot and not _have_matplotlib():
        print(
            "tcpdispatch simulate: --plot needs matplotlib; install it with: "
            "pip install 'tcpdispatch[bench]'",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    try:
        result = simulate(cfg, bar)
    except ValueError as exc:
        if bar:
            bar.done()
        print(f"tcpdispatch simulate: {exc}", file=sys.stderr)
        return 2
    if bar:
        bar.done()
    result.summary["wall_s"] = round(time.monotonic() - started, 2)
    print(describe(result))
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    try:
        if args.json:
            text = json.dumps({k: result.summary[k] for k in JSON_FIELDS}, indent=2) + "\n"
            if args.json == "-":
                sys.stdout.write(text)
            else:
                Path(args.json).write_text(text)
        if args.plot:
            draw_png(result, args.plot)
    except OSError as exc:
        print(f"tcpdispatch simulate: cannot write output: {exc}", file=sys.stderr)
        return 1
    return 0


def describe(r: Result) -> str:
    """The summary for people."""
    s, x = r.summary, r.extra
    who = s["policy"] if s["baseline"] == "none" else f"baseline {s['baseline']}"
    lines = [
        (
            f"{s['scenario']}: {s['clients']:,} clients, {s['gateways']:,} gateways, "
            f"{s['replicas']} replicas, {s['zones']} zone(s), {who}, {x['modelled_s']:.0f} s "
            f"modelled in {s['wall_s']} s"
        )
    ]
    if s["rehomed_p50_s"] is None:
        lines.append("  no connection was lost involuntarily")
    else:
        lines.append(
            f"  re-homed: {s['moves']:,} connections; 50 % in {s['rehomed_p50_s']} s, "
            f"99 % in {s['rehomed_p99_s']} s, 100 % in {s['rehomed_100_s']} s; lost {s['lost']}"
        )
    lines.append(
        f"  peak gateway load {s['peak_gateway_load_ratio']:.1%} of capacity; balance at the end "
        f"(max/mean per weight) {s['balance_max_over_mean_end']}"
        + (f", within a zone {x['balance_in_zone_end']}" if s["zones"] > 1 else "")
    )
    if x.get("rebalance_rounds"):
        lines.append(
            f"  rebalancing: {x['shed_sent']:,} clients asked to move (RECONNECT) in "
            f"{x['rebalance_rounds']} round(s)"
        )
    lines.append(
        f"  dispatch peak {s['dispatch_peak_rps_per_replica']:,}/s per replica; 503s "
        f"{x['refusals_503']:,}; failed rounds {x['failed_rounds']:,}; rounds without a "
        f"dispatcher (cache/static) {x['fallback_rounds']:,}"
    )
    return "\n".join(lines)


def _have_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def draw_png(r: Result, path: str) -> None:
    """Held connections per gateway (or their percentiles) and the dispatch rate, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, height_ratios=[3, 1])
    try:
        t = [row["t"] for row in r.series]
        if r.per_gateway:
            for k, gid in enumerate(r.gateway_ids):
                top.plot(t, [max(0, row[k]) for row in r.per_gateway], label=gid, lw=1)
        else:
            top.fill_between(
                t,
                [row["min"] for row in r.series],
                [row["max"] for row in r.series],
                alpha=0.25,
                label="min..max",
            )
            top.plot(t, [row["p50"] for row in r.series], label="median", lw=1)
            top.plot(t, [row["p99"] for row in r.series], label="p99", lw=1)
        top.axhline(r.capacity, color="red", ls="--", lw=0.8, label="capacity")
        s = r.summary
        who = s["policy"] if s["baseline"] == "none" else s["baseline"]
        top.set_title(f"{s['scenario']} - {who}: held connections per gateway", fontsize=9)
        top.legend(fontsize=7, ncol=2)
        bottom.plot(t, [row["dispatch_rps"] for row in r.series], lw=1)
        bottom.set_ylabel("dispatch/s", fontsize=8)
        bottom.set_xlabel("modelled seconds", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=72)
    finally:
        plt.close(fig)
