"""Gateway capacity benchmark: N idle connections, RSS per connection and connect rate.

    python -m bench.gateway_capacity --connections 100000 --workers 2 --client-processes 7

Starts ``tcpdispatch gateway --workers W --no-ticket`` on free loopback ports,
measures the node's RSS (supervisor + workers) as a baseline, then opens N
connections from P client processes. Each connection does the real handshake
(HELLO -> WELCOME, via the protocol module) and then stays idle. Client
sockets are bound to distinct source addresses 127.0.0.2, 127.0.0.3, ... so
no single (source IP, destination) pair runs out of ephemeral ports. It
reports (RSS after - baseline) / N and the connect rate, then kills
everything. Every phase is bounded by --timeout.
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

from tcpdispatch.testing import free_port

PER_SOURCE_IP = 12_000  # well under the ~28k ephemeral ports of one (src, dst) pair
MAX_FDS_PER_CLIENT = 19_000
IN_FLIGHT = 200
IP_BIND_ADDRESS_NO_PORT = 24  # Linux: pick the source port at connect(), not bind()


# -- client process -------------------------------------------------------------------
def _client_main(port: int, count: int, sources: list[str], first: int, conn_out: Any, stop_in: Any) -> None:
    """Open ``count`` connections, report progress, hold them until told to stop."""
    from tcpdispatch import aio
    from tcpdispatch.protocol import Connection, Hello, Role, Welcome

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
                if isinstance(f, Welcome) and not self.done.done():
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
        await loop.run_in_executor(None, stop_in.recv)  # hold the connections until told
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
        print(f"note: {n / workers:.0f} connections per worker is over the 20,000-fd limit per process;"
              " raise --workers", file=sys.stderr)
    port, status_port = free_port(), free_port()
    deadline = time.monotonic() + args.timeout
    gw = subprocess.Popen(
        [sys.executable, "-m", "tcpdispatch", "--log-level", "warning", "gateway", "--id", "bench",
         "--listen", f"127.0.0.1:{port}", "--status", f"127.0.0.1:{status_port}", "--no-ticket",
         "--workers", str(workers), "--capacity", str(n + 1000), "--heartbeat", "3600",
         "--handshake-timeout", "120"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
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
        print(f"gateway: {workers} workers ({nproc} processes), baseline RSS {base_rss / 2**20:.1f} MiB")
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
        print(f"connections: {ok} open, {failed} failed, gateway /status says {status['connections']}")
        print(f"connect time: {elapsed:.1f} s -> {ok / elapsed:.0f} connections/s "
              f"({clients} client processes, {len(sources)} source IPs)")
        print(f"gateway RSS: {rss / 2**20:.1f} MiB total, +{(rss - base_rss) / 2**20:.1f} MiB for {ok}"
              f" connections = {per / 1024:.2f} KiB per connection")
        ok_all = ok == n and status["connections"] == n
        if not ok_all:
            print("WARNING: not every connection was established", file=sys.stderr)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--client-processes", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600.0, help="bound on the whole run (s)")
    args = ap.parse_args(argv)
    if args.connections < 1 or args.workers < 1 or args.client_processes < 1:
        ap.error("counts must be >= 1")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())


