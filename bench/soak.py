"""Soak test: a whole system under steady churn, watched for memory and file-descriptor leaks.

    python -m bench.soak --minutes 10        # make soak MINUTES=10

Starts a dispatcher and three gateways (with the test harness, ``tests/harness``) and, in this
process, a fleet of SDK clients. For the whole run it keeps ``--clients``
sessions open while replacing ``--churn`` of them per second (close one,
connect a new one through the dispatcher) and sends ``--rate`` echo messages
per second over random sessions. Every ``--interval`` seconds it samples the
RSS and the number of open file descriptors of every process (the four
servers and this driver, which holds the clients) with psutil.

After a warm-up (the first quarter of the run, at least 30 s) it fits a
least-squares line through each series and also compares the median of the
last third of the samples with the median of the first third (the descriptor
count of a gateway moves by a few with the connections in flight, so a slope
alone would flag noise on a short run). A process fails the soak when

* its RSS slope exceeds ``--max-rss-slope`` KiB/min (default 256 KiB/min,
  about 15 MiB/h: with 10 connects/s this catches a leak of ~0.5 KiB per
  connection) and its median RSS grew by more than 1 MiB, or
* its descriptor slope exceeds ``--max-fd-slope`` per minute (default
  0.5/min: one descriptor lost per ~1,200 connections) and its median
  descriptor count grew by more than 4.

It prints the figures, writes them (with every sample) to
``bench/results/soak.json`` and exits 1 when any process keeps growing: the
servers (dispatcher and gateways) and this driver, which holds the SDK
clients. ``--no-check-driver`` reports the driver's figures without letting
them fail the run (e.g. when the driver is instrumented).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import aiohttp
import psutil
from harness import ProcGroup, start_dispatcher, start_gateway

from tcpdispatch.client import Client
from tcpdispatch.tickets import generate_secret

RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
RSS_NOISE_KIB = 1024  # median growth below this is allocator noise, whatever the slope
FD_NOISE = 4  # descriptors in flight with the churn
DRIVER = "driver (clients)"


@dataclass
class Series:
    """Samples of one process: (seconds since start, RSS bytes, open fds)."""

    name: str
    pid: int
    children: bool = True  # add the process's children (a gateway's --workers)
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    def sample(self, t: float) -> bool:
        try:
            procs = [psutil.Process(self.pid)]
            if self.children:
                procs += procs[0].children(recursive=True)
            rss = sum(p.memory_info().rss for p in procs)
            fds = sum(p.num_fds() for p in procs)
        except psutil.Error:
            return False
        self.samples.append((t, rss, fds))
        return True


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per second) of ``(t, y)`` points."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / den if den else 0.0


@dataclass
class Traffic:
    connects: int = 0
    connect_failures: int = 0
    closes: int = 0
    sent: int = 0
    echoed: int = 0
    foreign: int = 0


class Fleet:
    """The churning clients of the soak."""

    def __init__(self, url: str, n: int, rng: random.Random) -> None:
        self.url = url
        self.n = n
        self.rng = rng
        self.clients: list[Client] = []
        self.traffic = Traffic()
        self.http: aiohttp.ClientSession | None = None
        self._next = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reader(self, c: Client) -> None:
        async for payload in c:
            if payload.startswith(c.client_id.encode() + b":"):
                self.traffic.echoed += 1
            else:
                self.traffic.foreign += 1

    async def open_one(self) -> None:
        self._next += 1
        c = Client(
            [self.url],
            client_id=f"soak{self._next}",
            http=self.http,
            rng=random.Random(self._next),
            dispatch_timeout=2.0,
        )
        try:
            await c.connect(timeout=15)
        except Exception:  # noqa: BLE001 - counted; the soak goes on
            self.traffic.connect_failures += 1
            await c.close()
            return
        self.clients.append(c)  # only connected clients can be picked for closing
        self.traffic.connects += 1
        self._spawn(self._reader(c))

    async def close_one(self) -> None:
        if not self.clients:
            return
        c = self.clients.pop(self.rng.randrange(len(self.clients)))
        await c.close()
        self.traffic.closes += 1

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50))
        sem = asyncio.Semaphore(25)

        async def one() -> None:
            async with sem:
                await self.open_one()

        await asyncio.gather(*(one() for _ in range(self.n)))

    async def churn(self, per_s: float, until: float) -> None:
        """Replace ``per_s`` clients per second (close one, open one)."""
        period = 1.0 / per_s
        while time.monotonic() < until:
            await self.close_one()
            if len(self._tasks) < 2 * self.n:  # bounded: never more than 2N connects in flight
                self._spawn(self.open_one())
            await asyncio.sleep(period)

    async def talk(self, per_s: float, until: float) -> None:
        """Send ``per_s`` messages per second over random open sessions."""
        tick = 0.05
        seq = 0
        while time.monotonic() < until:
            for _ in range(max(1, round(per_s * tick))):
                live = [c for c in self.clients if c.connected]
                if not live:
                    break
                c = self.rng.choice(live)
                seq += 1
                try:
                    await c.send(f"{c.client_id}:{seq}".encode())
                    self.traffic.sent += 1
                except Exception:  # noqa: BLE001, S110 - a client closed by churn in between
                    pass
            await asyncio.sleep(tick)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        if self.http is not None:
            await self.http.close()


def analyse(
    series: list[Series], warmup: float, max_rss: float, max_fd: float
) -> list[dict[str, Any]]:
    rows = []
    for s in series:
        post = [p for p in s.samples if p[0] >= warmup]
        rss_slope = slope([(t, rss) for t, rss, _ in post]) * 60 / 1024  # KiB/min
        fd_slope = slope([(t, fds) for t, _, fds in post]) * 60  # fds/min
        third = max(1, len(post) // 3)
        rss_growth = (
            median([p[1] for p in post[-third:]]) - median([p[1] for p in post[:third]])
        ) / 1024
        fd_growth = median([p[2] for p in post[-third:]]) - median([p[2] for p in post[:third]])
        growing = (rss_slope > max_rss and rss_growth > RSS_NOISE_KIB) or (
            fd_slope > max_fd and fd_growth > FD_NOISE
        )
        rows.append(
            {
                "process": s.name,
                "pid": s.pid,
                "samples": len(post),
                "rss_start_mib": round(post[0][1] / 2**20, 1) if post else None,
                "rss_end_mib": round(post[-1][1] / 2**20, 1) if post else None,
                "rss_slope_kib_per_min": round(rss_slope, 1),
                "fds_start": post[0][2] if post else None,
                "fds_end": post[-1][2] if post else None,
                "fd_slope_per_min": round(fd_slope, 2),
                "rss_median_growth_kib": round(rss_growth),
                "fd_median_growth": fd_growth,
                "growing": bool(len(post) >= 3 and growing),
                "too_few_samples": len(post) < 3,
            }
        )
    return rows


async def soak(args: argparse.Namespace) -> int:
    duration = args.minutes * 60
    warmup = max(30.0, duration * args.warmup)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="tcpdispatch-soak-"))
    group = ProcGroup(work)
    secret = work / "ticket.secret"
    secret.write_text(generate_secret() + "\n")
    fleet: Fleet | None = None
    try:
        gws = [
            start_gateway(
                group,
                gid,
                "--heartbeat",
                "2",
                "--capacity",
                str(args.clients * 4),
                secret_file=secret,
                log_level="warning",
                timeout=60,
            )
            for gid in ("g1", "g2", "g3")
        ]
        disp = start_dispatcher(
            group, work, gws, secret, dispatcher={"policy": "p2c"}, log_level="warning", timeout=60
        )
        series = [Series("dispatcher", disp.proc.popen.pid)]
        series += [Series(f"gateway {gw.id}", gw.proc.popen.pid) for gw in gws]
        series.append(Series(DRIVER, os.getpid(), children=False))  # the servers are its children
        fleet = Fleet(disp.url, args.clients, rng)
        print(
            f"soak: {args.minutes:g} min, {args.clients} clients, churn {args.churn}/s, "
            f"{args.rate} msg/s, sampling every {args.interval:g}s, warm-up {warmup:.0f}s",
            flush=True,
        )
        await fleet.start()
        start = time.monotonic()
        until = start + duration
        workers = [
            asyncio.create_task(fleet.churn(args.churn, until)),
            asyncio.create_task(fleet.talk(args.rate, until)),
        ]
        next_report = start
        while time.monotonic() < until:
            t = time.monotonic() - start
            for s in series:
                if not s.sample(t) and s.name != DRIVER:
                    raise RuntimeError(f"{s.name} (pid {s.pid}) died; logs in {work}")
            if time.monotonic() >= next_report:
                tr = fleet.traffic
                mem = ", ".join(
                    f"{s.name.split()[-1]} {s.samples[-1][1] / 2**20:.0f}M/{s.samples[-1][2]}fd"
                    for s in series
                )
                print(
                    f"  t={t:5.0f}s open={len(fleet.clients)} connects={tr.connects} "
                    f"sent={tr.sent} echoed={tr.echoed} | {mem}",
                    flush=True,
                )
                next_report += 60
            await asyncio.sleep(args.interval)
        await asyncio.gather(*workers)
        await asyncio.sleep(1.0)  # last echoes
        rows = analyse(series, warmup, args.max_rss_slope, args.max_fd_slope)
        tr = fleet.traffic
        result = {
            "minutes": args.minutes,
            "clients": args.clients,
            "churn_per_s": args.churn,
            "rate_per_s": args.rate,
            "interval_s": args.interval,
            "warmup_s": warmup,
            "thresholds": {
                "rss_slope_kib_per_min": args.max_rss_slope,
                "rss_median_growth_kib": RSS_NOISE_KIB,
                "fd_slope_per_min": args.max_fd_slope,
                "fd_median_growth": FD_NOISE,
            },
            "traffic": vars(tr),
            "processes": rows,
            "samples": {s.name: s.samples for s in series},
            "ok": not any(r["growing"] for r in rows if args.check_driver or r["process"] != DRIVER)
            and tr.foreign == 0,
        }
    finally:
        if fleet is not None:
            await fleet.close()
        group.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n{'process':<18}{'RSS MiB start->end':>20}{'KiB/min':>10}"
        f"{'fds start->end':>16}{'fds/min':>9}  verdict"
    )
    for r in rows:
        verdict = "GROWING" if r["growing"] else ("too short" if r["too_few_samples"] else "flat")
        if r["process"] == DRIVER and not args.check_driver:
            verdict += " (informational)"
        print(
            f"{r['process']:<18}{r['rss_start_mib']:>9} -> "
            f"{r['rss_end_mib']:<8}{r['rss_slope_kib_per_min']:>10}{r['fds_start']:>7} -> "
            f"{r['fds_end']:<6}{r['fd_slope_per_min']:>9}  {verdict}"
        )
    print(
        f"traffic: {tr.connects} connects ({tr.connect_failures} failed), {tr.closes} closes, "
        f"{tr.sent} messages sent, {tr.echoed} echoed, {tr.foreign} misdelivered"
    )
    print(
        f"thresholds: RSS {args.max_rss_slope:g} KiB/min and +{RSS_NOISE_KIB} KiB, "
        f"fds {args.max_fd_slope:g}/min and +{FD_NOISE} "
        f"(after {warmup:.0f}s warm-up)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}; soak {'PASSED' if result['ok'] else 'FAILED'}")
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--minutes", type=float, default=10.0, help="run time after the fleet is connected"
    )
    p.add_argument("--clients", type=int, default=200, help="sessions kept open")
    p.add_argument("--churn", type=float, default=10.0, help="sessions replaced per second")
    p.add_argument("--rate", type=float, default=200.0, help="echo messages per second")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument(
        "--warmup", type=float, default=0.25, help="share of the run ignored by the fit (>= 30 s)"
    )
    p.add_argument("--max-rss-slope", type=float, default=256.0, help="KiB/min per process")
    p.add_argument("--max-fd-slope", type=float, default=0.5, help="descriptors/min per process")
    p.add_argument(
        "--check-driver",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fail when the driver process (the SDK clients) grows (default: on)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not (
        args.minutes > 0
        and args.clients > 0
        and args.churn > 0
        and args.rate > 0
        and args.interval > 0
    ):
        p.error("--minutes, --clients, --churn, --rate and --interval must be > 0")
    from tcpdispatch.aio import run

    return int(run(soak(args)) or 0)


if __name__ == "__main__":
    sys.exit(main())
