"""Operator visibility (issue 11): every health transition and panic change is logged once
with its reason and exported; metrics say what is handed out; answer and probe latencies."""

from __future__ import annotations

import logging
import platform
import re
from collections.abc import Callable
from typing import Any

import pytest
from dispatcher_stack import Stack
from helpers import require_speedups

from tcpdispatch import __version__
from tcpdispatch.health import ProbeResult

from .conftest import bring_up

OK = ProbeResult(ok=True, connections=0, capacity=100)


def fail(detail: str = "connection refused") -> ProbeResult:
    return ProbeResult(ok=False, detail=detail)


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    out = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "tcpdispatch.dispatcher.pool"
    ]
    caplog.clear()
    return out


def test_each_health_transition_is_logged_once_with_its_reason(
    make_app: Callable[..., Stack], caplog: pytest.LogCaptureFixture, clock: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="tcpdispatch.dispatcher.pool")
    app = make_app(up=False)  # rise = fall = 2
    pool = app.pool
    messages(caplog)
    # g1 never comes up: said once, whatever the number of failed probes
    for _ in range(6):
        pool.on_result("g1", fail())
    assert messages(caplog) == [
        (
            logging.WARNING,
            ("gateway g1 has not come up: 2 probes in a row failed (fall = 2): connection refused"),
        )
    ]
    # it comes up, goes down, comes back: one line each
    pool.on_result("g1", OK)
    pool.on_result("g1", OK)
    assert messages(caplog) == [
        (logging.INFO, "gateway g1 is up: 2 probes in a row passed (rise = 2)")
    ]
    pool.on_result("g1", fail("timed out after 0.5s"))
    pool.on_result("g1", fail("timed out after 0.5s"))
    pool.on_result("g1", fail("timed out after 0.5s"))
    assert messages(caplog) == [
        (
            logging.WARNING,
            ("gateway g1 went down: 2 probes in a row failed (fall = 2): timed out after 0.5s"),
        )
    ]
    clock.t += 12.5
    for _ in range(4):
        pool.on_result("g1", OK)
    assert messages(caplog) == [
        (
            logging.INFO,
            ("gateway g1 came back: 2 probes in a row passed (rise = 2), down for 12.5 s"),
        )
    ]
    assert pool.gateways["g1"].transitions == {"up": 2, "down": 1}


def test_panic_start_and_end_are_logged_once(
    make_app: Callable[..., Stack], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()  # three gateways up
    pool = app.pool
    caplog.set_level(logging.INFO, logger="tcpdispatch.dispatcher.pool")
    messages(caplog)
    changes = pool.panic_changes
    for gid in ("g1", "g2"):
        for _ in range(3):
            pool.on_result(gid, fail())
    pool.rebuild()
    pool.rebuild()
    panic = [m for m in messages(caplog) if "panic" in m[1]]
    assert panic == [
        (
            logging.WARNING,
            (
                "panic mode on: 1 of 3 non-draining gateways are healthy "
                "(below panic_threshold = 0.5); handing out all 3"
            ),
        )
    ]
    bring_up(pool, "g1")
    pool.rebuild()
    panic = [m for m in messages(caplog) if "panic" in m[1]]
    assert panic == [
        (
            logging.INFO,
            (
                "panic mode off: 2 of 3 non-draining gateways are healthy; "
                "handing out the healthy ones only"
            ),
        )
    ]
    assert pool.panic_changes == changes + 2


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{want}}}" if labels else "")) + r" (\S+)"
    found = re.search(r"^" + pattern + "$", text, re.MULTILINE)
    assert found, f"{name} {labels} not in metrics"
    return float(found.group(1))


async def scrape(app: Stack, call_router: Any) -> str:
    r = await call_router(app, "GET", "/metrics")
    assert r.status == 200
    return str(r.body.decode())


async def test_up_is_health_and_in_rotation_is_what_is_handed_out(
    make_app: Callable[..., Stack], call_router: Any
) -> None:
    app = make_app(up=False)  # all down: panic hands every gateway out
    app.pool.rebuild()
    text = await scrape(app, call_router)
    assert metric(text, "tcpdispatch_panic") == 1.0
    for gid in ("g1", "g2", "g3"):
        assert metric(text, "tcpdispatch_gateway_up", gateway=gid) == 0.0
        assert metric(text, "tcpdispatch_gateway_in_rotation", gateway=gid) == 1.0
    bring_up(app.pool)
    app.pool.set_drain("g2", True)
    text = await scrape(app, call_router)
    assert metric(text, "tcpdispatch_panic") == 0.0
    assert metric(text, "tcpdispatch_gateway_up", gateway="g2") == 1.0
    assert metric(text, "tcpdispatch_gateway_in_rotation", gateway="g2") == 0.0
    assert metric(text, "tcpdispatch_gateway_in_rotation", gateway="g1") == 1.0
    assert metric(text, "tcpdispatch_gateway_health_changes_total", gateway="g1", to="up") == 1.0
    assert metric(text, "tcpdispatch_panic_changes_total") >= 1.0


async def test_the_load_estimate_is_renamed_and_build_info_and_process_are_exported(
    make_app: Callable[..., Stack], call_router: Any
) -> None:
    app = make_app()
    text = await scrape(app, call_router)
    assert (
        "tcpdispatch_gateway_connections" not in text
    )  # the gateway's own metric means real sessions
    assert metric(text, "tcpdispatch_gateway_estimated_connections", gateway="g1") == 0.0
    accel = "c" if 'accelerator="c"' in text else "none"
    assert (
        metric(
            text,
            "tcpdispatch_build_info",
            version=__version__,
            python=platform.python_version(),
            accelerator=accel,
        )
        == 1.0
    )
    assert metric(text, "process_resident_memory_bytes") > 0


@pytest.mark.parametrize("hot_path", ["python", "c"])
async def test_dispatch_answer_times_are_counted_on_both_paths(
    make_app: Callable[..., Stack], call_router: Any, hot_path: str
) -> None:
    if hot_path == "c":
        require_speedups()
        app = make_app()
        app.service.set_date(b"date: x\r\n")
        for i in range(5):
            assert app.service.fast.request(
                b"GET /v1/dispatch?client_id=c%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
            )
    else:
        app = make_app(dispatcher={"speedups": False})
    for i in range(3):
        assert app.service.dispatch_bytes(b"client_id=p%d" % i, "10.0.0.1", [])[0] == 200
    assert app.service.dispatch_bytes(b"client_id=%zz", "10.0.0.1", [])[0] == 400
    text = await scrape(app, call_router)
    answered = 4 + (5 if hot_path == "c" else 0)
    assert metric(text, "tcpdispatch_dispatch_duration_seconds_count") == answered
    assert metric(text, "tcpdispatch_dispatch_duration_seconds_bucket", le="+Inf") == answered
    assert 0 < metric(text, "tcpdispatch_dispatch_duration_seconds_sum") < answered * 0.1


async def test_probe_durations_by_result(make_app: Callable[..., Stack], call_router: Any) -> None:
    app = make_app()
    app.stats.observe_probe(True, 0.003)
    app.stats.observe_probe(False, 0.5)
    text = await scrape(app, call_router)
    assert (
        metric(text, "tcpdispatch_health_probe_duration_seconds_bucket", result="ok", le="0.005")
        == 1.0
    )
    assert (
        metric(text, "tcpdispatch_health_probe_duration_seconds_bucket", result="ok", le="0.0025")
        == 0.0
    )
    assert metric(text, "tcpdispatch_health_probe_duration_seconds_count", result="failed") == 1.0
