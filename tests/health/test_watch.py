"""The dispatcher's status watch: streams from the gateway's own code, failures, fallback, cost."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from harness import free_port
from health_recorder import Recorder
from helpers import async_wait_until, scaled

from tcpdispatch.gateway.config import GatewayConfig
from tcpdispatch.gateway.shm import NodeCounters
from tcpdispatch.gateway.status import StatusService
from tcpdispatch.gateway.watch import WatchFeed
from tcpdispatch.health import (
    HealthSettings,
    StatusMonitor,
    StatusWatcher,
    parse_check,
)
from tcpdispatch.health.rawprobe import RawProber


class Gateway:
    """The real gateway StatusService in this process, on a free port."""

    def __init__(self, gid: str = "g1") -> None:
        self.port = free_port()
        cfg = GatewayConfig(
            id=gid, listen=("127.0.0.1", 9001), status=("127.0.0.1", self.port), capacity=100
        )
        self.counters = NodeCounters(1)
        self.service = StatusService(
            cfg, self.counters, on_drain=self.counters.set_draining, pids=list
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/status"

    async def start(self) -> Gateway:
        await self.service.start()
        return self

    async def crash(self) -> None:
        """Close the port and every connection at once, as a killed process would."""
        self.service.watches.close()
        runner = self.service._runner
        assert runner is not None
        for site in list(runner.sites):
            await site.stop()
        await self.service.stop()


class PausableStream:
    """Speaks the watch protocol (the gateway's WatchFeed) over raw sockets; ``paused`` = hung."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"id": "g", "state": "serving", "connections": 0, "capacity": 10}
        self.paused = False
        self.garbage = False
        self.server: asyncio.Server | None = None
        self.port = 0
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/status"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            interval = float(head.split(b"watch=", 1)[1].split(b" ", 1)[0])
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            feed = WatchFeed(interval)
            loop = asyncio.get_running_loop()
            while True:
                if not self.paused:
                    line = b"{not json\n" if self.garbage else feed.poll(self.doc, loop.time())
                    if line:
                        writer.write(b"%x\r\n%s\r\n" % (len(line), line))
                await asyncio.sleep(interval / 5)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self) -> PausableStream:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in self.tasks:
            t.cancel()


@pytest.fixture
async def gateways() -> AsyncIterator[Callable[[], Awaitable[Gateway]]]:
    made: list[Gateway] = []

    async def make() -> Gateway:
        g = await Gateway().start()
        made.append(g)
        return g

    yield make
    for g in made:
        await g.service.stop()


@pytest.fixture
async def streams() -> AsyncIterator[Callable[[], Awaitable[PausableStream]]]:
    made: list[PausableStream] = []

    async def make() -> PausableStream:
        s = await PausableStream().start()
        made.append(s)
        return s

    yield make
    for s in made:
        await s.stop()


@contextlib.asynccontextmanager
async def watching(
    settings: HealthSettings, targets: dict[str, Any]
) -> AsyncIterator[tuple[StatusWatcher, Recorder]]:
    """A started watcher over ``targets`` with a Recorder of its results; closed on exit."""
    rec = Recorder(settings)
    w = StatusWatcher(settings, rec)
    w.set_targets(targets)
    await w.start()
    try:
        yield w, rec
    finally:
        await w.close()


async def test_watches_a_real_gateway_and_sees_changes_within_a_tick(gateways) -> None:  # type: ignore[no-untyped-def]
    gw = await gateways()
    settings = HealthSettings(interval=0.1)
    async with watching(settings, {"g1": parse_check(gw.url)}) as (w, rec):
        await async_wait_until(lambda: rec.up("g1"), timeout=2.0, what="up")
        assert w.watching == {"g1"}
        for _ in range(7):
            gw.counters.admit(100, None, 0)
        await async_wait_until(
            lambda: rec.calls["g1"][-1][1].connections == 7, timeout=scaled(0.5), what="load update"
        )
        t0 = time.monotonic()
        gw.counters.set_draining()
        await async_wait_until(lambda: rec.calls["g1"][-1][1].draining, timeout=1.0, what="drain")
        assert time.monotonic() - t0 < scaled(0.1)  # urgent: at once, not at the next tick


async def test_unchanged_ticks_are_not_reported_once_the_state_is_settled(streams) -> None:  # type: ignore[no-untyped-def]
    s = await streams()
    settings = HealthSettings(interval=0.05)
    async with watching(settings, {"g": parse_check(s.url)}) as (w, rec):
        await async_wait_until(lambda: rec.up("g"), timeout=2.0)
        await asyncio.sleep(0.3)
        settled = len(rec.calls["g"])
        await asyncio.sleep(0.5)  # ~10 ticks arrive; none needs judging
        assert len(rec.calls["g"]) == settled
        assert w.watching == {"g"}
        w.check_now("g")  # a client report: the next tick is judged again
        await async_wait_until(lambda: len(rec.calls["g"]) > settled, timeout=1.0)


async def test_crash_is_out_at_once_and_hang_after_the_missed_ticks(gateways, streams) -> None:  # type: ignore[no-untyped-def]
    gw = await gateways()
    hung = await streams()
    settings = (
        HealthSettings()
    )  # the defaults are what is measured: interval 0.25, timeout 0.5, fall 2
    async with watching(
        settings, {"crash": parse_check(gw.url), "hang": parse_check(hung.url)}
    ) as (_w, rec):
        await async_wait_until(lambda: rec.up("crash") and rec.up("hang"), timeout=3.0, what="up")
        t0 = time.monotonic()
        await gw.crash()
        hung.paused = True
        await async_wait_until(
            lambda: not rec.up("crash") and not rec.up("hang"), timeout=3.0, what="down"
        )
        crash_t, hang_t = rec.down_since("crash", t0), rec.down_since("hang", t0)
        print(f"watch: crash seen after {crash_t:.3f}s, hang after {hang_t:.3f}s")
        assert crash_t is not None and crash_t < scaled(0.15)
        # silence past timeout (0.5) then one more interval: 0.75 s after the last tick,
        # at most ~1 s
        assert hang_t is not None and 0.45 < hang_t < scaled(1.1)
        hung.paused = False
        t1 = time.monotonic()
        await async_wait_until(lambda: rec.up("hang"), timeout=2.0, what="back up")
        assert time.monotonic() - t1 < scaled(0.8)  # rise = 2 ticks


async def test_a_bad_stream_is_a_failure_and_is_reopened(streams) -> None:  # type: ignore[no-untyped-def]
    s = await streams()
    settings = HealthSettings(interval=0.05)
    async with watching(settings, {"g": parse_check(s.url)}) as (_w, rec):
        await async_wait_until(lambda: rec.up("g"), timeout=2.0)
        s.garbage = True
        await async_wait_until(lambda: not rec.up("g"), timeout=2.0, what="down on garbage")
        assert any("bad status document" in r.detail for _, r in rec.calls["g"])
        s.garbage = False
        await async_wait_until(lambda: rec.up("g"), timeout=2.0, what="reopened")


async def test_plain_status_pages_fall_back_to_keep_alive_polling(status_server) -> None:  # type: ignore[no-untyped-def]
    plain = await status_server()  # answers every GET with one JSON document, ignores ?watch
    settings = HealthSettings(interval=0.05)
    rec = Recorder(settings)
    m = StatusMonitor(settings, rec)
    m.set_targets({"p": parse_check(plain.url)})
    await m.start()
    try:
        await async_wait_until(lambda: rec.up("p"), timeout=2.0)
        assert m.watcher.targets == frozenset() and m.poller.probing == {"p"} and m.probing == {"p"}
        await async_wait_until(lambda: plain.hits >= 6, timeout=2.0)
        raw = m.poller._raw
        assert raw is not None and len(raw._conns) == 1  # one kept-alive connection
        # a changed check gets a fresh chance to stream
        m.set_targets({"p": parse_check(plain.url + "?x=1")})
        assert m.watcher.targets == {"p"}
    finally:
        await m.close()


async def test_raw_prober_keeps_one_connection_and_reports_failures(
    status_server, refused_port
) -> None:  # type: ignore[no-untyped-def]
    plain = await status_server()
    prober = RawProber()
    spec = parse_check(plain.url)
    try:
        results = [await prober(spec, 1.0) for _ in range(5)]
        assert all(r.ok and r.connections == 12 for r in results)
        assert len(prober._conns) == 1
        plain.mode = "500"
        bad = await prober(spec, 1.0)
        assert not bad.ok and "HTTP 500" in bad.detail
        refused = await prober(parse_check(f"http://127.0.0.1:{refused_port}/status"), 1.0)
        assert not refused.ok and "Refused" in refused.detail
        tcp = await prober(parse_check(f"tcp://127.0.0.1:{plain.port}"), 1.0)
        assert tcp.ok
    finally:
        prober.close()


async def test_connects_go_out_in_waves(streams, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import tcpdispatch.health.watch as watch_mod

    monkeypatch.setattr(watch_mod, "MAX_CONNECTING", 2)
    servers = [await streams() for _ in range(6)]
    settings = HealthSettings(interval=0.05)
    w = StatusWatcher(settings, lambda g, r: None)
    w.set_targets({f"g{i}": parse_check(s.url) for i, s in enumerate(servers)})
    await w.start()
    most = 0
    try:
        deadline = time.monotonic() + scaled(3.0)
        while len(w.watching) < 6 and time.monotonic() < deadline:
            most = max(most, len(w._in_flight))
            await asyncio.sleep(0.001)
        assert len(w.watching) == 6
    finally:
        await w.close()
    assert 1 <= most <= 2
