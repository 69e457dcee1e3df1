"""Rebalancing under faults (a script, not a test):
``python -m bench.rebalance_faults [--minutes 7]``.

Four gateways (capacity 2,500 each), two dispatcher replicas sharing a real
redis-server, 6,000 SDK clients in loadgen processes that know both dispatchers
and send a message every 5 s. Every 20 s one random fault, each over within 20 s:

- kill -9 a gateway, restart it 5 s later (same ports);
- SIGSTOP a gateway, SIGCONT it 8 s later;
- kill -9 a dispatcher replica, restart it 5 s later;
- kill -9 redis-server, restart it (empty) 3 s later;
- admin-drain a gateway (no new clients), undrain it 8 s later.

Passes when, within 60 s of the last fault, every client is held, held
connections are within max/mean 1.10, and no gateway ever went over its
capacity. Writes ``bench/results/rebalance_faults.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from harness import RealDispatcher, launch_dispatcher, restart_gateway, write_dispatcher_config

from bench.common import (
    TCPDISPATCH,
    ProcGroup,
    free_port,
    results_dir,
    start_gateway,
    wait_until,
)

TOKEN = "faults-admin-token-0123456789"
CAPACITY = 2500


def _admin(url: str, method: str, path: str) -> int:
    req = urllib.request.Request(
        url + path, method=method, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return int(r.status)
    except OSError:
        return 0


class Fleet:
    def __init__(self, work: Path, clients: int) -> None:
        self.work, self.clients = work, clients
        self.group = ProcGroup(work)
        self.secret = work / "ticket.secret"
        self.secret.write_text("faults-secret-0123456789abcdef\n")
        self.token = work / "admin.token"
        self.token.write_text(TOKEN + "\n")
        self.redis_port = free_port()
        self.redis: Any = None
        self.gws: list[Any] = []
        self.disp: list[RealDispatcher] = []
        self.loadgen: subprocess.Popen[bytes] | None = None

    def start_redis(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.redis = self.group(
            [
                binary,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.work),
            ],
            name="redis",
        )
        time.sleep(0.5)

    def start(self) -> None:
        self.start_redis()
        self.gws = [
            start_gateway(
                self.group,
                f"g{i}",
                "--capacity",
                str(CAPACITY),
                "--admin-token-file",
                str(self.token),
                secret_file=self.secret,
            )
            for i in range(1, 5)
        ]
        for _ in range(2):
            port, cfg = write_dispatcher_config(
                self.work,
                [g.entry(weight=False) for g in self.gws],
                secret_file=self.secret,
                admin_token_file=self.token,
                sections={
                    "health": {"interval": 0.25},
                    "store": {"url": f"redis://127.0.0.1:{self.redis_port}/0", "prefix": "faults:"},
                    "rebalance": {
                        "gateway_admin_token_file": self.token,
                        "min_session_age_s": 10,
                        "moves_per_s": 300,
                        "per_donor_per_s": 150,
                        "interval_s": 0.5,
                        "settle_s": 2,
                        "breaker_cooldown_s": 5,
                    },
                },
            )
            self.disp.append(launch_dispatcher(self.group, port, cfg, log_level="info"))
        for d in self.disp:
            wait_until(
                lambda u=d.url: _admin(u, "GET", "/healthz") == 200, 20, 0.1, "dispatcher up"
            )

    def start_clients(self) -> None:
        args = [
            *TCPDISPATCH,
            "--log-level",
            "warning",
            "loadgen",
            *(a for d in self.disp for a in ("--dispatcher", d.url)),
            "--clients",
            str(self.clients),
            "--rate",
            "600",
            "--duration",
            "3600",
            "--processes",
            "3",
            "--message-interval",
            "5",
            "--json",
        ]
        with (
            open(self.work / "loadgen.json", "wb") as out,
            open(self.work / "loadgen.err", "wb") as err,
        ):
            self.loadgen = subprocess.Popen(args, stdout=out, stderr=err, start_new_session=True)

    def held(self) -> dict[str, int]:
        out = {}
        for g in self.gws:
            try:
                out[g.id] = int(g.status()["connections"]) if g.proc.alive else 0
            except (OSError, ValueError, KeyError):
                out[g.id] = -1  # stopped or restarting: unknown
        return out

    def fault(self, rng: random.Random, log: list[dict[str, Any]], t0: float) -> None:
        kind = rng.choice(
            ["kill_gateway", "stop_gateway", "kill_dispatcher", "restart_redis", "drain"]
        )
        entry: dict[str, Any] = {"t": round(time.time() - t0, 1), "fault": kind}
        if kind == "kill_gateway":
            g = rng.choice(self.gws)
            entry["target"] = g.id
            g.proc.signal(signal.SIGKILL)
            time.sleep(5)
            restart_gateway(self.group, g)
        elif kind == "stop_gateway":
            g = rng.choice(self.gws)
            entry["target"] = g.id
            g.proc.signal(signal.SIGSTOP)
            time.sleep(8)
            g.proc.signal(signal.SIGCONT)
        elif kind == "kill_dispatcher":
            d = rng.choice(self.disp)
            entry["target"] = d.url
            d.proc.signal(signal.SIGKILL)
            time.sleep(5)
            d.restart()
        elif kind == "restart_redis":
            self.redis.signal(signal.SIGKILL)
            time.sleep(3)
            self.start_redis()
        else:
            g = rng.choice(self.gws)
            entry["target"] = g.id
            url = self.disp[0].url
            entry["drain"] = _admin(url, "POST", f"/v1/gateways/{g.id}/drain")
            time.sleep(8)
            entry["undrain"] = _admin(url, "POST", f"/v1/gateways/{g.id}/undrain")
        log.append(entry)
        print(f"  t={entry['t']:6.1f}s {kind} {entry.get('target', '')}", flush=True)

    def stop(self) -> None:
        if self.loadgen is not None and self.loadgen.poll() is None:
            self.loadgen.send_signal(signal.SIGTERM)
            try:
                self.loadgen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.loadgen.kill()
        self.group.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.rebalance_faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--minutes", type=float, default=7.0)
    ap.add_argument("--clients", type=int, default=6000)
    ap.add_argument("--every", type=float, default=20.0, help="seconds between faults")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    samples: list[list[Any]] = []
    faults: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tcpd-rbfaults-") as tmp:
        fleet = Fleet(Path(tmp), args.clients)
        try:
            fleet.start()
            fleet.start_clients()
            wait_until(
                lambda: sum(fleet.held().values()) == args.clients, 120, 0.5, "every client held"
            )
            print(f"{args.clients} clients held: {fleet.held()}", flush=True)
            t0 = time.time()
            over = 0
            next_fault = t0 + args.every
            end_faults = t0 + args.minutes * 60
            while time.time() < end_faults:
                if time.time() >= next_fault:
                    fleet.fault(rng, faults, t0)
                    next_fault += args.every
                h = fleet.held()
                samples.append([round(time.time() - t0, 1), *h.values()])
                over = max(over, *h.values())
                time.sleep(1.0)
            t_last = time.time()
            print(f"last fault over at t={t_last - t0:.0f}s; watching 60 s", flush=True)
            ok_at: float | None = None
            while time.time() - t_last < 60:
                h = fleet.held()
                samples.append([round(time.time() - t0, 1), *h.values()])
                over = max(over, *h.values())
                vals = list(h.values())
                mean = sum(vals) / len(vals)
                if (
                    ok_at is None
                    and sum(vals) == args.clients
                    and mean > 0
                    and max(vals) / mean <= 1.10
                ):
                    ok_at = round(time.time() - t_last, 1)
                time.sleep(1.0)
            final = fleet.held()
            rebalance = json.loads(
                urllib.request.urlopen(fleet.disp[0].url + "/v1/rebalance", timeout=3).read()
            )
        finally:
            fleet.stop()
        summary_text = (Path(tmp) / "loadgen.json").read_text().strip()
    vals = list(final.values())
    mean = sum(vals) / len(vals)
    lg = json.loads(summary_text.splitlines()[-1]) if summary_text else {}
    res = {
        "clients": args.clients,
        "minutes": args.minutes,
        "faults": faults,
        "final": final,
        "max_over_mean": round(max(vals) / mean, 3) if mean else None,
        "held_total": sum(vals),
        "balanced_after_last_fault_s": ok_at,
        "peak_connections_on_a_gateway": over,
        "capacity": CAPACITY,
        "messages_sent": lg.get("messages_sent"),
        "messages_echoed": lg.get("messages_echoed"),
        "breaker_trips": rebalance.get("breaker", {}).get("trips"),
        "rounds": rebalance.get("rounds"),
        "samples": samples,
    }
    res["ok"] = bool(ok_at is not None and over <= CAPACITY)
    out = results_dir(False) / "rebalance_faults.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(
        f"{len(faults)} faults; within 60 s of the last: all held and max/mean <= 1.10 after "
        f"{ok_at} s; final {final} (max/mean {res['max_over_mean']}); peak on one gateway {over} "
        f"(capacity {CAPACITY}); messages {lg.get('messages_echoed')}/{lg.get('messages_sent')} "
        f"echoed -> {'OK' if res['ok'] else 'FAILED'}"
    )
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
