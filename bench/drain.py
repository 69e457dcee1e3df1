"""Scenario 5, drain: a gateway holding N clients drained over a window.

One real gateway (``--drain-window W``) takes all N loadgen clients (it is the
only one in the dispatcher's pool while they connect); then two empty gateways
are added through the admin API and the first is told to drain
(``POST /drain``): it sends RECONNECT to its clients spread over the window and
they move through the dispatcher. Measured from each gateway's ``/status``
every 0.1 s: the migration curve (plotted), the per-second move rate
(flat = max second / mean second close to 1, no stampede), and from the
loadgen: clients still disconnected at the end (must be 0).
No peer applies (HAProxy's DRAIN stops new connections but never moves
established ones); the figures are absolutes.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    ProcGroup,
    headline,
    plot,
    run_as_script,
    start_dispatcher,
    start_gateway,
    wait_until,
    write_result,
)
from bench.failover import Sampler, draw_series, finish_loadgen, start_loadgen

NAME = "drain"


def _admin_add(url: str, token: str, g: Any) -> None:
    body = json.dumps(
        {
            "id": g.id,
            "address": g.address,
            "check": f"http://127.0.0.1:{g.status_port}/status",
            "weight": 1,
        }
    ).encode()
    req = urllib.request.Request(
        url + "/v1/gateways",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=5).read()


def run(quick: bool) -> dict[str, Any]:
    n, window, procs, rate = (400, 3.0, 1, 600.0) if quick else (10_000, 30.0, 4, 1000.0)
    with tempfile.TemporaryDirectory(prefix="tcpdsuite-dr-") as tmp:
        work = Path(tmp)
        secret = work / "ticket.secret"
        secret.write_text("bench-secret-0123456789abcdef\n")
        token = "bench-admin-token-0123456789"
        (work / "admin.token").write_text(token + "\n")
        group = ProcGroup(work)
        sampler: Sampler | None = None
        lg = None
        try:
            gws = [
                start_gateway(
                    group,
                    f"g{i}",
                    "--capacity",
                    str(n + 1000),
                    "--drain-window",
                    f"{window:g}",
                    secret_file=secret,
                    admin_token_file=work / "admin.token",
                )
                for i in (1, 2, 3)
            ]
            disp = start_dispatcher(
                group,
                work,
                gws[:1],
                secret,
                extra_toml=f'admin_token_file = "{work / "admin.token"}"',
            )
            sampler = Sampler(gws)
            sampler.start()
            ramp, slack = n / rate, (4.0 if quick else 45.0)
            lg = start_loadgen(
                work, disp.url, n, rate, procs, ramp + slack + window + (4 if quick else 8)
            )
            wait_until(
                lambda: sampler.latest().get("g1", 0) >= n, ramp + slack, 0.2, f"{n} clients on g1"
            )
            for g in gws[1:]:
                _admin_add(disp.url, token, g)
            wait_until(
                lambda: (
                    all(v.get("healthy") for v in disp.gateways().values())
                    and len(disp.gateways()) == 3
                ),
                10,
                0.05,
                "g2, g3 healthy in the pool",
            )
            t0 = time.time()
            gws[0].drain()
            wait_until(
                lambda: (
                    sampler.latest().get("g1", 0) <= 0
                    and sum(max(0, v) for v in sampler.latest().values()) >= n
                ),
                window + 10,
                0.2,
                "every client moved",
            )
            t_done = time.time() - t0
            time.sleep(1.0)
            summary = finish_loadgen(lg, work, window + 60 + n / 1000)
        finally:
            if sampler is not None:
                sampler.stop()
            if lg is not None and lg.poll() is None:
                lg.kill()
                lg.wait()
            group.stop()
    rows = [r for r in sampler.rows if r[0] >= t0]
    # moves per whole second of the window, from g1's count
    per_s: list[int] = []
    for sec in range(int(window)):
        inside = [r[1] for r in rows if sec <= r[0] - t0 < sec + 1 and r[1] >= 0]
        nxt = [r[1] for r in rows if sec + 1 <= r[0] - t0 < sec + 2 and r[1] >= 0]
        if inside and nxt:
            per_s.append(int(inside[0] - nxt[0]))
    mean = sum(per_s) / len(per_s) if per_s else 0.0
    flat = round(max(per_s) / mean, 2) if mean else None
    final = {g.id: v for g, v in zip(gws, sampler.rows[-1][1:])}
    lost = summary.get("unrepaired")
    text = (
        f"{n:,} clients drained over {window:g} s: all moved after {t_done:.1f} s, lost {lost}, "
        f"move rate mean {mean:.0f}/s, busiest second {flat}x the mean"
    )
    headline(NAME, text)
    res = {
        "clients": n,
        "window_s": window,
        "moved_after_s": round(t_done, 2),
        "lost": lost,
        "moves_per_second": per_s,
        "mean_moves_per_s": round(mean, 1),
        "max_over_mean": flat,
        "expected_per_s": round(n / window, 1),
        "final": final,
        "loadgen_errors": summary.get("errors"),
        "reconnects": summary.get("reconnects"),
        "ids": [g.id for g in gws],
        "series": [[round(r[0] - t0, 2), *r[1:]] for r in sampler.rows[::2]],
        "met": lost == 0 and flat is not None and flat <= 2.0,
        "headline": text,
    }
    res["ok"] = res["met"]
    write_result(NAME, quick, res)
    plot(
        NAME, quick, lambda fig: draw_series(fig, res, f"drain of g1 over {window:g} s (0 = drain)")
    )
    return res


def table(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            "### 5. Drain\n",
            (
                "| clients | window | all moved after | lost | "
                "mean moves/s (expected) | busiest second / mean | met |"
            ),
            "|---|---|---|---|---|---|---|",
            (
                f"| {r['clients']:,} | {r['window_s']:g} s | {r['moved_after_s']} s | {r['lost']} "
                f"| {r['mean_moves_per_s']} ({r['expected_per_s']}) | {r['max_over_mean']} | "
                f"{'yes' if r['met'] else 'no'} |"
            ),
            "\n![drain](../bench/results/drain.png)\n",
        ]
    )


if __name__ == "__main__":
    run_as_script(run)
