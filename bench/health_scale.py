"""Scenario 8, health at scale: 10 to 10,000 gateways watched by one dispatcher, HAProxy alongside.

Per pool size N, with the status endpoints served by a few fleet processes
(``bench/health_fleet.py``: the gateway's own watch protocol code, about 2,500
gateways per process):

1. a real dispatcher (pinned to CPU 0, default ``[health]``: interval 0.25 s)
   watches all N; once every gateway is healthy its CPU is sampled from
   ``/proc/PID/stat`` over a few idle seconds: that is its health work;
2. wrk (CPU 1, keep-alive, 50 connections) measures its dispatch throughput,
   alternating with a dispatcher over only 10 of the same fleet's gateways
   (10, N, 10, N): the ratio is taken side by side, on the same fleet;
3. the dispatcher stops and HAProxy (CPU 0) checks the same N endpoints at the
   same rate (``option httpchk GET /status``, ``inter 250 fall 2 rise 2``): its
   CPU over the same window. (Skipped at 10,000: 40,000 checks a second would
   need the whole machine, fleet included.)

Targets (issue 15): at 1,000 gateways health work <= 0.05 core and dispatch
throughput >= 0.9x the 10-gateway figure; at 10,000 every gateway in view and
health work <= 0.5 core. The machine is shared: each size also records the load
average, and ratios are taken within one run.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import write_dispatcher_toml

from bench.common import (
    TCPDISPATCH,
    ProcGroup,
    free_port,
    get_json,
    headline,
    python,
    wait_until,
    write_result,
)
from bench.dispatch_throughput import wrk

NAME = "health_scale"
PER_FLEET = 2500
FIRST_PORT = 12000
HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children: none here), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def cpu_share(pid: int, seconds: float) -> float:
    a, t = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - a) / (time.monotonic() - t)


def start_fleet(group: ProcGroup, work: Path, n: int) -> list[int]:
    procs = max(1, math.ceil(n / PER_FLEET))
    ports: list[int] = []
    handles = []
    for i in range(procs):
        count = n // procs + (1 if i < n % procs else 0)
        pf = work / f"fleet-{n}-{i}.json"
        first = FIRST_PORT + i * (PER_FLEET + 500)
        handles.append(
            (
                group(
                    [
                        *python_cmd(n),
                        "-m",
                        "bench.health_fleet",
                        "--count",
                        str(count),
                        "--first-port",
                        str(first),
                        "--ports-file",
                        str(pf),
                    ],
                    name=f"fleet{i}",
                ),
                pf,
            )
        )
    for proc, pf in handles:
        wait_until(lambda p=proc: "READY" in p.output() or not p.alive, 120, 0.1, "fleet READY")
        if not proc.alive:
            raise RuntimeError(f"fleet process died:\n{proc.output()[-2000:]}")
        ports += json.loads(pf.read_text())
    return ports


def python_cmd(n: int) -> list[str]:
    """The fleet runs beside wrk on CPU 1, off the dispatcher's core; at 10,000 gateways it needs
    more than that core can spare, and may use both."""
    return [python()] if n > 1000 else ["taskset", "-c", "1", python()]


def dispatcher_config(work: Path, port: int, ports: list[int]) -> Path:
    gateways = [
        {
            "id": f"f{p}",
            "address": f"127.0.0.1:{p}",
            "check": f"http://127.0.0.1:{p}/status",
            "capacity": 1000000,
        }
        for p in ports
    ]
    return write_dispatcher_toml(
        work / f"dispatcher-{len(ports)}.toml",
        listen=f"127.0.0.1:{port}",
        gateways=gateways,
        secret_file=work / "ticket.secret",
        dispatcher={"policy": "p2c"},
        sections={"balancing": {"slow_start_s": 0}},
    )


def healthy_count(url: str) -> int:
    body = get_json(url + "/v1/gateways", timeout=30)
    items = body["gateways"] if isinstance(body, dict) else body
    return sum(1 for g in items if g.get("healthy"))


def haproxy_cfg(work: Path, ports: list[int]) -> Path:
    lines = [
        "global",
        "    maxconn 4000",
        "    nbthread 1",
        "defaults",
        "    mode tcp",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout check 500ms",
        "backend pool",
        "    option httpchk GET /status",
    ]
    lines += [f"    server f{p} 127.0.0.1:{p} check inter 250 fall 2 rise 2" for p in ports]
    lines += ["frontend fe", f"    bind 127.0.0.1:{free_port()}", "    default_backend pool"]
    path = work / f"haproxy-{len(ports)}.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_disp(group: ProcGroup, work: Path, ports: list[int]) -> tuple[Any, str]:
    """A dispatcher (CPU 0) over ``ports``, returned once every gateway is healthy."""
    port = free_port()
    cfg = dispatcher_config(work, port, ports)
    disp = group(
        ["taskset", "-c", "0", *TCPDISPATCH, "dispatcher", "--config", str(cfg)], name="dispatcher"
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: "READY" in disp.output() or not disp.alive, 120, 0.1, "dispatcher READY")
    if not disp.alive:
        raise RuntimeError(f"dispatcher died:\n{disp.output()[-2000:]}")
    deadline = time.monotonic() + (60 if len(ports) <= 1000 else 150)
    while healthy_count(url) < len(ports) and time.monotonic() < deadline:
        time.sleep(1.0)
    return disp, url


def stop_disp(disp: Any) -> None:
    disp.signal(signal.SIGTERM)
    disp.wait(15)


def measure(
    n: int,
    work: Path,
    window: float,
    wrk_s: float,
    rounds: int,
    with_haproxy: bool,
    alongside: bool = True,
) -> dict[str, Any]:
    """One pool size. Throughput is measured against a 10-gateway dispatcher over the same fleet,
    alternately (10, N, 10, N, ...), so the ratio is taken side by side on a shared machine."""
    group = ProcGroup(work)
    row: dict[str, Any] = {"gateways": n, "loadavg_before": round(os.getloadavg()[0], 2)}
    small: list[float] = []
    full: list[float] = []
    try:
        ports = start_fleet(group, work, n)
        for r in range(rounds):
            for subset, into in ((ports[:10], small), (ports, full)):
                if into is small and (len(subset) == n or not alongside):
                    continue  # the 10-gateway pool is its own baseline (--quick: no baseline)
                t0 = time.monotonic()
                disp, url = start_disp(group, work, subset)
                if into is full and r == 0:
                    seen = healthy_count(url)
                    row["all_in_view_after_s"] = (
                        round(time.monotonic() - t0, 1) if seen == n else None
                    )
                    row["in_view_at_start"] = seen
                    time.sleep(min(1.0, window / 2))  # settle: streams open, state machines settled
                    row["dispatcher_health_cpu"] = round(cpu_share(disp.pid, window), 4)
                    row["in_view"] = healthy_count(url)
                into.append(wrk(f"{url}/v1/dispatch?client_id=bench", wrk_s, 50, close=False))
                if into is full:
                    row["in_view_after_wrk"] = healthy_count(url)
                    row["overload_log_lines"] = disp.output().count("is overloaded")
                stop_disp(disp)
        row["dispatch_rps"] = round(sum(full) / len(full))
        row["dispatch_rps_10_alongside"] = (
            round(sum(small) / len(small)) if small else row["dispatch_rps"]
        )
        row["dispatch_ratio_vs_10"] = round(sum(full) / sum(small), 3) if small else 1.0
        if with_haproxy:
            hcfg = haproxy_cfg(work, ports)
            hap = group(["taskset", "-c", "0", "haproxy", "-db", "-f", str(hcfg)], name="haproxy")
            time.sleep(min(2.0, window))  # every server checked a few times (inter 250 ms)
            if not hap.alive:
                raise RuntimeError(f"haproxy died:\n{hap.output()[-2000:]}")
            row["haproxy_check_cpu"] = round(cpu_share(hap.pid, window), 4)
        row["loadavg_after"] = round(os.getloadavg()[0], 2)
    finally:
        group.stop()
    return row


def run(quick: bool, sizes: list[int] | None = None) -> dict[str, Any]:
    sizes = sizes or ([10] if quick else [10, 100, 1000, 10000])
    window, wrk_s = (0.5, 1.0) if quick else (5.0, 5.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tcpdsuite-hs-") as tmp:
        work = Path(tmp)
        (work / "ticket.secret").write_text("bench-secret-0123456789abcdef\n")
        for n in sizes:
            try:
                row = measure(
                    n,
                    work,
                    window,
                    wrk_s,
                    rounds=1 if quick or n > 1000 else 2,
                    with_haproxy=n <= (10 if quick else 1000),
                    alongside=not quick,
                )
            except Exception as exc:  # noqa: BLE001 - keep the sizes already measured
                print(f"  {n} gateways: failed: {exc!r}", flush=True)
                break
            rows.append(row)
            print(
                f"  {n:>6} gateways: "
                + ", ".join(f"{k} {v}" for k, v in row.items() if k != "gateways"),
                flush=True,
            )
    by_n = {r["gateways"]: r for r in rows}
    met: dict[str, bool] = {}
    if 1000 in by_n:
        r = by_n[1000]
        met["1000: health <= 0.05 core"] = r["dispatcher_health_cpu"] <= 0.05
        met["1000: throughput >= 0.9x"] = (r["dispatch_ratio_vs_10"] or 0) >= 0.9
    if 10000 in by_n:
        r = by_n[10000]
        met["10000: all in view"] = r["in_view"] == 10000 and r["in_view_after_wrk"] == 10000
        met["10000: health <= 0.5 core"] = r["dispatcher_health_cpu"] <= 0.5
    text = "; ".join(
        f"{r['gateways']}: health {r['dispatcher_health_cpu']} core"
        + (f" (HAProxy {r['haproxy_check_cpu']})" if "haproxy_check_cpu" in r else "")
        + f", dispatch {r['dispatch_ratio_vs_10']}x"
        for r in rows
    )
    headline(NAME, text)
    result = {"rows": rows, "met": met, "ok": all(met.values()), "headline": text}
    write_result(NAME, quick, result)
    return result


def table(r: dict[str, Any]) -> str:
    out = [
        "### 9. Health at scale\n",
        (
            "One dispatcher (CPU 0) watching N gateways' status streams; health CPU sampled idle, "
            "dispatch throughput by wrk (keep-alive, 50 connections); HAProxy checking the same "
            "endpoints (httpchk, inter 250 fall 2 rise 2) in the same run.\n"
        ),
        (
            "| gateways | dispatcher health CPU (cores) | HAProxy check CPU (cores) | dispatch "
            "req/s | 10 gateways alongside | ratio | all in view | load avg before/after |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        view = "yes" if row["in_view"] == row["gateways"] else f"no ({row['in_view']:,})"
        out.append(
            f"| {row['gateways']:,} | {row['dispatcher_health_cpu']} | "
            f"{row.get('haproxy_check_cpu', '-')} | {row['dispatch_rps']:,} | "
            f"{row['dispatch_rps_10_alongside']:,} | {row.get('dispatch_ratio_vs_10')}x | {view} | "
            f"{row['loadavg_before']} / {row['loadavg_after']} |"
        )
    out.append(
        "\nTargets: "
        + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in r["met"].items())
        + "\n"
    )
    return "\n".join(out)


def main() -> int:
    """``python -m bench.health_scale [--quick] [N ...]``: all sizes, or only the given ones."""
    run("--quick" in sys.argv, [int(a) for a in sys.argv[1:] if a.isdigit()] or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
