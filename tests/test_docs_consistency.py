"""Docs that name things in the code say what the code does (issue 11: papercuts a new user hit)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest

from tcpdispatch.gateway.config import GatewayConfig
from tcpdispatch.gateway.node import NodeCounters
from tcpdispatch.gateway.status import StatusService

ROOT = Path(__file__).resolve().parents[1]


def test_systemd_documentation_paths_are_the_installed_docs() -> None:
    """Every ``Documentation=file:///opt/tcpdispatch/docs/X`` is a doc of ours that deploy/README
    copies."""
    deploy = (ROOT / "deploy" / "README.md").read_text()
    assert "cp docs/*.md /opt/tcpdispatch/docs/" in deploy
    found = []
    for unit in (ROOT / "deploy" / "systemd").glob("*.service"):
        for uri in re.findall(r"^Documentation=(\S+)", unit.read_text(), re.MULTILINE):
            assert uri.startswith("file:///opt/tcpdispatch/docs/"), (unit.name, uri)
            assert (ROOT / "docs" / uri.rsplit("/", 1)[1]).is_file(), (unit.name, uri)
            found.append(uri)
    assert len(found) >= 2, "both units name their documentation"


def _gateway_metrics() -> str:
    counters = NodeCounters(1)
    counters.bind_worker(0)
    cfg = GatewayConfig(id="g1", listen=("127.0.0.1", 9001), status=("127.0.0.1", 9101))
    service = StatusService(cfg, counters, on_drain=counters.set_draining, pids=list)
    return generate_latest(service._registry).decode()  # type: ignore[arg-type]


def test_operations_guide_labels_of_gateway_metrics_match_the_gateway() -> None:
    """Rows of docs/operations.md's table about the gateway status port name the real labels."""
    text = _gateway_metrics()
    rows = [
        r
        for r in (ROOT / "docs" / "operations.md").read_text().splitlines()
        if r.startswith("|") and "gateway status port" in r
    ]
    assert rows, "operations.md has gateway metric rows"
    for row in rows:
        for name, labels in re.findall(
            r"`(tcpdispatch_gateway_\w+)(?:\{([^}]*)\})?`", row.split("|")[1]
        ):
            assert f"# HELP {name} " in text, f"{name} is not exported by the gateway"
            series = [ln for ln in text.splitlines() if ln.startswith(name + "{")]
            if not series:  # a labelled counter with no sample yet: nothing to compare
                continue
            documented = set(filter(None, (labels or "").split(",")))
            real = set(re.findall(r"(\w+)=", series[0]))
            assert documented <= real, f"{name}: docs say {documented}, gateway has {real}"
            assert "gateway" not in real or "gateway" in documented, (
                f"{name}: docs omit the gateway label"
            )
