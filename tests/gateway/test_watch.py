"""The gateway side of the status watch: what is streamed when, the loop meter, and the endpoint."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from harness import free_port

from tcpdispatch.gateway.config import GatewayConfig
from tcpdispatch.gateway.loadmeter import LoopMeter
from tcpdispatch.gateway.shm import NodeCounters
from tcpdispatch.gateway.status import StatusService
from tcpdispatch.gateway.watch import TICK, WatchFeed, parse_watch_interval, watch_doc


def doc(**kw: Any) -> dict[str, Any]:
    base = {
        "id": "g1",
        "state": "serving",
        "connections": 3,
        "capacity": 10,
        "address": "h:1",
        "cpu": 0.1,
        "busy": 0.2,
        "lag_ms": 1,
        "uptime_s": 5.0,
        "accepted": 7,
    }
    base.update(kw)
    return base


def test_feed_sends_the_document_then_ticks_then_only_what_changed() -> None:
    f = WatchFeed(0.25)
    first = json.loads(f.poll(doc(), 0.0))
    assert first == watch_doc(doc()) and "uptime_s" not in first and "accepted" not in first
    assert f.poll(doc(uptime_s=6.0, accepted=9), 0.1) == b""  # not yet due, nothing urgent
    assert f.poll(doc(), 0.25) == TICK  # due, unchanged: a bare tick
    assert f.poll(doc(connections=4), 0.3) == b""  # load waits for the tick (coalesced)
    assert json.loads(f.poll(doc(connections=5), 0.5)) == {"connections": 5}


def test_feed_sends_urgent_changes_at_once() -> None:
    f = WatchFeed(1.0)
    f.poll(doc(), 0.0)
    assert json.loads(f.poll(doc(state="draining"), 0.05)) == {"state": "draining"}
    assert json.loads(f.poll(doc(state="draining", connections=10), 0.1)) == {
        "connections": 10
    }  # now full
    assert f.poll(doc(state="draining", connections=10), 0.2) == b""
    assert f.poll(doc(state="draining", connections=10), 1.1) == TICK


def test_feed_coarsens_load_noise() -> None:
    f = WatchFeed(0.1)
    f.poll(doc(busy=0.21, lag_ms=2, cpu=0.12), 0.0)
    assert f.poll(doc(busy=0.19, lag_ms=4, cpu=0.09), 0.1) == TICK
    assert json.loads(f.poll(doc(busy=0.97, lag_ms=140), 0.2)) == {"busy": 0.95, "lag_ms": 140}


@pytest.mark.parametrize("text", ["", "abc", "0", "0.001", "61", "nan", "inf", "-1"])
def test_bad_watch_intervals_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="between"):
        parse_watch_interval(text)


def test_loop_meter_reports_busy_and_lag_per_window() -> None:
    seen: list[tuple[float, float]] = []
    m = LoopMeter(lambda b, lag: seen.append((b, lag)), period=0.05, window=0.25)
    m._due = 0.05
    # window 1 (start-up) is not published; window 2: CPU ran 0.2 of 0.25 s, one timer 30 ms late
    assert not m.sample(0.25, 0.0)
    m._due = 0.30
    m.sample(0.33, 0.1)
    m._due = 0.49
    assert m.sample(0.50, 0.2)
    assert seen == [(pytest.approx(0.8), pytest.approx(0.03))]


def test_status_reports_the_busiest_worker() -> None:
    cfg = GatewayConfig(id="g1", listen=("127.0.0.1", 9001), status=("127.0.0.1", 9101), workers=2)
    counters = NodeCounters(2)
    counters.bind_worker(1)
    counters.set_loop_load(0.97, 0.12)
    counters.bind_worker(0)
    counters.set_loop_load(0.10, 0.001)
    service = StatusService(cfg, counters, on_drain=counters.set_draining, pids=list)
    st = service.status()
    assert st["busy"] == 0.97 and st["lag_ms"] == 120
    assert st["worker_busy"] == [0.1, 0.97]
    from prometheus_client import generate_latest

    text = generate_latest(service._registry).decode()  # type: ignore[arg-type]
    assert 'tcpdispatch_gateway_worker_busy{gateway="g1",worker="1"} 0.97' in text
    assert 'tcpdispatch_gateway_worker_loop_lag_seconds{gateway="g1",worker="1"} 0.12' in text
    counters.clear_worker(1)
    assert counters.snapshot().worker_busy == (0.1, 0.0)


async def test_status_endpoint_streams_and_refuses_bad_intervals() -> None:
    port = free_port()
    cfg = GatewayConfig(
        id="g1", listen=("127.0.0.1", 9001), status=("127.0.0.1", port), capacity=10
    )
    counters = NodeCounters(1)
    service = StatusService(cfg, counters, on_drain=counters.set_draining, pids=list)
    await service.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /status?watch=0.05 HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert (
            b"200 OK" in head
            and b"application/x-ndjson" in head
            and b"Tcpdispatch-Watch: 0.05" in head
        )
        body = b""
        while body.count(b"\n") < 4:  # the document, then ticks (chunked framing around them)
            body += await asyncio.wait_for(reader.read(4096), 2)
        assert b'"state":"serving"' in body
        counters.set_draining()
        while b'"state":"draining"' not in body:
            body += await asyncio.wait_for(reader.read(4096), 2)
        writer.close()
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"GET /status?watch=fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(r2.read(), 2)
        assert b"400 Bad Request" in answer and b"tick interval" in answer
        w2.close()
    finally:
        await asyncio.wait_for(service.stop(), 2)  # open watches end promptly


def test_feed_with_a_known_unchanged_document_only_ticks() -> None:
    f = WatchFeed(0.25)
    f.poll(doc(), 0.0)
    assert f.poll(doc(connections=99), 0.1, changed=False) == b""  # trusted: not even looked at
    assert f.poll(doc(connections=99), 0.25, changed=False) == TICK
    assert f.due == 0.5
