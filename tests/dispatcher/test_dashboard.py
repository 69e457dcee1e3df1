"""The dashboard's routes: /ui/ static files (types, ETag, CSP), /v1/events over the built-in
HTTP server (streamed, read token, bounded), and the overview snapshot they show."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from dispatcher_stack import Stack
from helpers import scaled

from tcpdispatch.config import DispatcherConfig
from tcpdispatch.dispatcher import routes
from tcpdispatch.dispatcher.httpserver import HTTPServer
from tcpdispatch.dispatcher.overview import Overview
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.dispatcher.rebalancer import Rebalancer
from tcpdispatch.dispatcher.ui import CSP, StaticFiles
from tcpdispatch.health import ProbeResult
from tcpdispatch.store import MemoryStore

ADMIN = "admin-token-123"


# ------------------------------------------------------------------ static files


async def test_ui_serves_package_files_with_types_etag_and_csp(
    make_app: Callable[..., Stack], call_router: Any
) -> None:
    app = make_app()
    r = await call_router(app, "GET", "/ui")
    assert r.status == 308 and r.headers["location"] == "/ui/"
    r = await call_router(app, "GET", "/ui/")
    assert r.status == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"] == CSP and "script-src 'self';" in CSP
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
    assert (
        r.headers["x-content-type-options"] == "nosniff"
        and r.headers["cache-control"] == "no-cache"
    )
    html = r.body.decode()
    assert '<script src="app.js"' in html and "<script>" not in html and "style=" not in html
    for name, ctype in (
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("uPlot.min.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ):
        r = await call_router(app, "GET", "/ui/" + name)
        assert r.status == 200 and r.headers["content-type"].startswith(ctype), name
    etag = r.headers["etag"]
    r = await call_router(
        app, "GET", "/ui/favicon.svg", headers=[(b"if-none-match", etag.encode())]
    )
    assert r.status == 304 and r.body == b""
    for bad in ("/ui/../routes.py", "/ui/nope.js", "/ui/README.md/x", "/ui/%2e%2e/app.py"):
        r = await call_router(app, "GET", bad)
        assert r.status == 404 and r.json()["error"] == "not_found", bad


def test_every_shipped_file_is_served_and_the_vendored_licence_is_there() -> None:
    files = StaticFiles().files
    assert {"index.html", "app.js", "style.css", "uPlot.iife.min.js", "uPlot.min.css"} <= set(files)
    root = Path(__file__).parents[2] / "src/tcpdispatch/dispatcher/ui"
    assert (
        "MIT" in (root / "uPlot.LICENSE").read_text()
        and "1.6.32" in (root / "README.md").read_text()
    )


# ------------------------------------------------------------------ /v1/events over the real server


class Stream:
    """A raw HTTP/1.1 client reading one streamed answer (chunked framing)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.buf = reader, writer, b""

    async def head(self) -> tuple[int, dict[str, str]]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), scaled(5))
        lines = raw.decode().split("\r\n")
        return int(lines[0].split()[1]), {
            k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
        }

    async def chunk(self) -> bytes:
        """The next chunk of the body (chunked transfer coding)."""
        size = int(await asyncio.wait_for(self.reader.readuntil(b"\r\n"), scaled(5)), 16)
        assert size, "stream ended"
        data = await asyncio.wait_for(self.reader.readexactly(size + 2), scaled(5))
        return data[:-2]

    async def message(self, name: str) -> Any:
        """The data of the next SSE message called ``name`` (others skipped)."""
        while True:
            while b"\n\n" not in self.buf:
                self.buf += await self.chunk()
            block, _, self.buf = self.buf.partition(b"\n\n")
            lines = block.decode().split("\n")
            if f"event: {name}" in lines:
                return json.loads(next(ln[6:] for ln in lines if ln.startswith("data: ")))


@pytest.fixture
async def server(make_app: Callable[..., Stack]) -> AsyncIterator[Callable[..., Any]]:
    started: list[HTTPServer] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(app: Stack) -> Callable[..., Any]:
        srv = HTTPServer(app.service.dispatch_bytes, app.router.handle, "127.0.0.1", 0)
        await srv.start()
        started.append(srv)

        async def open_stream(token: str | None = None) -> Stream:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writers.append(writer)
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            writer.write(f"GET /v1/events HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
            return Stream(reader, writer)

        return open_stream

    yield start
    for w in writers:
        w.close()
    for s in started:
        await s.close(grace=0.5)


async def test_events_stream_over_the_built_in_server(
    make_app: Callable[..., Stack], server: Any, call_router: Any
) -> None:
    app = make_app()
    open_stream = await server(app)
    s = await open_stream()
    status, headers = await s.head()
    assert status == 200 and headers["content-type"] == "text/event-stream; charset=utf-8"
    assert "content-length" not in headers and headers["transfer-encoding"] == "chunked"
    snap = await s.message("snapshot")
    assert sorted(g["id"] for g in snap["gateways"]) == ["g1", "g2", "g3"]
    assert {g["state"] for g in snap["gateways"]} == {"up"}
    r = await call_router(app, "POST", "/v1/gateways/g2/drain", token=ADMIN)
    assert r.status == 200
    event = await s.message("event")
    assert event["kind"] == "drain" and event["gateway"] == "g2" and event["draining"] is True
    for _ in range(
        3
    ):  # the first tick may still serve the snapshot taken on connect (shared, 0.25 s)
        pool = await s.message("pool")
        if pool["gateways"]:
            break
    assert [(g["id"], g["state"]) for g in pool["gateways"]] == [
        ("g2", "draining")
    ]  # only what changed
    assert len(app.pool.events.subscribers) == 1
    # the client leaves: the stream ends at its next write, its subscription with it
    s.writer.close()
    for _ in range(int(scaled(50))):
        if not app.pool.events.subscribers:
            break
        await asyncio.sleep(0.1)
    assert not app.pool.events.subscribers


async def test_events_follow_the_read_token_rule(
    make_app: Callable[..., Stack], server: Any, tmp_path: Path
) -> None:
    (tmp_path / "read.token").write_text("read-token-456\n")
    app = make_app(dispatcher={"read_token_file": "read.token"})
    open_stream = await server(app)
    s = await open_stream()
    assert (await s.head())[0] == 401
    for token in ("read-token-456", ADMIN):
        s = await open_stream(token)
        assert (await s.head())[0] == 200
        assert "gateways" in await s.message("snapshot")


async def test_event_streams_are_bounded(
    make_app: Callable[..., Stack], server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "MAX_STREAMS", 2)
    app = make_app()
    open_stream = await server(app)
    for _ in range(2):
        s = await open_stream()
        assert (await s.head())[0] == 200
        await s.message("snapshot")
    s = await open_stream()
    status, headers = await s.head()
    assert status == 503 and headers["retry-after"] == "5"


async def test_server_close_ends_open_streams_promptly(make_app: Callable[..., Stack]) -> None:
    app = make_app()
    srv = HTTPServer(app.service.dispatch_bytes, app.router.handle, "127.0.0.1", 0)
    await srv.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    stream = Stream(reader, writer)
    await stream.head()
    await stream.message("snapshot")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await srv.close(grace=5.0)
    assert loop.time() - t0 < 1.5 and not srv.tasks  # not the whole grace period
    await asyncio.wait_for(reader.read(), scaled(5))  # whatever was in flight, then the close
    assert reader.at_eof()
    writer.close()


# ------------------------------------------------------------------ the overview


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_overview_states_targets_probe_and_rates(
    make_config: Callable[..., DispatcherConfig],
) -> None:
    cfg = make_config(
        [{"id": f"g{i}", "address": f"127.0.0.1:{9000 + i}", "capacity": 100} for i in range(5)],
        balancing={"slow_start_s": 30},
    )
    clock = Clock()
    pool = Pool(cfg, clock=clock, rng=random.Random(1))
    for gid in ("g0", "g1", "g2", "g3"):
        for _ in range(2):
            pool.on_result(
                gid, ProbeResult(ok=True, connections=10, capacity=100, latency_s=0.0042)
            )
    pool.rebuild()
    clock.t += 60  # past slow start
    pool.set_drain("g1", True)
    pool.remove("g3")
    pool.add(cfg.gateways[3], "admin")
    for _ in range(2):
        pool.on_result(
            "g3", ProbeResult(ok=True, connections=0, capacity=100)
        )  # joined later: slow start
    pool.rebuild()
    app = Stack(cfg, pool)
    rb = Rebalancer(cfg.rebalance, pool, app.stats, MemoryStore(), holder="r1")
    await rb.step()
    tick = Clock()
    ov = Overview(
        pool,
        app.stats,
        lambda: (list(app.stats.latency.counts), app.stats.latency.total),
        lambda: rb,
        clock=tick,
    )
    first = ov.snapshot()
    rows = {gid: json.loads(row) for gid, row in first.rows.items()}
    assert {k: v["state"] for k, v in rows.items()} == {
        "g0": "up",
        "g1": "draining",
        "g2": "up",
        "g3": "slow start",
        "g4": "down",
    }
    assert (
        rows["g0"]["held"] == 10
        and rows["g0"]["capacity"] == 100
        and rows["g0"]["zone"] == "default"
    )
    assert (
        rows["g0"]["probe_ok"] is True
        and rows["g0"]["probe_ms"] == 4.2
        and rows["g4"]["probe_ok"] is None
    )
    assert rows["g0"]["target"] is not None and rows["g1"]["weight"] == 1.0
    assert first.head["replica"] == {"id": "r1", "leader": True, "leader_id": "r1"}
    assert (
        first.head["rebalance"]["breaker"]["state"] == "closed"
        and "gateways" not in first.head["rebalance"]
    )
    assert ov.snapshot() is first  # shared between streams within min_interval_s
    for i in range(30):
        app.service.dispatch_bytes(f"client_id=c{i}".encode(), "10.0.0.1", [])
    app.stats.unavailable += 4
    tick.t += 2.0
    second = ov.snapshot()
    rates = second.head["rates"]
    assert rates["dispatch_per_s"] == 15.0 and rates["unavailable_per_s"] == 2.0
    assert rates["mean_ms"] > 0 and rates["p99_ms"] is not None
    assert second.history[-1][1:3] == [15.0, 2.0]
    # rows that did not change keep their encoded bytes (streams compare them by identity)
    assert second.rows["g2"] is first.rows["g2"]


def test_panic_state_for_a_down_gateway_handed_out(
    make_config: Callable[..., DispatcherConfig],
) -> None:
    pool = Pool(
        make_config(), rng=random.Random(1)
    )  # nothing probed yet: all down, panic hands them out
    app = Stack(make_config(), pool)
    ov = Overview(pool, app.stats, lambda: ([0] * 12, 0.0), lambda: None)
    view = ov.snapshot()
    assert view.head["panic"] and view.head["replica"] is None
    assert {json.loads(row)["state"] for row in view.rows.values()} == {"panic"}


async def test_metrics_count_events_by_kind_and_open_streams(
    make_app: Callable[..., Stack], call_router: Any
) -> None:
    app = make_app()
    app.pool.set_drain("g1", True)
    app.pool.set_drain("g1", False)
    sub = app.pool.events.subscribe()
    text = (await call_router(app, "GET", "/metrics")).body.decode()
    assert 'tcpdispatch_events_total{kind="drain"} 2.0' in text
    assert (
        "tcpdispatch_event_streams 1.0" in text
        and "tcpdispatch_event_streams_dropped_total 0.0" in text
    )
    sub.close()
