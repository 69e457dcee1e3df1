"""``tcpdispatch loadgen``: hold N client connections over P processes and summarise.

Each worker process runs :func:`tcpdispatch.client.loadgen.run_worker` on its
own event loop and sends progress reports to the parent over a queue. With
many clients every worker binds its sockets to its own loopback source
address (127.0.0.2, 127.0.0.3, ...), so each has the whole ephemeral port
range to itself. Every process stops by itself at ``--duration``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from typing import Any

from tcpdispatch.aio import run as aio_run
from tcpdispatch.client.cli import (
    add_common_arguments,
    backoff_from,
    security_from,
    urls_and_fallback,
)
from tcpdispatch.client.loadgen import Report, WorkerConfig, merge, run_worker
from tcpdispatch.errors import ConfigError

MAX_CLIENTS_PER_PROCESS = 18_000  # 20,000 open files per process, minus headroom
SOURCE_ADDRESS_THRESHOLD = 2_000
WORKER_EXIT_GRACE = 20.0  # seconds a finished worker waits for its report to be read


DESCRIPTION = """\
Hold N client connections, spread over worker processes, for --duration seconds and print
a summary: connects, reconnects, errors (dispatcher requests and gateway attempts), clients
per gateway, connect and reconnect latencies. With many clients each worker uses its own
loopback source address (127.0.0.2, 127.0.0.3, ...). Exits 1 when clients are missing at
the end (the last line says FAILED and why), 2 on bad arguments."""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "loadgen",
        help="hold N client connections and report connects, reconnects, latencies",
        description=DESCRIPTION,
    )
    add_common_arguments(p)
    p.add_argument("--clients", type=int, required=True, metavar="N", help="connections to hold")
    p.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        metavar="R",
        help="new clients started per second, all processes together",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=30.0,
        metavar="S",
        help="run time in seconds, ramp-up included",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="P",
        help=f"worker processes (default: one per 5,000 clients; at most "
        f"{MAX_CLIENTS_PER_PROCESS} clients each)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=None,
        metavar="S",
        help="client PING interval (default: what the gateway's WELCOME says)",
    )
    p.add_argument(
        "--source-addresses",
        choices=["auto", "on", "off"],
        default="auto",
        help="bind each worker to its own 127.0.0.x source address "
        f"(auto: when more than {SOURCE_ADDRESS_THRESHOLD} clients)",
    )
    p.add_argument(
        "--dispatch-connections",
        type=int,
        default=100,
        metavar="N",
        help="keep-alive HTTP connections to the dispatchers per process",
    )
    p.add_argument(
        "--progress-file",
        default=None,
        metavar="FILE",
        help="append merged progress as JSON lines (t, started, connected, reconnects, "
        "gateways) about twice a second, for scripts",
    )
    p.add_argument(
        "--message-interval",
        type=float,
        default=None,
        metavar="S",
        help="each client sends a numbered message about every S seconds and checks its echo "
        "(needs the echo handler); the summary counts messages_sent and messages_echoed",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="seed the clients' randomness (reproducible backoff and choices)",
    )
    p.set_defaults(func=run)


def plan(args: argparse.Namespace) -> list[WorkerConfig]:
    """Split the clients over worker processes; raises ConfigError for impossible requests."""
    dispatchers, fallback = urls_and_fallback(args)
    if args.clients < 1:
        raise ConfigError("must be at least 1", key="--clients")
    if args.duration <= 0:
        raise ConfigError("must be positive", key="--duration")
    if args.message_interval is not None and not 0.01 <= args.message_interval <= 3600:
        raise ConfigError("must be between 0.01 and 3600 seconds", key="--message-interval")
    procs = args.processes or max(1, math.ceil(args.clients / 5000))
    if procs < 1:
        raise ConfigError("must be at least 1", key="--processes")
    procs = min(procs, args.clients)
    if math.ceil(args.clients / procs) > MAX_CLIENTS_PER_PROCESS:
        raise ConfigError(
            f"{args.clients} clients over {procs} processes exceeds {MAX_CLIENTS_PER_PROCESS} per "
            "process (open-file limit); use --processes "
            f"{math.ceil(args.clients / MAX_CLIENTS_PER_PROCESS)} or more",
            key="--processes",
        )
    bind = args.source_addresses == "on" or (
        args.source_addresses == "auto" and args.clients > SOURCE_ADDRESS_THRESHOLD
    )
    security = security_from(args)
    configs = []
    for i in range(procs):
        n = args.clients // procs + (1 if i < args.clients % procs else 0)
        configs.append(
            WorkerConfig(
                index=i,
                clients=n,
                dispatchers=dispatchers,
                fallback=fallback,
                rate=args.rate * n / args.clients,
                duration=args.duration,
                local_host=f"127.0.{i // 254}.{2 + i % 254}" if bind else None,
                backoff=backoff_from(args),
                dispatch_timeout=args.dispatch_timeout,
                handshake_timeout=args.handshake_timeout,
                heartbeat=args.heartbeat,
                seed=None if args.seed is None else args.seed * 1000 + i,
                http_connections=max(1, args.dispatch_connections),
                **security,
                message_interval=args.message_interval,
            )
        )
    return configs


def _worker_main(cfg: WorkerConfig, q: Any, parent: int) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)  # stop early, still report

        async def orphan_check() -> None:  # the parent was killed: stop instead of running on
            while os.getppid() == parent:
                await asyncio.sleep(1.0)
            stop.set()

        checker = loop.create_task(orphan_check())
        await run_worker(cfg, q.put, stop)
        checker.cancel()

    # A dead parent never drains the queue, and a process exiting with queued
    # data waits for it forever: give the report a bounded time to leave.
    watchdog = threading.Timer(WORKER_EXIT_GRACE, os._exit, args=(3,))
    watchdog.daemon = True
    try:
        aio_run(main())
    finally:
        watchdog.start()
        q.close()
        q.join_thread()


class _Display:
    """Live rich table when stdout is a terminal; silent otherwise."""

    def __init__(self, enabled: bool, target: int) -> None:
        self.live = None
        self.target = target
        if enabled and importlib.util.find_spec("rich") is not None:  # rich comes with [server]
            from rich.live import Live

            self.live = Live(self._render({}), refresh_per_second=4, transient=False)
            self.live.start()

    def _render(self, latest: dict[int, Report]) -> Any:
        from rich.table import Table

        gateways: dict[str, int] = {}
        tot = {"started": 0, "connected": 0, "reconnects": 0, "failed_rounds": 0}
        elapsed = 0.0
        for r in latest.values():
            for k in tot:
                tot[k] += r.get(k, 0)
            for g, n in r.get("gateways", {}).items():
                gateways[g] = gateways.get(g, 0) + n
            elapsed = max(elapsed, r.get("elapsed", 0.0))
        table = Table(title=f"tcpdispatch loadgen  {elapsed:5.1f}s", expand=False)
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_row("started", f"{tot['started']:,} / {self.target:,}")
        table.add_row("connected", f"{tot['connected']:,}")
        table.add_row("reconnects", f"{tot['reconnects']:,}")
        table.add_row("failed rounds", f"{tot['failed_rounds']:,}")
        for g, n in sorted(gateways.items()):
            table.add_row(f"  on {g}", f"{n:,}")
        return table

    def update(self, latest: dict[int, Report]) -> None:
        if self.live is not None:
            self.live.update(self._render(latest))

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()


def run(args: argparse.Namespace) -> int:
    configs = plan(args)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    workers = [
        ctx.Process(target=_worker_main, args=(cfg, q, os.getpid()), daemon=True) for cfg in configs
    ]
    for w in workers:
        w.start()

    def forward(signum: int, frame: object) -> None:
        for w in workers:
            if w.pid is not None and w.is_alive():
                os.kill(w.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)  # SIGTERM: every worker stops early and reports
    display = _Display(sys.stdout.isatty() and not args.json, args.clients)
    latest: dict[int, Report] = {}
    finals: dict[int, Report] = {}
    # Workers stop at --duration; allow time to close 10,000 clients, then give up on them.
    deadline = time.monotonic() + args.duration + 30 + args.clients / 2000
    progress = open(args.progress_file, "a", buffering=1) if args.progress_file else None  # noqa: SIM115
    last_line = 0.0
    try:
        while len(finals) < len(workers) and time.monotonic() < deadline:
            try:
                rep = q.get(timeout=0.25)
            except KeyboardInterrupt:  # Ctrl-C: workers stop early; collect their reports
                forward(signal.SIGINT, None)
                deadline = min(deadline, time.monotonic() + 30)
                continue
            except queue.Empty:
                if all(not w.is_alive() for w in workers) and q.empty():
                    break
                continue
            latest[rep["worker"]] = rep
            if rep["type"] == "final":
                finals[rep["worker"]] = rep
            display.update(latest)
            if progress is not None and time.monotonic() - last_line >= 0.5:
                last_line = time.monotonic()
                progress.write(json.dumps(_progress_line(latest)) + "\n")
    except KeyboardInterrupt:
        pass
    finally:
        display.stop()
        if progress is not None:
            progress.close()
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.kill()
                w.join(timeout=5)
    summary = merge(list(finals.values()))
    summary["missing_workers"] = len(workers) - len(finals)
    ok, verdict_line = verdict(summary)
    summary["ok"] = ok
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        print_summary(summary)
    print(verdict_line, file=sys.stderr if args.json else sys.stdout)  # stdout stays pure JSON
    return 0 if ok else 1


def verdict(s: Report) -> tuple[bool, str]:
    """Whether the run succeeded (every client connected at the end, every worker reported), and
    the one line that says so."""
    problems = []
    if s["connected"] < s["clients"]:
        problems.append(
            f"{s['clients'] - s['connected']} of {s['clients']} clients not connected at the end"
        )
    if s.get("missing_workers"):
        problems.append(f"{s['missing_workers']} worker process(es) did not report")
    if problems:
        return False, "FAILED: " + "; ".join(problems)
    return True, f"OK: all {s['clients']} clients connected at the end"


def _progress_line(latest: dict[int, Report]) -> Report:
    gateways: dict[str, int] = {}
    for r in latest.values():
        for g, n in r.get("gateways", {}).items():
            gateways[g] = gateways.get(g, 0) + n
    return {
        "t": time.time(),
        "workers": len(latest),
        **{
            k: sum(r.get(k, 0) for r in latest.values())
            for k in ("started", "connected", "ever_connected", "reconnects", "failed_rounds")
        },
        "gateways": gateways,
    }


def print_summary(s: Report) -> None:
    lat, ttr = s["connect_latency_s"], s["time_to_reconnect_s"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.0f} ms"

    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(d.items())) or "none"

    print(
        f"clients: {s['clients']}  started: {s['started']}  connected at end: {s['connected']}  "
        f"ever connected: {s['ever_connected']}"
    )
    print(
        f"reconnects: {s['reconnects']}  failed rounds: {s['failed_rounds']}  "
        f"dispatch requests: {s['dispatch_requests']}  still disconnected: {s['unrepaired']}"
    )
    # The two kinds of failure, named alike: dispatcher requests, then gateway connect attempts.
    print(f"dispatcher request errors: {counts(s['dispatch_errors'])}")
    print(f"gateway attempt errors: {counts(s['errors'])}")
    print(
        "connected per gateway: "
        + (", ".join(f"{k}={v}" for k, v in s["gateways"].items()) or "none")
    )
    print(
        f"connect latency: p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}  p99 {ms(lat['p99'])}  "
        f"max {ms(lat['max'])}"
    )
    if s.get("messages_sent"):
        print(
            f"messages: {s['messages_sent']} sent, {s['messages_echoed']} echoed, "
            f"{s['messages_sent'] - s['messages_echoed']} lost"
        )
    if ttr["count"]:
        print(
            f"time to reconnect ({ttr['count']}): p50 {ms(ttr['p50'])}  p90 {ms(ttr['p90'])}  "
            f"p99 {ms(ttr['p99'])}  max {ms(ttr['max'])}"
        )
