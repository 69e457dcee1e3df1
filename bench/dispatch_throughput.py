"""Dispatch throughput: our dispatcher vs nginx ``return 200`` with a body of the same size.

Run as ``python -m bench.dispatch_throughput [--duration S] [--rounds R] [--connections N]
[--paths c,python] [--no-baseline] [--no-pick-cost]``.

The dispatcher runs once per hot path named in ``--paths`` (``c``: the C
accelerator, the default; ``python``: ``speedups = false``), each a separate
process with the same pool and the built-in HTTP server. A do-nothing app
answering the same bytes shows the server's own floor: ``uvloop-noop`` (a
bare asyncio.Protocol + httptools server on uvloop).

Both servers are pinned to CPU 0 (``taskset -c 0``) and wrk to CPU 1, with the
same wrk run length, once with a new connection per request
(``-H "Connection: close"``) and once with keep-alive. Three real
``tcpdispatch gateway`` processes (pinned to CPU 1, idle) make the pool real:
health checks run during the measurement as they would in production. nginx
answers with the exact bytes of one dispatch answer (gateway + 2 alternates +
ticket + hints), so both send the same payload.

Runs are interleaved (nginx, dispatchers, no-op apps, nginx, ...) and the best of ``--rounds``
counts for each, so load from other processes on the shared machine hits both.
Also prints the p2c pick cost over 10 vs 10,000 gateways.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from harness import free_port, write_dispatcher_toml

PY = sys.executable


def wait_http(url: str, timeout: float = 20.0) -> bytes:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.read()
        except Exception as exc:  # noqa: BLE001 - server still starting
            last = exc
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer: {last!r}")


SERVER_CPUS, WRK_CPUS, WRK_THREADS = "0", "1", 1  # --workers N: servers and wrk share CPUs 0..N-1


def wrk(url: str, duration: float, connections: int, close: bool) -> float:
    args = [
        "taskset",
        "-c",
        WRK_CPUS,
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        url,
    ]
    if close:
        args[5:5] = ["-H", "Connection: close"]
    out = subprocess.run(
        args, capture_output=True, text=True, timeout=duration + 60, check=False
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        print(f"    warning: {errors.group(1)} non-2xx answers from {url}")
    if not m:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return float(m.group(1))


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        fh = open(log, "wb")  # noqa: SIM115 - stays open for the child's lifetime
        p = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs:
            p.wait(timeout=10)


def nginx_conf(root: Path, port: int, body: str, workers: int = 1) -> Path:
    escaped = body.replace("\\", "\\\\").replace("'", "\\'")
    conf = root / "nginx.conf"
    conf.write_text(f"""
worker_processes {workers};
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=2048;
        location / {{
            default_type application/json;
            add_header cache-control no-store;
            return 200 '{escaped}';
        }}
    }}
}}
""")
    (root / "tmp").mkdir(exist_ok=True)
    return conf


# The floor of the built-in server: asyncio.Protocol + httptools on uvloop, one write per answer.
UVLOOP_NOOP_APP = """
import sys, asyncio, uvloop, httptools
BODY = open(sys.argv[2], "rb").read()
HEAD = b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncache-control: no-store\\r\\n"
KEEP = HEAD + b"content-length: %d\\r\\n\\r\\n" % len(BODY) + BODY
CLOSE = HEAD + b"connection: close\\r\\ncontent-length: %d\\r\\n\\r\\n" % len(BODY) + BODY
class Conn(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.parser = transport, httptools.HttpRequestParser(self)
    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()
    def on_message_complete(self):
        if self.parser.should_keep_alive():
            self.transport.write(KEEP)
        else:
            self.transport.write(CLOSE)
            self.transport.close()
async def main():
    server = await asyncio.get_running_loop().create_server(Conn, "127.0.0.1", int(sys.argv[1]), backlog=2048)
    await server.serve_forever()
uvloop.run(main())
"""  # noqa: E501 (a literal program, run as written; its create_server line is 107 columns)


def pick_cost() -> tuple[float, float]:
    """Microseconds per p2c pick over 10 and 10,000 candidates (best of 5)."""
    import random

    from tcpdispatch.balancing import PickRequest, get_policy
    from tcpdispatch.balancing.base import Candidate, LoadCounter

    def per_pick(n: int) -> float:
        cands = [
            Candidate(f"g{i}", "127.0.0.1", 10000 + i, 1.0 + i % 3, 10**9, LoadCounter())
            for i in range(n)
        ]
        picker = get_policy("p2c")(cands, rng=random.Random(1))
        req = PickRequest("client", "127.0.0.1")
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(20000):
                picker.pick(req, 3)
            best = min(best, (time.perf_counter() - t0) / 20000)
        return best * 1e6

    return per_pick(10), per_pick(10_000)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; the best of each counts"
    )
    ap.add_argument("--no-pick-cost", action="store_true")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="N > 1: nginx with N worker processes vs N dispatcher processes sharing the port "
        "(reuse_port, built-in server only), both on CPUs 0..N-1, wrk on the same CPUs",
    )
    ap.add_argument(
        "--paths",
        default="c,python",
        help="comma-separated dispatch hot paths to measure: c (the accelerator) and "
        "python (speedups = false)",
    )
    ap.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the do-nothing app (the HTTP server's own floor)",
    )
    args = ap.parse_args()
    global SERVER_CPUS, WRK_CPUS, WRK_THREADS
    if args.workers > 1:
        SERVER_CPUS = WRK_CPUS = f"0-{args.workers - 1}"
        WRK_THREADS = args.workers
        args.paths, args.baseline = "c", False
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            print(f"{tool} is required", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"

    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="tcpdispatch-bench-"))
    try:
        secret = tmp / "ticket.secret"
        secret.write_text("bench-secret-0123456789abcdef\n")
        gw_entries: list[dict[str, Any]] = []
        for i in range(3):
            lp, sp = free_port(), free_port()
            procs.start(
                [
                    "taskset",
                    "-c",
                    "1",
                    PY,
                    "-m",
                    "tcpdispatch",
                    "gateway",
                    "--id",
                    f"gw-{i + 1}",
                    "--listen",
                    f"127.0.0.1:{lp}",
                    "--status",
                    f"127.0.0.1:{sp}",
                    "--secret-file",
                    str(secret),
                    "--capacity",
                    "1000000",
                ],
                tmp / f"gw{i}.log",
            )
            gw_entries.append(
                {
                    "id": f"gw-{i + 1}",
                    "address": f"127.0.0.1:{lp}",
                    "check": f"http://127.0.0.1:{sp}/status",
                    "weight": i + 1,
                }
            )
        servers: list[tuple[str, str]] = []
        body = b""
        for server in args.paths.split(","):
            if server not in ("c", "python"):
                print(f"--paths: unknown hot path {server!r} (c or python)", file=sys.stderr)
                return 2
            dport = free_port()
            cfg = tmp / f"dispatcher-{server}.toml"
            keys: dict[str, Any] = {}
            if args.workers > 1:
                keys["reuse_port"] = True
            if server == "python":
                keys["speedups"] = False
            write_dispatcher_toml(
                cfg,
                listen=f"127.0.0.1:{dport}",
                gateways=gw_entries,
                secret_file="ticket.secret",
                dispatcher=keys,
                sections={"balancing": {"slow_start_s": 0}},
            )
            for w in range(args.workers):
                procs.start(
                    [
                        "taskset",
                        "-c",
                        SERVER_CPUS,
                        PY,
                        "-m",
                        "tcpdispatch",
                        "dispatcher",
                        "--config",
                        str(cfg),
                    ],
                    tmp / f"dispatcher-{server}-{w}.log",
                )
            durl = f"http://127.0.0.1:{dport}/v1/dispatch?client_id=bench-client-0001"
            deadline = time.monotonic() + 30
            while True:
                body = wait_http(durl)
                if len(json.loads(body)["alternates"]) == 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            # The default path keeps the plain name (bench/throughput.py reads that line).
            servers.append(("tcpdispatch" if server == "c" else f"td-{server}", durl))
            if server == "c" and args.workers == 1:
                from tcpdispatch.dispatcher import fastpath

                if not fastpath.available():
                    print(
                        "note: tcpdispatch._speedups is not built; "
                        "the dispatcher runs the Python path"
                    )
        nport = free_port()
        conf = nginx_conf(tmp, nport, body.decode(), args.workers)
        procs.start(
            ["taskset", "-c", SERVER_CPUS, nginx, "-c", str(conf), "-p", str(tmp)],
            tmp / "nginx.log",
        )
        nurl = f"http://127.0.0.1:{nport}/v1/dispatch?client_id=bench-client-0001"
        nbody = wait_http(nurl)
        print(f"answer size: dispatcher {len(body)} bytes, nginx {len(nbody)} bytes")
        servers.insert(0, ("nginx", nurl))
        if args.baseline:
            # The server's floor (same settings) answering constant bytes.
            (tmp / "body.json").write_bytes(body)
            for name, code in (("uvloop-noop", UVLOOP_NOOP_APP),):
                (tmp / f"{name}.py").write_text(code)
                tport = free_port()
                procs.start(
                    [
                        "taskset",
                        "-c",
                        "0",
                        PY,
                        str(tmp / f"{name}.py"),
                        str(tport),
                        str(tmp / "body.json"),
                    ],
                    tmp / f"{name}.log",
                )
                turl = f"http://127.0.0.1:{tport}/v1/dispatch?client_id=bench-client-0001"
                wait_http(turl)
                servers.append((name, turl))

        # Interleaved rounds, best of each: the machine is shared, so noise hits both alike.
        results: dict[tuple[str, str], float] = {}
        for mode, close in (("new connection per request", True), ("keep-alive", False)):
            for name, url in servers:
                wrk(url, min(2.0, args.duration), args.connections, close)  # warm-up
            for rnd in range(args.rounds):
                for name, url in servers:
                    rps = wrk(url, args.duration, args.connections, close)
                    results[(name, mode)] = max(rps, results.get((name, mode), 0.0))
                    print(f"  round {rnd + 1}: {name:14s} {mode:28s} {rps:10.0f} req/s", flush=True)
            for name, _ in servers:
                print(
                    f"{name:14s} {mode:28s} {results[(name, mode)]:10.0f} "
                    f"req/s (best of {args.rounds})",
                    flush=True,
                )
        for mode, target in (("new connection per request", 0.9), ("keep-alive", 0.5)):
            print(f"ratio to nginx, {mode} (target >= {target}x):")
            for name, _ in servers[1:]:
                ratio = results[(name, mode)] / results[("nginx", mode)]
                verdict = (
                    "" if name.endswith("-noop") else ("meets" if ratio >= target else "below")
                )
                print(f"    {name:14s} {ratio:5.2f}x {verdict}")
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    if not args.no_pick_cost:  # after the servers are gone, so the CPU is ours
        small, big = pick_cost()
        print(
            f"p2c pick (k=3): {small:.2f} us over 10 gateways, {big:.2f} us over 10,000 "
            f"-> ratio {big / small:.2f} (target <= 1.5)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
