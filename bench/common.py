"""Shared helpers for the benchmark scenarios.

Results JSON and small PNG plots under ``bench/results/`` (``bench/results/quick/``
for ``--quick`` runs, so the test run never overwrites the committed figures),
the machine's core count, HAProxy and nginx config writers, a lean keep-alive
HTTP client for ``/v1/dispatch``. Processes, ports, waits and HAProxy's stats socket
come from the test suite's harness (:mod:`harness`, re-exported here), percentiles from
:mod:`tcpdispatch.stats`.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness import (
    TCPDISPATCH,
    GatewayHandle,
    Proc,
    ProcGroup,
    RealDispatcher,
    free_port,
    get_json,
    haproxy_stats,
    restart_gateway,
    start_dispatcher,
    start_gateway,
    wait_until,
)

from tcpdispatch.stats import percentile

__all__ = [
    "RESULTS",
    "TCPDISPATCH",
    "GatewayHandle",
    "HttpDispatcher",
    "Proc",
    "ProcGroup",
    "RealDispatcher",
    "binary",
    "cores",
    "free_port",
    "get_json",
    "haproxy_config",
    "haproxy_stats",
    "headline",
    "nginx_stream_config",
    "percentile",
    "plot",
    "restart_gateway",
    "results_dir",
    "revive",
    "start_dispatcher",
    "start_gateway",
    "start_haproxy",
    "start_nginx",
    "wait_until",
    "write_result",
]

RESULTS = Path(__file__).resolve().parent / "results"
HAPROXY = "/usr/sbin/haproxy"
NGINX = "/usr/sbin/nginx"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"  # Debian: libnginx-mod-stream


def run_as_script(run: Callable[[bool], Any]) -> None:
    """``python -m bench.NAME [--quick]``: one scenario alone, as ``python -m bench`` runs it."""
    run("--quick" in sys.argv)


def nginx_has_stream() -> bool:
    """Debian builds ``stream`` as a module (package libnginx-mod-stream), often not installed."""
    return Path(STREAM_MODULE).exists()


def cores() -> int:
    """Cores this process may run on (what the figures were measured with)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def binary(name: str, default: str) -> str:
    path = shutil.which(name) or default
    if not Path(path).exists():
        raise RuntimeError(f"{name} is required for this benchmark ({default} not found)")
    return path


def results_dir(quick: bool) -> Path:
    d = RESULTS / "quick" if quick else RESULTS
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_result(name: str, quick: bool, data: dict[str, Any]) -> Path:
    """Write ``NAME.json`` with the machine facts every result carries."""
    doc = {
        "scenario": name,
        "quick": quick,
        "cores": cores(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **data,
    }
    path = results_dir(quick) / f"{name}.json"
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return path


def plot(
    name: str, quick: bool, draw: Any, *, size: tuple[float, float] = (6.4, 3.6)
) -> Path | None:
    """Draw with ``draw(fig)`` and save a small PNG; returns None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib not installed: no plot; pip install '.[bench]')")
        return None
    fig = plt.figure(figsize=size)
    try:
        draw(fig)
        fig.tight_layout()
        path = results_dir(quick) / f"{name}.png"
        fig.savefig(path, dpi=72)
        return path
    finally:
        plt.close(fig)


def headline(name: str, text: str) -> None:
    """The one line each scenario prints: its headline figure and the core count."""
    print(f"[{name}] {text}  (cores: {cores()})", flush=True)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# -- peers ---------------------------------------------------------------------------------
def haproxy_config(
    path: Path,
    *,
    front: int,
    servers: Sequence[tuple[str, int, int, int]],
    balance: str = "leastconn",
    check: str = "",
    stats_socket: Path | None = None,
    maxconn: int = 9000,
    extra_backends: str = "",
) -> Path:
    """A ``mode tcp`` HAProxy config: one frontend on ``front``, ``servers`` = (name, port, weight,
    check_port); ``check`` is appended to every server line (e.g. ``check inter 2s fall 3``)."""
    lines = [
        "global",
        f"    maxconn {maxconn}",
        "    nbthread 1",
        *([f"    stats socket {stats_socket} mode 600 level admin"] if stats_socket else []),
        "defaults",
        "    mode tcp",
        "    timeout connect 2s",
        "    timeout client 300s",
        "    timeout server 300s",
        f"    maxconn {maxconn}",
        "frontend fe",
        f"    bind 127.0.0.1:{front} backlog 4096",
        "    default_backend gateways",
        "backend gateways",
        f"    balance {balance}",
    ]
    for name, port, weight, check_port in servers:
        port_opt = f" port {check_port}" if check and check_port else ""
        lines.append(
            f"    server {name} 127.0.0.1:{port} weight {weight} {check}{port_opt}".rstrip()
        )
    path.write_text("\n".join(lines) + "\n" + extra_backends)
    return path


def nginx_stream_config(root: Path, *, front: int, servers: Sequence[tuple[int, int]]) -> Path:
    """nginx ``stream`` proxy with ``least_conn`` over (port, weight) upstreams, one worker."""
    ups = "\n".join(f"        server 127.0.0.1:{p} weight={w};" for p, w in servers)
    conf = root / "nginx-stream.conf"
    load = f"load_module {STREAM_MODULE};" if Path(STREAM_MODULE).exists() else ""
    conf.write_text(f"""
{load}
worker_processes 1;
daemon off;
pid {root}/nginx-stream.pid;
error_log {root}/nginx-stream-error.log warn;
events {{ worker_connections 8192; }}
stream {{
    upstream gateways {{
        least_conn;
{ups}
    }}
    server {{
        listen 127.0.0.1:{front} backlog=4096;
        proxy_pass gateways;
        proxy_timeout 300s;
    }}
}}
""")
    return conf


async def revive(group: ProcGroup, g: GatewayHandle, fault: str) -> None:
    """Undo a fault trial: SIGCONT a SIGSTOPped gateway,
    start a SIGKILLed one again on its ports."""
    if fault == "SIGSTOP":
        g.signal(signal.SIGCONT)
    else:
        await asyncio.to_thread(restart_gateway, group, g)


def start_haproxy(group: ProcGroup, cfg: Path, name: str = "haproxy") -> Proc:
    return group([binary("haproxy", HAPROXY), "-db", "-f", str(cfg)], name=name)


def start_nginx(group: ProcGroup, conf: Path, root: Path) -> Proc:
    return group([binary("nginx", NGINX), "-c", str(conf), "-p", str(root)], name="nginx")


# -- clients -------------------------------------------------------------------------------
class HttpDispatcher:
    """A minimal HTTP/1.1 keep-alive client for ``GET /v1/dispatch`` (much lighter than aiohttp,
    so the client side does not eat the core the dispatcher needs)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def dispatch(
        self, client_id: str, timeout: float = 5.0
    ) -> tuple[int, dict[str, Any] | None]:
        """(HTTP status, JSON body or None). Reconnects once if the kept-alive socket died."""
        for attempt in (0, 1):
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port), timeout
                    )
                assert self.reader is not None
                self.writer.write(
                    f"GET /v1/dispatch?client_id={client_id} HTTP/1.1\r\n"
                    f"Host: {self.host}\r\n\r\n".encode()
                )
                head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = (
                    await asyncio.wait_for(self.reader.readexactly(length), timeout)
                    if length
                    else b""
                )
                return status, json.loads(body) if body else None
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


def python() -> str:
    return sys.executable
