"""deploy/prometheus/alerts.yml and deploy/grafana/tcpdispatch.json (issue 18): the rules pass
``promtool check rules`` and their unit tests, and every metric (and label) they name is one a
running dispatcher or gateway exports."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import start_dispatcher, start_gateway
from helpers import Proc, require_binary, scaled, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
GRAFANA = ROOT / "deploy/grafana/tcpdispatch.json"
METRIC = re.compile(r"\b((?:tcpdispatch|process)_[a-z0-9_]+)(\{[^}]*\})?")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ", re.MULTILINE)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    promtool = require_binary("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=scaled(30),
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 6 rules found" in check.stdout
    unit = subprocess.run(
        [promtool, "test", "rules", str(ALERTS.with_name("alerts_test.yml"))],
        capture_output=True,
        text=True,
        check=False,
        timeout=scaled(30),
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def expressions() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every alert rule and every Grafana query and template variable."""
    for i, line in enumerate(ALERTS.read_text().splitlines()):
        if line.strip().startswith("expr:"):
            # multi-line (|) expressions: the indented lines that follow
            rest = ALERTS.read_text().splitlines()[i + 1 :]
            body = [line.split("expr:", 1)[1]]
            for more in rest:
                if more.startswith(" " * 12) and not more.strip().startswith(("for:", "labels:")):
                    body.append(more)
                else:
                    break
            yield f"alerts.yml:{i + 1}", " ".join(body)
    dash = json.loads(GRAFANA.read_text())
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            yield f"grafana panel {panel['title']!r}", t["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            yield f"grafana variable {var['name']}", var["query"]


def scrape(url: str) -> dict[str, list[dict[str, str]]]:
    """Sample names (histogram _bucket/_sum/_count included) -> label sets of their samples."""
    with urllib.request.urlopen(url, timeout=scaled(5)) as resp:
        text = resp.read().decode()
    out: dict[str, list[dict[str, str]]] = {}
    for m in SAMPLE.finditer(text):
        labels = {k: v for k, _, v in LABEL.findall(m.group(2) or "")}
        out.setdefault(m.group(1), []).append(labels)
    return out


def test_every_metric_the_dashboard_and_alerts_name_is_exported(
    procs: Callable[..., Proc], tmp_path: Path, secret_file: Path
) -> None:
    gw = start_gateway(procs, "g1", secret_file=secret_file)
    disp = start_dispatcher(procs, tmp_path, [gw], secret_file)
    urllib.request.urlopen(f"{disp.url}/v1/dispatch?client_id=a", timeout=scaled(5)).read()

    async def refused_hello() -> None:  # so the per-reason refusal counter has a sample
        client = await gw.client()
        try:
            await client.hello(ticket="not-a-ticket")
        finally:
            await client.close()

    asyncio.run(refused_hello())
    gateway_metrics = gw.status_url.rsplit("/", 1)[0] + "/metrics"
    wait_until(
        lambda: "tcpdispatch_gateway_rejected_total" in scrape(gateway_metrics),
        5,
        what="a refusal counted",
    )
    exported = scrape(disp.url + "/metrics")
    for name, samples in scrape(gateway_metrics).items():
        exported.setdefault(name, []).extend(samples)
    named: set[str] = set()
    problems = []
    for where, expr in expressions():
        for m in METRIC.finditer(expr):
            name = m.group(1)
            named.add(name)
            if name not in exported:
                problems.append(f"{where}: {name} is not exported")
                continue
            have = {k for s in exported[name] for k in s}
            for key, op, value in LABEL.findall(m.group(2) or ""):
                if key == "job":
                    continue  # added by Prometheus at scrape time
                if key not in have:
                    problems.append(f"{where}: {name} has no label {key!r}")
                elif op == "=" and value not in {s.get(key) for s in exported[name]}:
                    problems.append(f"{where}: {name}{{{key}={value!r}}} has no such sample")
        for key in re.findall(r"by \(([^)]*)\)", expr):
            for label in (k.strip() for k in key.split(",")):
                names = [n.group(1) for n in METRIC.finditer(expr)]
                if label not in ("le", "instance", "job") and not any(
                    label in {k for s in exported.get(n, []) for k in s} for n in names
                ):
                    problems.append(f"{where}: no metric in it has the label {label!r}")
    assert not problems, "\n".join(problems)
    # The files cover what an operator needs: these are all named somewhere.
    assert {
        "tcpdispatch_gateway_up",
        "tcpdispatch_panic",
        "tcpdispatch_rebalance_imbalance",
        "tcpdispatch_dispatch_requests_total",
        "tcpdispatch_gateway_connections",
        "tcpdispatch_gateway_capacity",
        "tcpdispatch_rebalance_breaker_open",
    } <= named


def test_grafana_dashboard_is_well_formed() -> None:
    dash = json.loads(GRAFANA.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] == "tcpdispatch"
    for p in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"][
            "w"
        ] <= 24
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
