"""Markdown tables of the simulator runs in ``bench/results/sim/`` (pasted into docs/simulation.md).

python -m bench.sim_report --tag 1m
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tcpdispatch.sim.scenarios import SCENARIOS
from tcpdispatch.sim.world import BASELINES

OUT = Path(__file__).resolve().parent / "results" / "sim"


def load(tag: str) -> dict[tuple[str, str], dict[str, Any]]:
    docs = {}
    for path in OUT.glob(f"{tag}-*.json"):
        if path.name.endswith(("-scale.json", ".summary.json")):
            continue
        d = json.loads(path.read_text())
        docs[(d["scenario"], d["baseline"])] = d
    return docs


def _f(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(tag: str) -> str:
    docs = load(tag)
    head = (
        "| scenario | who | re-homed p50 / p99 / 100 % (s) | lost | peak load / capacity | balance "
        "at end (max/mean) | moves | dispatch peak /s per replica | wall s | CPU s | peak RSS MiB |"
    )
    rows = [head, "|" + "---|" * 11]
    for s in SCENARIOS:
        for b in BASELINES:
            d = docs.get((s, b))
            if d is None:
                continue
            who = "**tcpdispatch p2c**" if b == "none" else b
            rows.append(
                f"| {s} | {who} | {_f(d['rehomed_p50_s'])} / {_f(d['rehomed_p99_s'])} / "
                f"{_f(d['rehomed_100_s'])} | {_f(d['lost'])} | {_f(d['peak_gateway_load_ratio'])} "
                f"| {_f(d['balance_max_over_mean_end'])} | {_f(d['moves'])} | "
                f"{_f(d['dispatch_peak_rps_per_replica'])} | {_f(d.get('wall_s'))} | "
                f"{_f(d.get('cpu_s'))} | {_f(d.get('peak_rss_mib'))} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tag", default="1m")
    a = p.parse_args(argv)
    print(table(a.tag))
    return 0


if __name__ == "__main__":
    sys.exit(main())
