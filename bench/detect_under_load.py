"""Failure detection while the dispatcher is saturated: do health probes keep up?

Health probes run in the dispatcher's own event loop, next to the dispatch hot
path. This script keeps that loop busy (wrk, keep-alive, 50 connections, as
fast as it answers: the reconnect-storm case) with the dispatcher pinned to
CPU 0 and wrk, the gateways and this observer on CPU 1. It then SIGKILLs or
SIGSTOPs one of three gateways per trial and measures, as scenario 2 does, the
time from the signal to the last ``/v1/dispatch`` answer that still names the
gateway (primary or alternate). The issue's bounds: 1 s for a crashed gateway
and 2 s for a hung one.

    python -m bench.detect_under_load [--trials N] [--quiet-baseline]

``--quiet-baseline`` runs the same trials first without wrk, for the ratio.
Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    GatewayHandle,
    ProcGroup,
    revive,
    start_dispatcher,
    start_gateway,
    wait_until,
)
from bench.failure_detection import Watch, _pool_up

BOUNDS = {"SIGKILL": 1.0, "SIGSTOP": 2.0}
TRIAL_BOUND_S = 10.0
# wrk's tickets must not fill the gateways (that would hide the victim for the wrong reason)
CAPACITY = ["--capacity", "10000000"]
WRK_MAX_S = 600


async def _trials(
    kinds: list[str],
    trials: int,
    gws: list[GatewayHandle],
    url: str,
    group: ProcGroup,
    secret: Path,
) -> list[dict[str, Any]]:
    watch = Watch(url, Path("/nonexistent"))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(watch.dispatch_loop(c, stop)) for c in watch.clients]
    out: list[dict[str, Any]] = []
    try:
        for n, kind in enumerate(k for _ in range(trials) for k in kinds):
            g = gws[n % len(gws)]

            def up(gid: str = g.id) -> bool:
                return _pool_up(url, gid) and time.monotonic() - watch.last_named.get(gid, 0) < 0.5

            await asyncio.to_thread(wait_until, up, 30, 0.1, f"{g.id} back in rotation")
            t0 = time.monotonic()
            g.signal(signal.SIGKILL if kind == "SIGKILL" else signal.SIGSTOP)
            while time.monotonic() - t0 < TRIAL_BOUND_S:
                await asyncio.sleep(0.1)
                if time.monotonic() - watch.last_named.get(g.id, 0) > 1.5:
                    break
            took = round(max(0.0, watch.last_named.get(g.id, t0) - t0), 3)
            out.append({"kind": kind, "gateway": g.id, "seconds": took})
            print(f"  {kind} {g.id}: out of rotation after {took} s", flush=True)
            await revive(group, g, kind)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in watch.clients:
            c.close()
    # The figure is only as fine as the observer's sampling: say how often it got an answer.
    print(
        f"  observer: {watch.requests} answers ({watch.ok} naming gateways), {watch.errors} errors",
        flush=True,
    )
    return out


def _summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for kind in BOUNDS:
        vals = [r["seconds"] for r in rows if r["kind"] == kind]
        if vals:
            out[kind] = {
                "median_s": statistics.median(vals),
                "max_s": max(vals),
                "trials": len(vals),
            }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5, help="trials per signal (default 5)")
    ap.add_argument(
        "--quiet-baseline", action="store_true", help="first the same trials without load"
    )
    args = ap.parse_args()
    os.sched_setaffinity(
        0, {1}
    )  # the observer (and the gateways it starts) stay off the dispatcher's core
    from tcpdispatch import aio

    with tempfile.TemporaryDirectory(prefix="tcpdsuite-dul-") as tmp:
        work = Path(tmp)
        secret = work / "ticket.secret"
        secret.write_text("bench-secret-0123456789abcdef\n")
        group = ProcGroup(work)
        wrk: subprocess.Popen[str] | None = None
        try:
            gws = [
                start_gateway(group, f"g{i}", *CAPACITY, secret_file=secret, weight=i)
                for i in (1, 2, 3)
            ]
            disp = start_dispatcher(
                group, work, gws, secret, extra_toml="[balancing]\nslow_start_s = 0\n"
            )
            os.sched_setaffinity(disp.proc.popen.pid, {0})
            results: dict[str, Any] = {}
            if args.quiet_baseline:
                print("without load:", flush=True)
                results["quiet"] = _summary(
                    aio.run(_trials(list(BOUNDS), args.trials, gws, disp.url, group, secret))
                )
            print("with wrk saturating the dispatcher (keep-alive, 50 connections):", flush=True)
            wrk = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    "1",
                    "wrk",
                    "-t1",
                    "-c50",
                    f"-d{WRK_MAX_S}s",
                    f"{disp.url}/v1/dispatch?client_id=storm",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            time.sleep(2)  # let wrk reach full rate
            t0 = time.monotonic()
            loaded = aio.run(_trials(list(BOUNDS), args.trials, gws, disp.url, group, secret))
            elapsed = time.monotonic() - t0
            results["saturated"] = _summary(loaded)
            wrk.send_signal(signal.SIGINT)  # wrk prints its totals on SIGINT
            text = wrk.communicate(timeout=30)[0]
            total = re.search(r"(\d+) requests in", text)
            rate = int(total.group(1)) / (elapsed + 2) if total else float("nan")
            print(f"dispatcher answered about {rate:,.0f} req/s to wrk meanwhile", flush=True)
        finally:
            if wrk is not None and wrk.poll() is None:
                os.killpg(wrk.pid, signal.SIGKILL)
                wrk.wait(timeout=10)
            group.stop()
    ok = True
    for label, summary in results.items():
        for kind, s in summary.items():
            met = s["max_s"] <= BOUNDS[kind]
            ok &= met or label == "quiet"
            print(
                f"{label:10s} {kind}: median {s['median_s']:.3f} s, max {s['max_s']:.3f} s over "
                f"{s['trials']} trials (bound {BOUNDS[kind]} s: {'met' if met else 'NOT met'})"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
