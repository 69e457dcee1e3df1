"""Scenario 2, failure detection: SIGKILL / SIGSTOP of a gateway until nobody hands it out.

Three real gateways, one real dispatcher (default health settings: probes every
0.25 s, fall 2) and one real HAProxy with two backends over the same gateways'
``/status`` ports (``option httpchk``): ``default`` (HAProxy's default checks,
inter 2 s, fall 3, rise 2) and ``tuned`` (inter 250 ms, fall 2, timeout check
500 ms: our probe rate). Per trial one gateway (in rotation) is killed or
stopped; measured from the signal:

- tcpdispatch: the time of the last ``/v1/dispatch`` answer that still names the
  gateway (as primary or alternate; answers are polled continuously over
  keep-alive connections, ~200/s);
- HAProxy: the first time its stats socket shows the server ``DOWN`` (polled every 50 ms).

Then the gateway is restarted on its ports (or SIGCONTed) and the next trial waits
until all three observers see the next victim up again.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    GatewayHandle,
    HttpDispatcher,
    ProcGroup,
    free_port,
    get_json,
    haproxy_stats,
    headline,
    plot,
    revive,
    run_as_script,
    start_dispatcher,
    start_gateway,
    start_haproxy,
    wait_until,
    write_result,
)

NAME = "failure_detection"
OBSERVERS = ("tcpdispatch", "haproxy_default", "haproxy_tuned")
TARGETS = {"SIGKILL": 1.0, "SIGSTOP": 2.0}
TRIAL_BOUND_S = 15.0


def _haproxy_cfg(path: Path, sock: Path, front: int, gws: list[GatewayHandle]) -> Path:
    def backend(name: str, check: str) -> str:
        servers = "\n".join(
            f"    server {g.id} 127.0.0.1:{g.port} check port {g.status_port} {check}" for g in gws
        )
        return f"backend {name}\n    option httpchk GET /status\n{servers}\n"

    path.write_text(f"""global
    stats socket {sock} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{front}
    default_backend default
{backend("default", "")}
{backend("tuned", "inter 250ms fall 2 rise 2")}
backend tuned_timeout_holder
    timeout check 500ms
""")
    # `timeout check` must sit in the tuned backend itself
    text = path.read_text().replace("backend tuned\n", "backend tuned\n    timeout check 500ms\n")
    text = text.replace("backend tuned_timeout_holder\n    timeout check 500ms\n", "")
    path.write_text(text)
    return path


class Watch:
    """Continuous observation of the dispatcher's answers and HAProxy's server states."""

    def __init__(self, dispatch_url: str, sock: Path) -> None:
        host, port = dispatch_url.split("//")[1].split(":")
        self.clients = [HttpDispatcher(host, int(port)) for _ in range(2)]
        self.sock = sock
        self.last_named: dict[str, float] = {}
        self.down_since: dict[tuple[str, str], float] = {}  # (backend, server) -> first DOWN seen
        self.errors = 0
        self.requests = 0
        self.ok = 0  # 200 answers

    async def dispatch_loop(self, client: HttpDispatcher, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                status, body = await client.dispatch(f"fd-{id(client) % 1000}-{i}")
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                self.errors += 1
                await asyncio.sleep(0.05)
                continue
            now = time.monotonic()
            self.requests += 1
            if status == 200 and body:
                self.ok += 1
                for g in [body["gateway"], *body.get("alternates", [])]:
                    self.last_named[g["id"]] = now
            await asyncio.sleep(0.01)

    async def haproxy_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            for backend in ("default", "tuned"):
                try:
                    rows = await asyncio.to_thread(haproxy_stats, self.sock, backend)
                except OSError:
                    continue
                for sv, row in rows.items():
                    if row["status"].startswith("DOWN"):
                        self.down_since.setdefault((backend, sv), now)
                    else:
                        self.down_since.pop((backend, sv), None)
            await asyncio.sleep(0.05)


def _pool_up(url: str, gid: str) -> bool:
    body = get_json(url + "/v1/gateways")
    items = body["gateways"] if isinstance(body, dict) else body
    return any(g["id"] == gid and g.get("healthy") for g in items)


async def _trials(
    kinds: list[str],
    trials: int,
    gws: list[GatewayHandle],
    url: str,
    watch: Watch,
    group: ProcGroup,
    secret: Path,
    budget: float,
    wait_default: bool,
) -> list[dict[str, Any]]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(watch.dispatch_loop(c, stop)) for c in watch.clients]
    tasks.append(asyncio.create_task(watch.haproxy_loop(stop)))
    out = []
    try:
        t_start = time.monotonic()
        for n, (t, kind) in enumerate([(t, k) for t in range(trials) for k in kinds]):
            if time.monotonic() - t_start > budget:
                print(f"  time budget {budget:g} s spent: stopping after {n} trials", flush=True)
                break
            g = gws[n % len(gws)]

            def up(gid: str) -> bool:
                return (
                    _pool_up(url, gid)
                    and ("default", gid) not in watch.down_since
                    and ("tuned", gid) not in watch.down_since
                    and time.monotonic() - watch.last_named.get(gid, 0) < 0.5
                )

            # Every gateway, not only the victim: with the previous victim still rising, 2 of 3
            # down is under the panic threshold, and panic hands out the dead one too.
            await asyncio.to_thread(
                wait_until,
                lambda: all(up(x.id) for x in gws),
                30,
                0.1,
                "every gateway up everywhere",
            )
            t0 = time.monotonic()
            g.signal(signal.SIGKILL if kind == "SIGKILL" else signal.SIGSTOP)
            res: dict[str, Any] = {"kind": kind, "trial": t, "gateway": g.id}
            while time.monotonic() - t0 < TRIAL_BOUND_S:
                await asyncio.sleep(0.1)
                now = time.monotonic()
                quiet = now - watch.last_named.get(g.id, 0) > 1.0
                if (
                    quiet
                    and (("default", g.id) in watch.down_since or not wait_default)
                    and ("tuned", g.id) in watch.down_since
                ):
                    break
            res["tcpdispatch"] = round(max(0.0, watch.last_named.get(g.id, t0) - t0), 3)
            for b in ("default", "tuned"):
                d = watch.down_since.get((b, g.id))
                res[f"haproxy_{b}"] = round(d - t0, 3) if d is not None else None
            out.append(res)
            print(
                f"  {kind} #{t + 1} {g.id}: "
                + ", ".join(
                    f"{o} " + (f"{res[o]} s" if res[o] is not None else "not seen")
                    for o in OBSERVERS
                ),
                flush=True,
            )
            await revive(group, g, kind)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in watch.clients:
            c.close()
    return out


def run(quick: bool) -> dict[str, Any]:
    trials = 1 if quick else 20  # per signal; --quick does not wait for HAProxy's default checks
    with tempfile.TemporaryDirectory(prefix="tcpdsuite-fd-") as tmp:
        work = Path(tmp)
        secret = work / "ticket.secret"
        secret.write_text("bench-secret-0123456789abcdef\n")
        group = ProcGroup(work)
        try:
            gws = [start_gateway(group, f"g{i}", secret_file=secret) for i in (1, 2, 3)]
            disp = start_dispatcher(
                group, work, gws, secret, extra_toml="[balancing]\nslow_start_s = 0\n"
            )
            sock = work / "haproxy.sock"
            start_haproxy(group, _haproxy_cfg(work / "haproxy.cfg", sock, free_port(), gws))
            wait_until(
                lambda: (
                    sock.exists() and all(r["status"] == "UP" for r in haproxy_stats(sock).values())
                ),
                20,
                0.05,
                "HAProxy sees every gateway UP",
            )
            watch = Watch(disp.url, sock)
            from tcpdispatch import aio

            rows = aio.run(
                _trials(
                    list(TARGETS),
                    trials,
                    gws,
                    disp.url,
                    watch,
                    group,
                    secret,
                    budget=60 if quick else 900,
                    wait_default=not quick,
                )
            )
        finally:
            group.stop()
    summary: dict[str, dict[str, Any]] = {}
    for kind in TARGETS:
        for o in OBSERVERS:
            vals = [r[o] for r in rows if r["kind"] == kind]
            missed = sum(v is None for v in vals)
            got = [v for v in vals if v is not None]
            summary.setdefault(kind, {})[o] = {
                "median_s": round(statistics.median(got), 3) if got else None,
                "max_s": round(max(got), 3) if got else None,
                "not_detected": missed,
            }

    def ratio(kind: str, peer: str) -> float | None:
        a, b = summary[kind]["tcpdispatch"]["median_s"], summary[kind][peer]["median_s"]
        return round(b / a, 1) if a and b else None

    met = {
        k: summary[k]["tcpdispatch"]["max_s"] is not None
        and summary[k]["tcpdispatch"]["max_s"] <= v
        for k, v in TARGETS.items()
    }

    def vs(k: str, peer: str, label: str) -> str:
        x = ratio(k, peer)
        return f"{label} not waited for" if x is None else f"{label} {x}x ours"

    text = "; ".join(
        f"{k}: median {summary[k]['tcpdispatch']['median_s']} s (max "
        f"{summary[k]['tcpdispatch']['max_s']}), {vs(k, 'haproxy_default', 'HAProxy default')}, "
        f"{vs(k, 'haproxy_tuned', 'tuned')}"
        for k in TARGETS
    )
    headline(NAME, text)
    result = {
        "trials_per_kind": len(rows) // 2,
        "trials_planned": trials,
        "trials": rows,
        "summary": summary,
        "targets_s": TARGETS,
        "met": met,
        "dispatch_requests": watch.requests,
        "dispatch_errors": watch.errors,
        "headline": text,
        "ok": all(met.values()),
    }
    write_result(NAME, quick, result)

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, 2, sharey=True)
        for ax, kind in zip(axes, TARGETS):
            data = [
                [r[o] for r in rows if r["kind"] == kind and r[o] is not None] for o in OBSERVERS
            ]
            ax.boxplot(data, whis=(0, 100))
            ax.set_xticks(
                [1, 2, 3], ["tcpdispatch", "HAProxy\ndefault", "HAProxy\ntuned"], fontsize=8
            )
            ax.axhline(TARGETS[kind], color="red", lw=0.8, ls="--")
            ax.set_title(f"{kind} ({trials} trials)", fontsize=9)
        axes[0].set_ylabel("seconds until out of rotation")

    plot(NAME, quick, draw)
    return result


def table(r: dict[str, Any]) -> str:
    rows = [
        "### 2. Failure detection\n",
        (
            f"{r['trials_per_kind']} trials per signal; seconds from "
            "the signal until the gateway is out of rotation.\n"
        ),
        (
            "| signal | tcpdispatch median / max | HAProxy default (inter 2s fall 3) median / max "
            "| HAProxy tuned (inter 250ms fall 2) median / max | target | met |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for kind, s in r["summary"].items():
        cells = [
            f"{s[o]['median_s']} / {s[o]['max_s']}"
            + (f" ({s[o]['not_detected']} undetected)" if s[o]["not_detected"] else "")
            for o in OBSERVERS
        ]
        rows.append(
            f"| {kind} | {' | '.join(cells)} | <= {r['targets_s'][kind]} s | "
            f"{'yes' if r['met'][kind] else 'no'} |"
        )
    rows.append("\n![failure detection](../bench/results/failure_detection.png)\n")
    return "\n".join(rows)


if __name__ == "__main__":
    run_as_script(run)
