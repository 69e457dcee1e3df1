"""What the live dashboard's event streams cost the dispatcher's dispatch throughput (issue 18).

Run as ``python -m bench.dashboard_cost [--gateways N] [--streams K] [--duration S] [--rounds R]``.

One dispatcher (pinned to CPU 0) holds ``--gateways`` push gateways. A feeder sends a heartbeat
for every one of them each second with a new connection count, so every pool row changes every
second and each ``GET /v1/events`` stream carries all of them every second: the worst case for
the stream. wrk (CPU 1) measures keep-alive ``GET /v1/dispatch`` throughput with no stream open,
then with ``--streams`` streams read by curl; rounds alternate and the best of each counts. The
feeder runs in both phases, so the difference is the streams' cost alone (medians and bests
of the rounds are both printed). Before that, with no wrk running, the dispatcher's own CPU
time is read with and without the streams: on a shared machine the cleanest of the figures.
On a shared machine that difference can drown in noise, so the script also times, in
process, what the streams
add per second: one overview snapshot of the pool (shared by all streams) plus, per stream,
the changed-rows diff and its SSE encoding, as a share of one second of one core.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from harness import free_port, write_dispatcher_toml

from bench.dispatch_throughput import wait_http, wrk

TOKEN = "bench-dashboard-admin-token"


def feeder(port: int, gateways: int, stop: threading.Event) -> None:
    """A heartbeat for every gateway each second (one keep-alive connection), connections rising."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    n = 0
    while not stop.is_set():
        started = time.monotonic()
        for i in range(gateways):
            if stop.is_set():
                break
            body = json.dumps(
                {
                    "id": f"gw-{i:04d}",
                    "state": "serving",
                    "connections": (n + i) % 4000,
                    "capacity": 5000,
                }
            )
            conn.request(
                "POST",
                "/v1/heartbeat",
                body,
                {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            )
            conn.getresponse().read()
        n += 1
        stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))
    conn.close()


def in_process_cost(gateways: int, streams: int, ticks: int = 20) -> tuple[float, float]:
    """CPU seconds per second of streaming, all rows changing each tick (see the module doc):
    (the shared snapshot, each stream's diff and encoding). CPU time, not wall time, so other
    processes on a shared machine do not inflate it."""
    import random

    from tcpdispatch.config import parse_config
    from tcpdispatch.dispatcher.events import pool_update, sse
    from tcpdispatch.dispatcher.overview import Overview
    from tcpdispatch.dispatcher.pool import Pool
    from tcpdispatch.dispatcher.service import DispatchService

    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-cpu-"))
    (work / "s").write_text("bench-secret-0123456789abcdef\n")
    doc = {
        "dispatcher": {"secret_file": "s"},
        "gateways": [
            {"id": f"gw-{i:04d}", "address": f"127.0.0.1:{20000 + i}", "check": "push"}
            for i in range(gateways)
        ],
    }
    cfg = parse_config(doc, file="bench.toml", base=work, env={})
    pool = Pool(cfg, rng=random.Random(1))
    service = DispatchService(cfg, pool)
    clock = [0.0]
    overview = Overview(
        pool,
        service.stats,
        service.answer_times,
        lambda: None,
        clock=lambda: clock[0],
    )
    sent: list[dict[str, bytes]] = [{} for _ in range(streams)]
    shared = per_stream = 0.0
    for tick in range(ticks):
        for gw in pool.gateways.values():  # every row changes (a new connection count)
            gw.load.report(tick * 7 + len(gw.id))
        clock[0] += 1.0
        t0 = time.process_time()
        view = overview.snapshot()
        t1 = time.process_time()
        for k in range(streams):
            data, sent[k] = pool_update(view, sent[k])
            sse("pool", data)
        shared += t1 - t0
        per_stream += (time.process_time() - t1) / max(1, streams)
    return shared / ticks, per_stream / ticks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateways", type=int, default=1000)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument(
        "--readers-cpu",
        default="1",
        help="CPU for the curl stream readers during the wrk rounds (0: the dispatcher's own, the "
        "conservative choice; 1: wrk's)",
    )
    args = ap.parse_args()
    shared, each = in_process_cost(args.gateways, args.streams)
    total = shared + args.streams * each
    print(
        f"in process, {args.gateways} gateways all changing each second: the shared snapshot takes "
        f"{shared * 1000:.1f} ms of CPU per second, each stream {each * 1000:.2f} ms more; "
        f"{args.streams} streams: {100 * total:.2f} % of one core"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    (work / "s").write_text("bench-secret-0123456789abcdef\n")
    (work / "a").write_text(TOKEN + "\n")
    port = free_port()
    write_dispatcher_toml(
        work / "d.toml",
        listen=f"127.0.0.1:{port}",
        secret_file=work / "s",
        admin_token_file=work / "a",
        sections={"health": {"ttl": 30}},
        gateways=[
            {"id": f"gw-{i:04d}", "address": f"127.0.0.1:{20000 + i % 40000}", "check": "push"}
            for i in range(args.gateways)
        ],
    )
    log = (work / "dispatcher.log").open("wb")
    disp = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-m",
            "tcpdispatch",
            "dispatcher",
            "--config",
            str(work / "d.toml"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stop = threading.Event()
    readers: list[subprocess.Popen[bytes]] = []
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz")
        feed = threading.Thread(target=feeder, args=(port, args.gateways, stop), daemon=True)
        feed.start()
        time.sleep(3)  # every gateway up (rise = 2 heartbeats)
        proc = psutil.Process(disp.pid)

        def cpu_share(seconds: float) -> float:
            before = proc.cpu_times()
            time.sleep(seconds)
            after = proc.cpu_times()
            return (after.user + after.system - before.user - before.system) / seconds

        idle: dict[int, list[float]] = {0: [], args.streams: []}
        for _ in range(
            2
        ):  # the dispatcher's CPU without wrk: heartbeats only, then with the streams
            for k, shares in idle.items():
                readers = [
                    subprocess.Popen(
                        ["taskset", "-c", "1", "curl", "-sN", url + "/v1/events"],
                        stdout=subprocess.DEVNULL,
                    )
                    for _ in range(k)
                ]
                time.sleep(1.0)
                shares.append(cpu_share(6.0))
                for r in readers:
                    r.terminate()
                    r.wait(5)
                readers = []
        without, with_streams = (statistics.median(v) for v in idle.values())
        print(
            f"dispatcher CPU, no wrk: {100 * without:.1f} % of a core without "
            f"streams, {100 * with_streams:.1f} % with {args.streams} "
            f"(heartbeats for {args.gateways} gateways in both)"
        )
        results: dict[str, list[float]] = {"no stream": [], f"{args.streams} streams": []}
        for _ in range(args.rounds):
            results["no stream"].append(
                wrk(
                    url + "/v1/dispatch?client_id=bench",
                    args.duration,
                    args.connections,
                    close=False,
                )
            )
            readers = [
                subprocess.Popen(
                    ["taskset", "-c", args.readers_cpu, "curl", "-sN", url + "/v1/events"],
                    stdout=subprocess.DEVNULL,
                )
                for _ in range(args.streams)
            ]
            time.sleep(1.5)
            results[f"{args.streams} streams"].append(
                wrk(
                    url + "/v1/dispatch?client_id=bench",
                    args.duration,
                    args.connections,
                    close=False,
                )
            )
            for r in readers:
                r.terminate()
                r.wait(5)
            readers = []
        for name, values in results.items():
            print(
                f"{name:>10}: median {statistics.median(values):,.0f}, "
                f"best {max(values):,.0f} dispatches/s "
                "(rounds: " + ", ".join(f"{v:,.0f}" for v in values) + ")"
            )
        base, loaded = (statistics.median(v) for v in results.values())
        best_base, best_loaded = (max(v) for v in results.values())
        print(
            f"{args.gateways} gateways, every row changing each second: {args.streams} "
            f"open streams cost {100 * (1 - loaded / base):.1f} % of dispatch "
            f"throughput by the medians, {100 * (1 - best_loaded / best_base):.1f} % "
            f"by the best of {args.rounds} rounds each"
        )
    finally:
        stop.set()
        time.sleep(1.2)  # the feeder ends its round before the dispatcher goes
        for r in readers:
            r.terminate()
        disp.terminate()
        disp.wait(10)
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
