"""What an operator sees of a real dispatcher and gateway (issue 11): health and panic
changes logged once with their reason, metrics that tell health from what is handed out,
answer and probe latency histograms, build info and process metrics on both processes."""

from __future__ import annotations

import re
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import start_dispatcher, start_gateway
from helpers import Proc, require_speedups, scaled, wait_until

pytestmark = pytest.mark.integration


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=scaled(5)) as resp:
        return str(resp.read().decode())


def value(text: str, series: str) -> float:
    found = re.search(r"^" + re.escape(series) + r" (\S+)$", text, re.MULTILINE)
    assert found, f"{series} not in metrics"
    return float(found.group(1))


@pytest.mark.parametrize("speedups", [True, False], ids=["c", "python"])
def test_a_dead_gateway_is_logged_once_and_metrics_tell_health_from_rotation(
    procs: Callable[..., Proc], tmp_path: Path, secret_file: Path, speedups: bool
) -> None:
    if speedups:
        require_speedups()
    gw = start_gateway(procs, "g1", secret_file=secret_file)
    disp = start_dispatcher(
        procs, tmp_path, [gw], secret_file, extra_toml=f"speedups = {str(speedups).lower()}"
    )
    for i in range(5):
        with urllib.request.urlopen(
            f"{disp.url}/v1/dispatch?client_id=c{i}", timeout=scaled(5)
        ) as r:
            assert r.status == 200
    text = scrape(disp.url + "/metrics")
    assert value(text, "tcpdispatch_dispatch_duration_seconds_count") == 5
    assert value(text, 'tcpdispatch_health_probe_duration_seconds_count{result="ok"}') >= 2
    assert "tcpdispatch_build_info{accelerator=" in text and "process_cpu_seconds_total" in text
    gtext = gw.metrics()
    assert "tcpdispatch_build_info{" in gtext and "process_resident_memory_bytes" in gtext
    assert 'tcpdispatch_gateway_connections{gateway="g1"}' in gtext  # the gateway's keeps its name

    assert "gateway g1 is up: 2 probes in a row passed (rise = 2)" in disp.proc.output()
    gw.signal(signal.SIGKILL)
    wait_until(
        lambda: (
            "panic mode on: 0 of 1 non-draining gateways are healthy (below panic_threshold = 0.5);"
            in disp.proc.output()
        ),
        scaled(10),
        what="panic logged",
    )
    text = scrape(disp.url + "/metrics")
    # the one gateway is down, and panic still hands it out: the metrics say both
    assert value(text, 'tcpdispatch_gateway_up{gateway="g1"}') == 0.0
    assert value(text, 'tcpdispatch_gateway_in_rotation{gateway="g1"}') == 1.0
    assert value(text, "tcpdispatch_panic") == 1.0
    assert value(text, 'tcpdispatch_health_probe_duration_seconds_count{result="failed"}') >= 2
    out = disp.proc.output()
    assert out.count("gateway g1 went down: 2 probes in a row failed (fall = 2): ") == 1, out[
        -3000:
    ]
    assert (
        out.count(
            "panic mode on: 0 of 1 non-draining gateways are healthy (below panic_threshold = 0.5);"
        )
        == 1
    )
