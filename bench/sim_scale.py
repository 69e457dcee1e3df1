"""Every ``tcpdispatch simulate`` scenario at internet scale, p2c and each baseline.

Each run is its own ``tcpdispatch simulate`` process (so its peak RSS is its own),
measured for wall time, CPU time (user + system) and peak RSS; its JSON and PNG
go to ``bench/results/sim/``, and ``bench/results/sim/scale.json`` collects them.
Rerunning skips runs whose JSON exists unless ``--force``.

    python -m bench.sim_scale   # 1,000,000 clients, 1,000 gateways, 10 replicas, 3 zones
    python -m bench.sim_scale --clients 100000 --gateways 100 --tag 100k
    python -m bench.sim_scale --baselines none --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tcpdispatch.sim.scenarios import SCENARIOS
from tcpdispatch.sim.world import BASELINES

OUT = Path(__file__).resolve().parent / "results" / "sim"
TCPDISPATCH = [sys.executable, "-m", "tcpdispatch"]


def run_one(scenario: str, baseline: str, a: argparse.Namespace) -> dict[str, Any]:
    """One simulate process; its summary plus wall, CPU and peak RSS."""
    who = "p2c" if baseline == "none" else baseline
    stem = OUT / f"{a.tag}-{scenario}-{who}"
    json_path = stem.with_suffix(".json")
    if json_path.exists() and not a.force:
        return dict(json.loads(json_path.read_text()))
    cmd = [
        *TCPDISPATCH,
        "--log-level",
        "warning",
        "simulate",
        scenario,
        "--clients",
        str(a.clients),
        "--gateways",
        str(a.gateways),
        "--replicas",
        str(a.replicas),
        "--zones",
        str(a.zones),
        "--baseline",
        baseline,
        "--seed",
        str(a.seed),
        "--json",
        str(stem) + ".summary.json",
        "--plot",
        str(stem.with_suffix(".png")),
        "--progress",
        "off",
    ]
    t0 = time.monotonic()
    # wait4 gives this child's own CPU time and peak RSS (not the sum over all children).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{scenario}/{who} failed: {err[-2000:]}")
    summary = json.loads(Path(str(stem) + ".summary.json").read_text())
    Path(str(stem) + ".summary.json").unlink()
    doc = {
        **summary,
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "text": out.strip(),
    }
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    print(
        f"{scenario:18} {who:14} wall {wall:6.1f} s  cpu {doc['cpu_s']:6.1f} s  rss "
        f"{doc['peak_rss_mib']:5} MiB",
        flush=True,
    )
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clients", type=int, default=1_000_000)
    p.add_argument("--gateways", type=int, default=1000)
    p.add_argument("--replicas", type=int, default=10)
    p.add_argument("--zones", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tag", default="1m", help="file name prefix (default 1m)")
    p.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    p.add_argument("--baselines", default=",".join(BASELINES), help="'none' is tcpdispatch p2c")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time (default 1)")
    p.add_argument("--force", action="store_true", help="rerun runs that already have a JSON")
    a = p.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    todo = [(s, b) for b in a.baselines.split(",") for s in a.only.split(",")]

    def one(sb: tuple[str, str]) -> dict[str, Any] | None:
        try:
            return run_one(sb[0], sb[1], a)
        except RuntimeError as exc:  # one failed run should not cost the others
            print(exc, file=sys.stderr, flush=True)
            return None

    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        docs = [d for d in pool.map(one, todo) if d is not None]
    index = OUT / f"{a.tag}-scale.json"
    old = json.loads(index.read_text()) if index.exists() else []
    keep = {(d["scenario"], d["baseline"]): d for d in old}
    keep.update(
        {(d["scenario"], d["baseline"]): {k: v for k, v in d.items() if k != "text"} for d in docs}
    )
    index.write_text(json.dumps(list(keep.values()), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
