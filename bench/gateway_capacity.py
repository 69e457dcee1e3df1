"""Gateway capacity benchmark: N connections, RSS per connection, connect rate, heartbeat CPU.

    python -m bench.gateway_capacity --connections 100000 --workers 6 --client-processes 7

Starts ``tcpdispatch gateway --workers W --no-ticket`` on free loopback ports,
measures the node's RSS (supervisor + workers) as a baseline, then opens N
connections from P client processes. Each connection does the real handshake
(HELLO -> WELCOME, via the protocol module) and then stays idle. Client
sockets are bound to distinct source addresses 127.0.0.2, 127.0.0.3, ... so
no single (source IP, destination) pair runs out of ephemeral ports. It
reports (RSS after - baseline) / N and the connect rate.

Then the heartbeat cost: the node's CPU time (user + system, supervisor and
workers, via psutil) over an idle window (connections open, nothing sent) and
over an equally long window in which every client pings each of its
connections once per heartbeat interval (``--heartbeat``, the gateway's
default 10 s, which the gateway also announces in WELCOME), spread evenly over
the interval, reading and discarding the PONGs. Heartbeat CPU = pinging - idle
CPU, reported as a share of one core and per PING, with the ping rate reached
against N / interval. The gateway runs with a long ``--idle-timeout`` so the
connections survive the connect and idle phases (the sweep interval, 1 s, is
the same as with the default 30 s). Then it kills everything. Every phase is
bounded by --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from harness import free_port

PER_SOURCE_IP = 12_000  # well under the ~28k ephemeral ports of one (src, dst) pair
MAX_FDS_PER_CLIENT = 19_000
IN_FLIGHT = 200
IP_BIND_ADDRESS_NO_PORT = 24  # Linux: pick the source port at connect(), not bind()
PING_TICK = 0.02  # the ping schedule is caught up this often, so no client sends bursts
RATE_TOLERANCE = 0.10


# -- client process -------------------------------------------------------------------
def _client_main(
    port: int, count: int, sources: list[str], first: int, conn_out: Any, stop_in: Any
) -> None:
    """Open ``count`` connections, report progress, hold
    them (pinging when told) until told to stop."""
    from tcpdispatch import aio
    from tcpdispatch.protocol import Connection, Hello, Ping, Pong, Role, Welcome

    pongs = [0]

    class Idle(asyncio.Protocol):
        def __init__(self, done: asyncio.Future[bool]) -> None:
            self.done = done
            self.conn = Connection(Role.CLIENT)

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            try:
                frames = self.conn.receive_data(data)
            except Exception:  # noqa: BLE001
                frames = []
            for f in frames:
                if isinstance(f, Pong):
                    pongs[0] += 1
                elif isinstance(f, Welcome) and not self.done.done():
                    self.done.set_result(True)
            if self.conn.state.name == "CLOSED" and not self.done.done():
                self.done.set_result(False)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.done.done():
                self.done.set_result(False)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(IN_FLIGHT)
        ok = failed = 0
        transports = []
        protos: list[Idle] = []

        async def one(i: int) -> None:
            nonlocal ok, failed
            async with sem:
                src = sources[i % len(sources)]
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.setblocking(False)
                    sock.bind((src, 0))
                    await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 30)
                    done: asyncio.Future[bool] = loop.create_future()
                    t, p = await loop.create_connection(lambda: Idle(done), sock=sock)
                    p.conn.send(Hello("", f"bench-{first + i}"))
                    t.write(p.conn.data_to_send())
                    if await asyncio.wait_for(done, 30):
                        ok += 1
                        transports.append(t)
                        protos.append(p)
                    else:
                        failed += 1
                        t.close()
                except (TimeoutError, OSError):
                    failed += 1
                    sock.close()

        tasks = [loop.create_task(one(i)) for i in range(count)]
        last = 0.0
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0.1)
            if time.monotonic() - last > 0.5:
                conn_out.send(("progress", ok, failed))
                last = time.monotonic()
        conn_out.send(("done", ok, failed))

        async def ping_window(start: float, duration: float, interval: float) -> None:
            """Ping connection i at offset i/n of each interval, in [start, start + duration)."""
            n = len(protos)
            rate = n / interval
            sent = idx = 0
            pongs_before = pongs[0]
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            end = start + duration
            while (now := time.monotonic()) < end:
                due = min(int((now - start) * rate), int(duration * rate))
                while sent < due:
                    p = protos[idx]
                    idx = (idx + 1) % n
                    if not p.transport.is_closing():
                        p.conn.send(Ping(sent))
                        p.transport.write(p.conn.data_to_send())
                    sent += 1
                await asyncio.sleep(PING_TICK)
            await asyncio.sleep(1.0)  # the last PONGs are still on their way
            closed = sum(1 for p in protos if p.transport.is_closing())
            conn_out.send(("pinged", sent, pongs[0] - pongs_before, closed))

        while True:  # hold the connections until told to stop
            cmd = await loop.run_in_executor(None, stop_in.recv)
            if cmd[0] != "ping" or not protos:
                break
            await ping_window(*cmd[1:])
        for t in transports:
            t.abort()

    aio.run(main())


# -- measurement ----------------------------------------------------------------------
def _node_rss(pid: int) -> tuple[int, int]:
    """(sum of RSS bytes, process count) of the gateway supervisor and its workers."""
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs), len(procs)


def _node_cpu(procs: list[Any]) -> float:
    """Sum of user + system CPU seconds of the given processes (gateway supervisor and workers)."""
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def _status(status_port: int) -> dict[str, Any]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=5) as r:
        return json.loads(r.read())


def run(args: argparse.Namespace) -> int:
    n, workers = args.connections, args.workers
    procs_needed = math.ceil(n / MAX_FDS_PER_CLIENT)
    clients = max(args.client_processes, procs_needed)
    n_sources = max(1, math.ceil(n / PER_SOURCE_IP))
    sources = [f"127.0.0.{2 + i}" for i in range(n_sources)]
    if n / workers > MAX_FDS_PER_CLIENT:
        print(
            f"note: {n / workers:.0f} connections per worker is "
            "over the 20,000-fd limit per process; raise --workers",
            file=sys.stderr,
        )
    port, status_port = free_port(), free_port()
    deadline = time.monotonic() + args.timeout
    gw = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tcpdispatch",
            "--log-level",
            "warning",
            "gateway",
            "--id",
            "bench",
            "--listen",
            f"127.0.0.1:{port}",
            "--status",
            f"127.0.0.1:{status_port}",
            "--no-ticket",
            "--workers",
            str(workers),
            "--capacity",
            str(n + 1000),
            "--heartbeat",
            f"{args.heartbeat:g}",
            "--idle-timeout",
            "3600",
            "--handshake-timeout",
            "120",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    ctx = multiprocessing.get_context("fork")
    children: list[Any] = []
    try:
        line = gw.stdout.readline() if gw.stdout else ""
        if not line.startswith("READY"):
            print(f"gateway did not start: {line!r}", file=sys.stderr)
            return 1
        time.sleep(2.0)  # let the workers settle after import
        base_rss, nproc = _node_rss(gw.pid)
        print(
            f"gateway: {workers} workers ({nproc} processes), "
            f"baseline RSS {base_rss / 2**20:.1f} MiB"
        )
        share = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
        pipes = []
        first = 0
        t0 = time.monotonic()
        for i, count in enumerate(share):
            up_r, up_w = ctx.Pipe(duplex=False)
            stop_r, stop_w = ctx.Pipe(duplex=False)
            # each client uses every source address so the per-IP spread stays even
            p = ctx.Process(target=_client_main, args=(port, count, sources, first, up_w, stop_r))
            p.start()
            first += count
            children.append(p)
            pipes.append((up_r, stop_w))
        state = [(0, 0, False)] * clients
        while not all(s[2] for s in state) and time.monotonic() < deadline:
            for i, (up_r, _) in enumerate(pipes):
                while up_r.poll(0.05):
                    kind, ok, failed = up_r.recv()
                    state[i] = (ok, failed, kind == "done")
            if any(p.exitcode not in (None, 0) for p in children):
                print("a client process died", file=sys.stderr)
                break
        elapsed = time.monotonic() - t0
        ok = sum(s[0] for s in state)
        failed = sum(s[1] for s in state)
        time.sleep(2.0)  # let the gateway settle (freed handshake buffers, sweep)
        rss, _ = _node_rss(gw.pid)
        status = _status(status_port)
        per = (rss - base_rss) / max(ok, 1)
        print(
            f"connections: {ok} open, {failed} failed, gateway /status says {status['connections']}"
        )
        print(
            f"connect time: {elapsed:.1f} s -> {ok / elapsed:.0f} connections/s "
            f"({clients} client processes, {len(sources)} source IPs)"
        )
        print(
            f"gateway RSS: {rss / 2**20:.1f} MiB total, +{(rss - base_rss) / 2**20:.1f} MiB for "
            f"{ok} connections = {per / 1024:.2f} KiB per connection"
        )
        ok_all = ok == n and status["connections"] == n
        if not ok_all:
            print("WARNING: not every connection was established", file=sys.stderr)
        if ok and args.window > 0:
            if time.monotonic() + 2 * args.window + 10 < deadline:
                _heartbeat_cpu(args, gw.pid, pipes, ok)
            else:
                print(
                    "heartbeat CPU skipped: not enough time left before --timeout", file=sys.stderr
                )
        for _, stop_w in pipes:
            try:
                stop_w.send("stop")
            except OSError:
                pass
        return 0 if ok_all else 1
    finally:
        for p in children:
            p.join(timeout=5)
            if p.exitcode is None:
                p.kill()
        try:
            os.killpg(gw.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        gw.wait(timeout=10)


def _heartbeat_cpu(
    args: argparse.Namespace, gw_pid: int, pipes: list[tuple[Any, Any]], n: int
) -> None:
    """Node CPU over an idle window, then over a window of
    PINGs at N / interval; print both and the difference."""
    import psutil

    root = psutil.Process(gw_pid)
    procs = [root, *root.children(recursive=True)]
    window, interval = args.window, args.heartbeat
    c0, t0 = _node_cpu(procs), time.monotonic()
    time.sleep(window)
    c1, t1 = _node_cpu(procs), time.monotonic()
    idle = (c1 - c0) / (t1 - t0)
    start = time.monotonic() + 0.5  # every client starts its schedule at the same instant
    for _, stop_w in pipes:
        stop_w.send(("ping", start, window, interval))
    time.sleep(max(0.0, start - time.monotonic()))
    c2, t2 = _node_cpu(procs), time.monotonic()
    time.sleep(max(0.0, start + window - time.monotonic()))
    c3, t3 = _node_cpu(procs), time.monotonic()
    busy = (c3 - c2) / (t3 - t2)
    sent = pongs = closed = 0
    for up_r, _ in pipes:
        if up_r.poll(window + 10):
            _, s, p, c = up_r.recv()
            sent, pongs, closed = sent + s, pongs + p, closed + c
    rate, expected = sent / window, n / interval
    share = busy - idle
    per_ping_us = share * window / max(sent, 1) * 1e6
    print(
        f"heartbeat: interval {interval:g} s, window {window:g} s: {sent} PINGs sent -> {rate:.0f} "
        f"PINGs/s (expected {expected:.0f}/s, {rate / expected * 100:.1f} %), {pongs} PONGs back, "
        f"{closed} connections closed"
    )
    print(
        f"heartbeat CPU: idle {idle:.3f} cores, pinging {busy:.3f} cores -> {share:.3f} of one core"
        f" = {per_ping_us:.1f} us per PING"
    )
    if abs(rate / expected - 1) > RATE_TOLERANCE:
        print(
            f"WARNING: ping rate {rate:.0f}/s is off the expected {expected:.0f}/s by more than "
            f"{RATE_TOLERANCE:.0%}",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--client-processes", type=int, default=2)
    ap.add_argument(
        "--heartbeat", type=float, default=10.0, help="ping interval (s); the gateway default is 10"
    )
    ap.add_argument(
        "--window",
        type=float,
        default=None,
        help=(
            "length of each heartbeat-CPU window, idle and pinging (s); "
            "default 2 x --heartbeat, 0 = skip"
        ),
    )
    ap.add_argument("--timeout", type=float, default=600.0, help="bound on the whole run (s)")
    args = ap.parse_args(argv)
    if args.connections < 1 or args.workers < 1 or args.client_processes < 1:
        ap.error("counts must be >= 1")
    if args.heartbeat <= 0:
        ap.error("--heartbeat must be > 0")
    if args.window is None:
        args.window = 2 * args.heartbeat
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
