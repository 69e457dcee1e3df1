"""Failover under load: N loadgen clients on three gateways, one gateway SIGKILLed mid-run.

Run: ``.venv/bin/python -m bench.failover_loadgen [--clients 10000]``.

Starts three real gateways (tickets on, ``--capacity``), one real dispatcher
and ``tcpdispatch loadgen`` on loopback; once every client is connected it
kills the busiest gateway and measures, by polling the survivors' /status and
from the loadgen's JSON summary, how long until every client is connected
again and the highest connection count any survivor reached. Prints a JSON
result; exit status 0 when all clients were back within ``--deadline`` s and
no survivor went above its capacity.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from harness import TCPDISPATCH, ProcGroup, start_dispatcher, start_gateway


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clients", type=int, default=10_000)
    p.add_argument("--capacity", type=int, default=6000, help="per gateway")
    p.add_argument("--processes", type=int, default=8, help="loadgen worker processes")
    p.add_argument("--rate", type=float, default=1000.0, help="connects/s during ramp-up")
    p.add_argument(
        "--hold", type=float, default=15.0, help="seconds to keep running after the kill"
    )
    p.add_argument(
        "--deadline", type=float, default=5.0, help="seconds allowed to reconnect everyone"
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=30.0,
        help="gateway heartbeat (clients PING this often). 10,000 simulated clients pinging "
        "every 10 s cost the load generator a large share of this small machine's CPU; "
        "real clients each have their own (default 30)",
    )
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tcpd-bench-") as tmp:
        work = Path(tmp)
        secret = work / "ticket.secret"
        secret.write_text("bench-secret-0123456789abcdef\n")
        group = ProcGroup(work)
        try:
            return run(args, work, secret, group)
        finally:
            group.stop()


def _counts(gws: list[Any]) -> dict[str, int]:
    out = {}
    for g in gws:
        try:
            out[g.id] = int(g.status()["connections"])
        except OSError:
            out[g.id] = -1
    return out


def _cpu(roles: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each role's processes and their children."""
    out = {}
    for role, pids in roles.items():
        total = 0.0
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                for p in [proc, *proc.children(recursive=True)]:
                    t = p.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                pass
        out[role] = total
    return out


def _progress(path: Path) -> dict[str, Any]:
    """The loadgen's latest merged progress line (client-side view: WELCOME received)."""
    try:
        lines = path.read_text().splitlines()
        return dict(json.loads(lines[-1])) if lines else {}
    except (OSError, ValueError):
        return {}


def run(args: argparse.Namespace, work: Path, secret: Path, group: ProcGroup) -> int:
    gws = [
        start_gateway(
            group,
            f"g{i}",
            "--capacity",
            str(args.capacity),
            "--heartbeat",
            str(args.heartbeat),
            secret_file=secret,
        )
        for i in (1, 2, 3)
    ]
    disp = start_dispatcher(group, work, gws, secret)
    ramp = args.clients / args.rate
    duration = 3 * ramp + 60 + args.hold  # generous: the bench stops the loadgen with SIGTERM
    out_path, progress = work / "loadgen.json", work / "progress.jsonl"
    t_start = time.time()
    with open(out_path, "wb") as fh, open(work / "loadgen.err", "wb") as err:
        lg = subprocess.Popen(
            [
                *TCPDISPATCH,
                "--log-level",
                "warning",
                "loadgen",
                "--dispatcher",
                disp.url,
                "--clients",
                str(args.clients),
                "--rate",
                str(args.rate),
                "--duration",
                f"{duration:.0f}",
                "--processes",
                str(args.processes),
                "--progress-file",
                str(progress),
                "--json",
            ],
            stdout=fh,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 3 * ramp + 45
        while _progress(progress).get("connected", 0) < args.clients:
            if time.monotonic() > deadline or lg.poll() is not None:
                print(
                    f"not all clients connected: {_progress(progress)}\n"
                    + (work / "loadgen.err").read_text()[-3000:],
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.25)
        t_all = time.time() - t_start
        time.sleep(2)
        before = _counts(gws)
        victim = max(gws, key=lambda g: before[g.id])
        survivors = [g for g in gws if g is not victim]
        roles = {
            "dispatcher": [disp.proc.popen.pid],
            "gateways": [g.proc.popen.pid for g in survivors],
            "loadgen": [lg.pid],
        }
        cpu0 = _cpu(roles)
        t_kill = time.time()
        victim.signal(signal.SIGKILL)
        peak = {g.id: 0 for g in survivors}
        t_status: float | None = None
        t_client: float | None = None
        samples = []
        while time.time() - t_kill < args.hold:
            counts = _counts(survivors)
            for gid, n in counts.items():
                peak[gid] = max(peak[gid], n)
            prog = _progress(progress)
            now = time.time() - t_kill
            samples.append((round(now, 2), sum(counts.values()), prog.get("connected")))
            if t_status is None and sum(counts.values()) >= args.clients:
                t_status = now
            if (
                t_client is None
                and prog.get("t", 0) > t_kill
                and prog.get("connected") == args.clients
                and prog.get("reconnects", 0) > 0
            ):
                t_client = prog["t"] - t_kill
            if t_status is not None and t_client is not None and now > max(t_status, t_client) + 1:
                break
            time.sleep(0.1)
        cpu1 = _cpu(roles)
        window = time.time() - t_kill
        lg.send_signal(signal.SIGTERM)  # every worker stops now and reports
        lg.wait(timeout=120)
    finally:
        if lg.poll() is None:
            lg.kill()
            lg.wait()
    summary = json.loads(out_path.read_text())
    pairs = summary.pop("reconnect_pairs")
    moved = sorted(b - a for a, b in pairs if a >= t_kill - 1)
    result = {
        "clients": args.clients,
        "capacity_per_gateway": args.capacity,
        "loadgen_processes": args.processes,
        "heartbeat_s": args.heartbeat,
        "all_connected_after_s": round(t_all, 2),
        "before_kill": before,
        "killed": victim.id,
        "moved_clients": len(moved),
        "all_back_after_kill_s (gateway /status)": None if t_status is None else round(t_status, 2),
        "all_back_after_kill_s (loadgen progress)": None
        if t_client is None
        else round(t_client, 2),
        "last_reconnect_after_kill_s": round(
            max(b for a, b in pairs if a >= t_kill - 1) - t_kill, 3
        )
        if moved
        else None,
        "max_time_to_reconnect_s (loadgen)": round(moved[-1], 3) if moved else None,
        "p50_time_to_reconnect_s": round(moved[len(moved) // 2], 3) if moved else None,
        "survivor_peak_connections": peak,
        "cpu_share_during_recovery": {k: round((cpu1[k] - cpu0[k]) / window, 2) for k in cpu0},
        "recovery_samples [s after kill, survivors' /status total, loadgen connected]": samples[
            :80
        ],
        "loadgen_summary": summary,
    }
    print(json.dumps(result, indent=2))
    last = result["last_reconnect_after_kill_s"]
    ok = (
        last is not None
        and last <= args.deadline
        and all(v <= args.capacity for v in peak.values())
        and summary["unrepaired"] == 0
        and summary["connected"] == args.clients
    )
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
