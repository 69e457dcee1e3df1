"""The status watch, dispatcher side: one long-lived stream per gateway instead of a poll per probe.

For each ``http://`` check the dispatcher opens one connection and asks for
``GET PATH?watch=INTERVAL`` (see :mod:`tcpdispatch.gateway.watch` for the
gateway side). A tcpdispatch gateway answers with an open
``application/x-ndjson`` stream: the full status once, changes at once when
they matter, and a tick (an empty line, or the load fields that changed) every
interval. What the watcher makes of it, all fed to the same rise/fall
:class:`~tcpdispatch.health.state.HealthState` the pollers feed:

- every line is a success (a new document is parsed first);
- a stream that closes, or a connection refused, is a failure at once, and the
  watcher reconnects at once after a stream closes, so a crashed gateway (its
  stream closed, its port now refusing) reaches ``fall = 2`` within a
  millisecond or two;
- silence is a failure once it passes ``timeout`` (seen at two sweeps in a row, so
  ticks waiting unread behind a stall of our own loop are not mistaken for it),
  and another one every ``interval`` after that: a hung or partitioned gateway
  is out after about ``timeout + (fall - 1) * interval`` of silence (0.75 s at
  the defaults, plus up to two sweep steps).

Cost: a tick is one small read, no timer and no request per gateway; one sweep
walks all watches every ``interval / 4``. Once a gateway's state machine is
saturated (``rise`` successes reported since the last failure or change),
unchanged, on-time ticks of a gateway showing no load are not reported at all.

If the other side answers with a plain document (not a tcpdispatch gateway, or
an older one), that answer is reported as a poll result and ``on_fallback(id)``
tells the owner to poll that gateway instead (:class:`StatusMonitor` does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import httptools

from tcpdispatch.health.checker import HealthChecker, Prober
from tcpdispatch.health.probes import MAX_STATUS_BYTES, ProbeResult, status_to_result
from tcpdispatch.health.rawprobe import request_head
from tcpdispatch.health.settings import CheckSpec, HealthSettings

log = logging.getLogger("tcpdispatch.health")

NDJSON = "application/x-ndjson"
MAX_LINE = MAX_STATUS_BYTES
# Connects in flight at once: 10,000 gateways connecting in one burst time out on a busy host
# and retry forever; in waves they are all streaming within seconds.
MAX_CONNECTING = 256

OnResult = Callable[[str, ProbeResult], None]

# phases of one watch
_IDLE, _CONNECTING, _STREAMING, _DONE = range(4)


class _Watch:
    """Bookkeeping of one gateway's watch (owned by :class:`StatusWatcher`)."""

    __slots__ = (
        "buf",
        "doc",
        "force",
        "gid",
        "host",
        "last",
        "loaded",
        "misses",
        "phase",
        "port",
        "proto",
        "req",
        "result",
        "retry_at",
        "spec",
        "started",
        "streak",
        "suspect",
        "task",
    )

    def __init__(self, gid: str, spec: CheckSpec, interval: float) -> None:
        self.gid = gid
        self.spec = spec
        self.host, self.port, self.req = request_head(
            str(spec.url), query=f"watch={interval:g}", accept=f"{NDJSON}, application/json"
        )
        self.phase = _IDLE
        self.proto: _WatchProtocol | None = None
        self.task: asyncio.Task[None] | None = None
        self.retry_at = 0.0
        self.started = 0.0
        self.last = 0.0
        self.misses = 0
        self.suspect = False  # silent at the last sweep too (see StatusWatcher._sweep)
        self.streak = 0  # successes reported since the last failure or change
        self.force = False
        self.loaded = False  # the last document shows load at or over an overload exit threshold
        self.buf = b""
        self.doc: dict[str, Any] = {}
        self.result: ProbeResult | None = None


class _WatchProtocol(asyncio.Protocol):
    """The HTTP side of one watch: httptools parses the head; body bytes go to the watcher."""

    def __init__(self, owner: StatusWatcher, w: _Watch) -> None:
        self._owner = owner
        self._w = w
        self._parser = httptools.HttpResponseParser(self)
        self.transport: Any = None
        self.streaming = False
        self._ctype = ""
        self._body: list[bytes] = []
        self._size = 0
        self.gone = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self._ctype = value.decode("latin-1").lower()

    def on_headers_complete(self) -> None:
        if self._parser.get_status_code() == 200 and self._ctype.startswith(NDJSON):
            self.streaming = True
            self._owner._on_stream(self._w)

    def on_body(self, body: bytes) -> None:
        if self.streaming:
            self._owner._on_bytes(self._w, body)
            return
        self._size += len(body)
        if self._size > MAX_STATUS_BYTES:
            raise ValueError(f"status body over {MAX_STATUS_BYTES} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.streaming:
            self._owner._on_lost(self._w, self, "status stream ended")
        else:
            self._owner._on_plain(
                self._w, self, self._parser.get_status_code(), b"".join(self._body)
            )
        self.abort()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self._w.phase == _CONNECTING:
            self._w.proto = self  # before any data can arrive
        transport.write(self._w.req)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, ValueError) as exc:
            self._owner._on_lost(self._w, self, f"bad status stream: {exc}")
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self._owner._on_lost(
            self._w, self, "status stream closed" if exc is None else f"status stream lost: {exc}"
        )

    def abort(self) -> None:
        if self.transport is not None and not self.gone:
            self.transport.abort()


class StatusWatcher:
    """Watches ``http://`` checks; ``on_result(id, result)`` after every judged line or failure.

    ``on_fallback(id)`` is called once when a gateway answers with a plain
    document instead of a stream (it is no longer watched until its targets change).
    """

    def __init__(
        self,
        settings: HealthSettings,
        on_result: OnResult,
        on_fallback: Callable[[str], None] | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._on_result = on_result
        self._on_fallback = on_fallback
        self._rng = rng or random.Random()
        self._watches: dict[str, _Watch] = {}
        self._targets: dict[str, CheckSpec] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._connecting: set[asyncio.Task[None]] = set()
        self._in_flight: set[_Watch] = set()  # phase _CONNECTING: connect or response head pending
        self.step = max(0.01, settings.interval / 4)

    @property
    def watching(self) -> frozenset[str]:
        """Ids of the gateways whose status is currently streaming."""
        return frozenset(g for g, w in self._watches.items() if w.phase == _STREAMING)

    @property
    def targets(self) -> frozenset[str]:
        return frozenset(self._watches)

    def set_targets(self, targets: Mapping[str, CheckSpec]) -> None:
        """Watch exactly these (http) targets: new ones start, removed or changed ones stop."""
        if self._closed:
            return
        self._targets = dict(targets)
        if self._loop is None:
            return
        for gid in list(self._watches):
            if self._targets.get(gid) != self._watches[gid].spec:
                self._stop(gid)
        now = self._loop.time()
        for gid, spec in self._targets.items():
            if gid not in self._watches:
                w = _Watch(gid, spec, self.settings.interval)
                w.retry_at = now + self._rng.uniform(
                    0, self.settings.interval
                )  # spread the connects
                self._watches[gid] = w

    def check_now(self, gateway_id: str) -> None:
        """Report the next line even if nothing changed (a client said the gateway failed)."""
        w = self._watches.get(gateway_id)
        if w is not None:
            w.force = True
            w.streak = 0

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("StatusWatcher is closed")
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.set_targets(self._targets)
        self._timer = self._loop.call_later(self.step, self._sweep)

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for gid in list(self._watches):
            self._stop(gid)
        pending = list(self._connecting)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _stop(self, gid: str) -> None:
        w = self._watches.pop(gid)
        w.phase = _DONE
        self._in_flight.discard(w)
        if w.task is not None:
            w.task.cancel()
        if w.proto is not None:
            w.proto.abort()
            w.proto = None

    # ------------------------------------------------------------ sweep

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        s = self.settings
        now = loop.time()
        timeout, interval = s.timeout, s.interval
        try:
            for w in list(self._watches.values()):
                phase = w.phase
                if phase == _STREAMING:
                    if now - w.last > timeout + w.misses * interval:
                        if not w.suspect:
                            # Confirm at the next sweep: timers run before the loop polls
                            # sockets, so after a stall of our own loop the ticks may be
                            # waiting unread. One I/O poll later, silence is the gateway's.
                            w.suspect = True
                            continue
                        w.misses += 1
                        self._fail(w, f"no status for {now - w.last:.2f}s", reconnect=False)
                        if w.misses > s.fall + 1 and w.proto is not None:
                            # Long silent: the connection may be dead without a reset
                            # (a partition); try a fresh one each interval from now on.
                            proto, w.proto = w.proto, None
                            proto.abort()
                            w.phase, w.retry_at = _IDLE, now
                elif phase == _IDLE:
                    if now >= w.retry_at and len(self._in_flight) < MAX_CONNECTING:
                        self._connect(w, now)
                elif phase == _CONNECTING and now - w.started > timeout:
                    pending, w.proto = w.proto, None
                    if w.task is not None:
                        w.task.cancel()
                    if pending is not None:
                        pending.abort()
                    w.phase = _IDLE
                    self._in_flight.discard(w)
                    self._fail(w, f"timeout after {timeout:g}s")
        finally:
            if not self._closed:
                self._timer = loop.call_later(self.step, self._sweep)

    def _connect(self, w: _Watch, now: float) -> None:
        assert self._loop is not None
        w.phase, w.started, w.buf, w.doc = _CONNECTING, now, b"", {}
        self._in_flight.add(w)
        task = self._loop.create_task(self._open(w), name=f"health-watch:{w.gid}")
        w.task = task
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _open(self, w: _Watch) -> None:
        assert self._loop is not None
        try:
            _, proto = await self._loop.create_connection(
                lambda: _WatchProtocol(self, w), w.host, w.port
            )
        except OSError as exc:
            if w.phase == _CONNECTING:
                w.phase = _IDLE
                self._in_flight.discard(w)
                text = str(exc)
                self._fail(w, f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
            return
        finally:
            w.task = None
        if w.proto is not proto:  # stopped or timed out meanwhile
            proto.abort()

    # ------------------------------------------------------------ results

    def _next_retry(self) -> float:
        s = self.settings
        return s.interval * (1 + self._rng.uniform(-s.jitter, s.jitter))

    def _fail(self, w: _Watch, detail: str, *, reconnect: bool = True) -> None:
        w.streak = 0
        if reconnect and self._loop is not None:
            w.retry_at = self._loop.time() + self._next_retry()
        self._report(w.gid, ProbeResult(ok=False, detail=detail))

    def _report(self, gid: str, result: ProbeResult) -> None:
        try:
            self._on_result(gid, result)
        except Exception:
            log.exception("health on_result callback failed for %s", gid)

    def _on_stream(self, w: _Watch) -> None:
        assert self._loop is not None
        w.phase = _STREAMING
        self._in_flight.discard(w)
        w.last = self._loop.time()
        w.misses = 0
        w.suspect = False

    def _on_bytes(self, w: _Watch, data: bytes) -> None:
        now = self._loop.time()  # type: ignore[union-attr]
        late = now - w.last - self.settings.interval
        w.last = now
        w.suspect = False
        if data == b"\n" and not w.buf:  # the common case: a bare tick
            changed = False
        else:
            buf = w.buf + data
            *lines, w.buf = buf.split(b"\n")
            if len(w.buf) > MAX_LINE:
                self._bad(w, f"status line over {MAX_LINE} bytes")
                return
            changed = False
            for line in lines:
                if not line:
                    continue
                try:
                    delta = json.loads(line)
                    if not isinstance(delta, dict):
                        raise ValueError(  # noqa: TRY004 - a bad document, reported like the others
                            f"status line must be a JSON object, got {type(delta).__name__}"
                        )
                    w.doc.update(delta)
                    w.result = r = status_to_result(w.doc)
                    w.loaded = (r.busy or 0.0) >= self.settings.overload_busy_exit or (
                        r.lag_s or 0.0
                    ) >= self.settings.overload_lag_exit
                except ValueError as exc:
                    self._bad(w, f"bad status document: {exc}")
                    return
                changed = True
            if w.result is None:
                return  # nothing complete yet
        result = w.result
        if result is None:
            self._bad(w, "status stream ticked before sending a document")
            return
        interval = self.settings.interval
        slow = late > interval / 2
        # Ticks of a loaded gateway are judged too: overload needs consecutive samples.
        if changed or slow or w.force or w.misses or w.loaded or w.streak <= self.settings.rise:
            w.misses = 0
            w.force = False
            w.streak = 0 if changed else w.streak + 1
            if slow:
                result = replace(result, late_s=late)
            self._report(w.gid, result)

    def _bad(self, w: _Watch, detail: str) -> None:
        proto, w.proto = w.proto, None
        w.phase = _IDLE
        if proto is not None:
            proto.abort()
        self._fail(w, detail)

    def _on_lost(self, w: _Watch, proto: _WatchProtocol, detail: str) -> None:
        if w.proto is not proto and w.proto is not None:
            return  # an old connection
        was_streaming = w.phase == _STREAMING
        if w.phase in (_STREAMING, _CONNECTING):
            w.proto = None
            w.phase = _IDLE
            self._in_flight.discard(w)
            self._fail(w, detail)
            if was_streaming and self._loop is not None and not self._closed:
                self._connect(
                    w, self._loop.time()
                )  # confirm at once: a crashed gateway now refuses

    def _on_plain(self, w: _Watch, proto: _WatchProtocol, status: int, body: bytes) -> None:
        if w.phase != _CONNECTING:
            return
        w.proto = None
        w.phase = _DONE
        self._in_flight.discard(w)
        if status != 200:
            result = ProbeResult(ok=False, detail=f"HTTP {status} from {w.spec.url}")
        else:
            try:
                result = status_to_result(json.loads(body))
            except ValueError as exc:
                result = ProbeResult(ok=False, detail=f"bad status document: {exc}")
        log.info(
            "gateway %s: %s answers without a watch stream (not a tcpdispatch gateway, "
            "or an older one); polling it instead",
            w.gid,
            w.spec.url,
        )
        self._report(w.gid, result)
        if self._on_fallback is not None:
            self._on_fallback(w.gid)


class StatusMonitor:
    """The dispatcher's health checking: watch what streams, poll the rest.

    ``http://`` checks are watched (:class:`StatusWatcher`) unless ``[health] watch``
    is false; a gateway that turns out not to stream, and every ``agent://`` and
    ``tcp://`` check, is polled by a :class:`~tcpdispatch.health.checker.HealthChecker`
    over raw keep-alive connections. Same interface as ``HealthChecker``.
    """

    def __init__(
        self,
        settings: HealthSettings,
        on_result: OnResult,
        *,
        rng: random.Random | None = None,
        prober: Prober | None = None,
    ) -> None:
        self.settings = settings
        self._closed = False
        self._targets: dict[str, CheckSpec] = {}
        self._polled: set[str] = set()  # watch targets that fell back to polling
        self.watcher = StatusWatcher(settings, on_result, self._fallback, rng=rng)
        self.poller = HealthChecker(settings, on_result, rng=rng, prober=prober)

    @property
    def probing(self) -> frozenset[str]:
        """Ids of every gateway being checked (watched or polled)."""
        return self.watcher.targets | self.poller.probing

    def _watchable(self, gid: str, spec: CheckSpec) -> bool:
        return (
            self.settings.watch
            and spec.kind == "http"
            and gid not in self._polled
            and str(spec.url).lower().startswith("http://")
        )

    def set_targets(self, targets: Mapping[str, CheckSpec]) -> None:
        if self._closed:
            return  # replaced and closed during a reload: the new monitor has the targets
        old = self._targets
        self._targets = dict(targets)
        # A changed check gets a fresh chance to stream.
        self._polled = {g for g in self._polled if old.get(g) == self._targets.get(g)}
        self.watcher.set_targets({g: s for g, s in self._targets.items() if self._watchable(g, s)})
        self.poller.set_targets(
            {g: s for g, s in self._targets.items() if not self._watchable(g, s)}
        )

    def _fallback(self, gid: str) -> None:
        self._polled.add(gid)
        self.set_targets(self._targets)

    def check_now(self, gateway_id: str) -> None:
        self.watcher.check_now(gateway_id)
        self.poller.check_now(gateway_id)

    async def start(self) -> None:
        await self.watcher.start()
        await self.poller.start()

    async def close(self) -> None:
        self._closed = True
        await self.watcher.close()
        await self.poller.close()


__all__ = ["StatusMonitor", "StatusWatcher"]
