"""Load generator worker: holds many SDK clients in one process and reports on them.

:func:`run_worker` is what one loadgen process runs; the CLI
(:mod:`tcpdispatch.client.loadgen_cli`) forks several and merges their reports
with :func:`merge`. Reports are plain dicts (they cross a process boundary).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tcpdispatch.client.client import Client, ClientEvent, EventKind
from tcpdispatch.client.policy import BackoffConfig
from tcpdispatch.stats import percentile

Report = dict[str, Any]


@dataclass(frozen=True)
class WorkerConfig:
    index: int
    clients: int
    dispatchers: Sequence[str]
    fallback: Sequence[str] = ()
    rate: float = 500.0  # connects per second started by this worker
    duration: float = 30.0
    local_host: str | None = None
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    dispatch_timeout: float = 2.0
    handshake_timeout: float = 5.0
    heartbeat: float | None = None
    progress_interval: float = 0.5
    http_connections: int = 100  # pooled keep-alive connections to the dispatchers
    seed: int | None = None
    encryption: str = "auto"
    pinned_keys: dict[str, str] = field(default_factory=dict)
    ca_file: str | None = None
    message_interval: float | None = (
        None  # each client sends a message this often (jittered), checks the echo
    )
    echo_timeout: float = 10.0  # a message not echoed within this long counts as lost


class _Tracker:
    """Follows one client's events; the worker aggregates trackers."""

    __slots__ = (
        "connected",
        "echoed",
        "first_connect",
        "gateway",
        "lost_at",
        "sent",
        "started",
        "ttr",
    )

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_connect: float | None = None  # seconds from start to first WELCOME
        self.gateway: str | None = None
        self.lost_at: float | None = None  # wall time of the last loss still unrepaired
        self.ttr: list[tuple[float, float]] = []  # (lost_at, back_at) wall times
        self.connected = False
        self.sent = self.echoed = 0  # messages (with message_interval)

    def __call__(self, ev: ClientEvent) -> None:
        now = time.time()
        if ev.kind is EventKind.CONNECTED:
            if self.first_connect is None:
                self.first_connect = now - self.started
            if self.lost_at is not None:
                self.ttr.append((self.lost_at, now))
                self.lost_at = None
            self.gateway = ev.gateway
            self.connected = True
        elif ev.kind is EventKind.DISCONNECTED:
            self.connected = False
            self.gateway = None
            if self.lost_at is None:
                self.lost_at = now
        elif (
            ev.kind is EventKind.RECONNECTING
            and ev.reason.startswith("reconnect")
            and self.lost_at is None
        ):
            self.lost_at = now  # RECONNECT frame: the move starts now (still connected meanwhile)


async def run_worker(
    cfg: WorkerConfig,
    emit: Callable[[Report], None],
    stop: asyncio.Event | None = None,
) -> Report:
    """Start ``cfg.clients`` clients at ``cfg.rate``/s, hold them ``cfg.duration`` s, report.

    Setting ``stop`` ends the run early (still with a final report).
    """
    stop = stop or asyncio.Event()
    t0 = time.time()
    end = time.monotonic() + cfg.duration
    rng = random.Random(cfg.seed)
    ssl_ctx: Any = True
    if cfg.ca_file is not None:
        import ssl

        ssl_ctx = ssl.create_default_context(cafile=cfg.ca_file)
    connector = aiohttp.TCPConnector(
        limit=cfg.http_connections,
        ssl=ssl_ctx,
        local_addr=(cfg.local_host, 0) if cfg.local_host else None,
    )
    http = aiohttp.ClientSession(connector=connector)
    clients: list[Client] = []
    trackers: list[_Tracker] = []

    def snapshot(final: bool) -> Report:
        gateways = Counter(t.gateway for t in trackers if t.connected and t.gateway)
        errors: Counter[str] = Counter()
        dispatch_errors: Counter[str] = Counter()
        reconnects = failed_rounds = dispatches = 0
        seconds: dict[str, float] = {"dispatch": 0.0, "handshake": 0.0, "waited": 0.0}
        for c in clients:
            seconds["dispatch"] += c.stats.dispatch_seconds
            seconds["handshake"] += c.stats.handshake_seconds
            seconds["waited"] += c.stats.waited_seconds
            errors.update(c.stats.attempt_errors)
            dispatch_errors.update(c.stats.dispatch_errors)
            reconnects += c.stats.reconnects
            failed_rounds += c.stats.failed_rounds
            dispatches += c.stats.dispatch_requests
        rep: Report = {
            "type": "final" if final else "progress",
            "worker": cfg.index,
            "target": cfg.clients,
            "started": len(clients),
            "connected": sum(gateways.values()),
            "gateways": dict(gateways),
            "reconnects": reconnects,
            "failed_rounds": failed_rounds,
            "dispatch_requests": dispatches,
            "errors": dict(errors),
            "dispatch_errors": dict(dispatch_errors),
            "seconds": dict(seconds),
            "elapsed": time.time() - t0,
            "ever_connected": sum(1 for t in trackers if t.first_connect is not None),
            "messages_sent": sum(t.sent for t in trackers),
            "messages_echoed": sum(t.echoed for t in trackers),
        }
        if final:
            rep["connect_latencies"] = [
                t.first_connect for t in trackers if t.first_connect is not None
            ]
            rep["ttr"] = [pair for t in trackers for pair in t.ttr]
            rep["unrepaired_since"] = [t.lost_at for t in trackers if t.lost_at is not None]
        return rep

    async def progress() -> None:
        while True:
            await asyncio.sleep(cfg.progress_interval)
            emit(snapshot(False))

    reporter = asyncio.get_running_loop().create_task(progress())
    quiet = asyncio.Event()  # set at the end: talkers send nothing new, await their last echo
    talkers: list[asyncio.Task[None]] = []
    try:
        interval = 1.0 / cfg.rate if cfg.rate > 0 else 0.0
        next_start = time.monotonic()
        for i in range(cfg.clients):
            if time.monotonic() >= end or stop.is_set():
                break
            tracker = _Tracker(time.time())
            client = Client(
                cfg.dispatchers,
                cfg.fallback,
                client_id=f"lg{cfg.index}-{i}",
                backoff=cfg.backoff,
                dispatch_timeout=cfg.dispatch_timeout,
                handshake_timeout=cfg.handshake_timeout,
                heartbeat=cfg.heartbeat,
                local_host=cfg.local_host,
                http=http,
                rng=random.Random(rng.getrandbits(64)),
                report_failures=True,
                encryption=cfg.encryption,
                pinned_keys=cfg.pinned_keys,
            )
            client.add_listener(tracker)
            clients.append(client)
            trackers.append(tracker)
            asyncio.get_running_loop().create_task(_start(client))
            if cfg.message_interval:
                talkers.append(
                    asyncio.get_running_loop().create_task(
                        _talk(
                            client,
                            tracker,
                            cfg.message_interval,
                            cfg.echo_timeout,
                            random.Random(rng.getrandbits(64)),
                            quiet,
                        )
                    )
                )
            next_start += interval
            delay = next_start - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif i % 50 == 49:
                await asyncio.sleep(0)  # behind schedule: still let the loop breathe
        remaining = end - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), remaining)
    finally:
        quiet.set()
        if talkers:
            await asyncio.wait(talkers, timeout=cfg.echo_timeout + 1)
            for t in talkers:
                t.cancel()
        reporter.cancel()
        final = snapshot(True)
        # Close in batches so 10,000 BYEs do not starve the loop.
        for i in range(0, len(clients), 500):
            await asyncio.gather(*(c.close() for c in clients[i : i + 500]), return_exceptions=True)
        await http.close()
    emit(final)
    return final


async def _start(client: Client) -> None:
    # Closed before connecting raises ClientClosed; the tracker counts it as never connected.
    with contextlib.suppress(Exception):
        await client.connect()


async def _talk(
    client: Client,
    tracker: _Tracker,
    interval: float,
    timeout: float,
    rng: random.Random,
    quiet: asyncio.Event,
) -> None:
    """Send a numbered message every ``interval`` (jittered) and wait for its echo."""
    seq = 0
    with contextlib.suppress(Exception):
        while not quiet.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(quiet.wait(), interval * (0.5 + rng.random()))
            if quiet.is_set() or tracker.first_connect is None:
                continue
            payload = f"{client.client_id}:{seq}".encode()
            seq += 1
            await client.send(payload)
            tracker.sent += 1
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                try:
                    got = await asyncio.wait_for(client.receive(), left)
                except TimeoutError:
                    break
                if got == payload:
                    tracker.echoed += 1
                    break


def merge(reports: Sequence[Report]) -> Report:
    """Combine per-worker final reports into the loadgen summary."""
    gateways: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    dispatch_errors: Counter[str] = Counter()
    latencies: list[float] = []
    ttr: list[tuple[float, float]] = []
    unrepaired: list[float] = []
    totals: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for r in reports:
        seconds.update(r.get("seconds", {}))
        gateways.update(r.get("gateways", {}))
        errors.update(r.get("errors", {}))
        dispatch_errors.update(r.get("dispatch_errors", {}))
        latencies += r.get("connect_latencies", [])
        ttr += [tuple(p) for p in r.get("ttr", [])]  # type: ignore[misc]
        unrepaired += r.get("unrepaired_since", [])
        for key in (
            "target",
            "started",
            "connected",
            "ever_connected",
            "reconnects",
            "failed_rounds",
            "dispatch_requests",
            "messages_sent",
            "messages_echoed",
        ):
            totals[key] += r.get(key, 0)
    latencies.sort()
    ttr_s = sorted(b - a for a, b in ttr)

    def summary(values: list[float]) -> dict[str, float | None]:
        return {f"p{q}": _r(percentile(values, q)) for q in (50, 90, 99)} | {
            "max": _r(max(values, default=None))
        }

    return {
        "clients": totals["target"],
        "started": totals["started"],
        "connected": totals["connected"],
        "ever_connected": totals["ever_connected"],
        "reconnects": totals["reconnects"],
        "failed_rounds": totals["failed_rounds"],
        "dispatch_requests": totals["dispatch_requests"],
        "errors": dict(errors),
        "dispatch_errors": dict(dispatch_errors),
        "gateways": dict(sorted(gateways.items())),
        "connect_latency_s": summary(latencies),
        "time_to_reconnect_s": {"count": len(ttr_s), **summary(ttr_s)},
        "last_reconnect_at": max((b for _, b in ttr), default=None),
        "reconnect_pairs": [[round(a, 4), round(b, 4)] for a, b in ttr],
        "unrepaired": len(unrepaired),
        "workers": len(reports),
        "messages_sent": totals["messages_sent"],
        "messages_echoed": totals["messages_echoed"],
        # Mean seconds per dispatcher request / per successful handshake / per client in backoff.
        "mean_dispatch_s": _r(seconds["dispatch"] / max(totals["dispatch_requests"], 1)),
        "mean_handshake_s": _r(
            seconds["handshake"] / max(totals["ever_connected"] + totals["reconnects"], 1)
        ),
        "mean_waited_s": _r(seconds["waited"] / max(totals["target"], 1)),
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)
