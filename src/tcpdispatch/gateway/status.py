"""How a gateway node shows its state: HTTP /status and /metrics, POST /drain, the
HAProxy agent-check port and optional push heartbeats.

State-changing endpoints go through :func:`admin_refusal` (403 until an admin token is
configured, 401 without the right one). Every status connection has a total deadline
for its request head (:mod:`tcpdispatch.gateway.http_deadline`); the agent port
answers at once and closes, reading nothing.

It runs in the process that owns the node (the only process with one worker,
the supervisor with several) and reads node totals from :class:`NodeCounters`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from tcpdispatch import __version__
from tcpdispatch.gateway.config import GatewayConfig
from tcpdispatch.gateway.http_deadline import HeadDeadlines
from tcpdispatch.gateway.shed_api import ShedFn, post_shed
from tcpdispatch.gateway.shm import NodeCounters, Snapshot
from tcpdispatch.gateway.watch import WatchStreams
from tcpdispatch.httputil import check_bearer, error_body
from tcpdispatch.metrics_common import add_process_collector, build_info

log = logging.getLogger("tcpdispatch.gateway.status")


class CpuSampler:
    """CPU utilization of the gateway's processes, as a share (0..1) of all the node's cores."""

    def __init__(
        self, pids: Callable[[], Iterable[int]], clock: Callable[[], float] = time.monotonic
    ):
        import psutil

        self._psutil = psutil
        self._pids = pids
        self._clock = clock
        self._cores = psutil.cpu_count() or 1
        self._procs: dict[int, Any] = {}
        self._last: tuple[float, float] | None = None
        self.value = 0.0

    def _cpu_seconds(self) -> float:
        total = 0.0
        live = {}
        for pid in self._pids():
            proc = self._procs.get(pid)
            try:
                proc = proc or self._psutil.Process(pid)
                t = proc.cpu_times()
            except self._psutil.Error:
                continue
            live[pid] = proc
            total += t.user + t.system
        self._procs = live
        return total

    def sample(self) -> float:
        now, cpu = self._clock(), self._cpu_seconds()
        if self._last is not None and now > self._last[0]:
            share = (cpu - self._last[1]) / ((now - self._last[0]) * self._cores)
            self.value = round(min(1.0, max(0.0, share)), 4)
        self._last = (now, cpu)
        return self.value


def agent_line(snap: Snapshot, capacity: int) -> bytes:
    """One HAProxy agent-check reply: ``drain`` or ``up <remaining%> maxconn:<remaining>``."""
    if snap.draining:
        return b"drain\n"
    remaining = max(0, capacity - snap.connections)
    return f"up {remaining * 100 // capacity}% maxconn:{remaining}\n".encode()


def admin_refusal(request: web.Request, token: str | None, action: str) -> web.Response | None:
    """None when ``request`` may perform the state-changing ``action``, else the answer refusing it.

    Secure by default: with no admin token configured every such request gets 403 with a body
    saying how to enable it; with one, a missing or wrong ``Authorization: Bearer`` gets 401.
    """
    if token is None:
        return web.Response(
            body=error_body(
                "admin_token_not_configured",
                f"{action} is disabled: start the gateway with --admin-token-file FILE (create "
                "FILE with `tcpdispatch secret FILE`) and send 'Authorization: Bearer <token>'; "
                "SIGTERM drains without a token",
            ),
            status=403,
            content_type="application/json",
        )
    if not check_bearer(request.headers.get("Authorization"), token):
        return web.Response(
            body=error_body(
                "unauthorized",
                f"{action} needs 'Authorization: Bearer <token>' "
                "with the token of --admin-token-file",
            ),
            status=401,
            content_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None


class _Collector:
    def __init__(self, service: StatusService) -> None:
        self._service = service

    def collect(self) -> Iterable[Any]:
        s = self._service
        snap = s.counters.snapshot()
        cfg = s.cfg
        labels = ["gateway"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(f"tcpdispatch_gateway_{name}", doc, labels=labels)
            g.add_metric([cfg.id], value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(f"tcpdispatch_gateway_{name}", doc, labels=labels)
            c.add_metric([cfg.id], value)
            return c

        yield gauge("connections", "Open connections on the node (all workers).", snap.connections)
        yield gauge("capacity", "Maximum connections on the node.", cfg.capacity)
        yield gauge("draining", "1 while the node drains.", 1 if snap.draining else 0)
        yield gauge("workers", "Worker processes listening now.", snap.workers_live)
        yield gauge("workers_configured", "Worker processes asked for (--workers).", cfg.workers)
        yield counter(
            "worker_restarts",
            "Workers restarted after dying (signal or unexpected exit).",
            snap.worker_restarts,
        )
        yield gauge(
            "cpu_utilization", "Gateway CPU use as a share of all cores (0..1).", s.cpu.value
        )
        yield gauge(
            "uptime_seconds", "Seconds since the node started.", time.time() - snap.started_at
        )
        yield counter("accepted", "Sessions opened (WELCOME sent).", snap.accepted)
        yield counter("messages_received", "DATA frames received.", snap.messages_in)
        yield counter("messages_sent", "DATA frames sent.", snap.messages_out)
        yield counter(
            "shed_sessions", "Sessions sent RECONNECT by shed orders (rebalancing).", snap.shed
        )
        yield gauge(
            "leaving_sessions",
            "Sessions chosen by shed orders that are still connected.",
            snap.leaving,
        )
        rej = CounterMetricFamily(
            "tcpdispatch_gateway_rejected",
            "Connections refused before WELCOME, by reason.",
            labels=["gateway", "reason"],
        )
        for slug, n in sorted(snap.rejected.items()):
            rej.add_metric([cfg.id, slug], n)
        yield rej
        err = CounterMetricFamily(
            "tcpdispatch_gateway_errors", "ERROR frames sent, by code.", labels=["gateway", "code"]
        )
        for slug, n in sorted(snap.errors.items()):
            err.add_metric([cfg.id, slug], n)
        yield err
        yield counter(
            "http_timeouts",
            "Status-port connections closed because a request head "
            "was not complete within --http-timeout.",
            s.deadlines.timeouts,
        )
        hs = CounterMetricFamily(
            "tcpdispatch_gateway_handshakes",
            "Connections started on an encrypted gateway, by kind (plain, full, resumed).",
            labels=["gateway", "kind"],
        )
        for kind, n in sorted(snap.handshakes.items()):
            hs.add_metric([cfg.id, kind], n)
        yield hs
        per = GaugeMetricFamily(
            "tcpdispatch_gateway_worker_connections",
            "Open connections per worker.",
            labels=["gateway", "worker"],
        )
        for w, n in enumerate(snap.worker_connections):
            per.add_metric([cfg.id, str(w)], n)
        yield per
        yield build_info()
        busy = GaugeMetricFamily(
            "tcpdispatch_gateway_worker_busy",
            "Share of the last window each worker's loop ran or waited to run (0..1 core).",
            labels=["gateway", "worker"],
        )
        lag = GaugeMetricFamily(
            "tcpdispatch_gateway_worker_loop_lag_seconds",
            "Longest timer lag of each worker's event loop in the last window.",
            labels=["gateway", "worker"],
        )
        for w, (b, x) in enumerate(zip(snap.worker_busy, snap.worker_lag)):
            busy.add_metric([cfg.id, str(w)], b)
            lag.add_metric([cfg.id, str(w)], x)
        yield busy
        yield lag


class StatusService:
    """The status HTTP server, the agent port and the heartbeat pusher of one node."""

    def __init__(
        self,
        cfg: GatewayConfig,
        counters: NodeCounters,
        *,
        on_drain: Callable[[], None],
        pids: Callable[[], Iterable[int]],
        on_shed: ShedFn | None = None,
    ) -> None:
        self.cfg = cfg
        self.counters = counters
        self._on_drain = on_drain
        self._on_shed = on_shed
        self.cpu = CpuSampler(pids)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(self))  # type: ignore[arg-type]
        add_process_collector(
            self._registry
        )  # this (status-serving) process: the supervisor with --workers
        self._runner: web.AppRunner | None = None
        self._http: asyncio.AbstractServer | None = None
        self.deadlines = HeadDeadlines(cfg.http_timeout)
        self._agent: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.watches = WatchStreams(self.status)

    def status(self) -> dict[str, Any]:
        snap = self.counters.snapshot()
        busy, lag = snap.worker_busy or (0.0,), snap.worker_lag or (0.0,)
        return {
            "id": self.cfg.id,
            "state": "draining" if snap.draining else "serving",
            "connections": snap.connections,
            "capacity": self.cfg.capacity,
            "address": self.cfg.address,
            "accepted": snap.accepted,
            "rejected": snap.rejected,
            "shed": snap.shed,
            "leaving": snap.leaving,
            "cpu": self.cpu.value,
            "uptime_s": round(time.time() - snap.started_at, 3),
            "workers": snap.workers_live,
            "workers_configured": self.cfg.workers,
            "worker_restarts": snap.worker_restarts,
            "version": __version__,
            "pid": os.getpid(),
            "worker_connections": list(snap.worker_connections),
            # Saturation is per worker (one event loop, one core): the busiest worker counts.
            "busy": round(max(busy), 2),
            "lag_ms": round(max(lag) * 1000),
            "worker_busy": [round(b, 3) for b in busy],
            "worker_lag_ms": [round(x * 1000, 1) for x in lag],
            **({"zone": self.cfg.zone} if self.cfg.zone else {}),
        }

    # -- HTTP ----------------------------------------------------------------
    async def _get_status(self, request: web.Request) -> web.StreamResponse:
        if "watch" in request.query:
            return await self.watches.handle(request)  # a dispatcher's long-lived watch
        return web.json_response(self.status())

    async def _get_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)  # type: ignore[arg-type]
        return web.Response(
            body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    async def _post_drain(self, request: web.Request) -> web.Response:
        refusal = admin_refusal(request, self.cfg.admin_token, "POST /drain")
        if refusal is not None:
            return refusal
        log.info("drain requested through POST /drain from %s", request.remote)
        self._on_drain()
        return web.json_response(
            {"state": "draining", "drain_window_s": self.cfg.drain_window}, status=202
        )

    async def _post_shed(self, request: web.Request) -> web.Response:
        if self._on_shed is None:
            return web.json_response(
                {"error": "not_supported", "detail": "this node cannot shed"}, status=501
            )
        return await post_shed(
            request,
            gateway_id=self.cfg.id,
            admin_token=self.cfg.admin_token,
            draining=self.counters.draining,
            shed=self._on_shed,
        )

    # -- agent ---------------------------------------------------------------
    async def _agent_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            writer.write(agent_line(self.counters.snapshot(), self.cfg.capacity))
            await asyncio.wait_for(writer.drain(), self.cfg.http_timeout)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        """Bind the status (and agent) ports; raises OSError when a port is taken."""
        app = web.Application(middlewares=[self.deadlines.middleware])
        app.router.add_get("/status", self._get_status)
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_post("/drain", self._post_drain)
        app.router.add_post("/shed", self._post_shed)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        host, port = self.cfg.status
        # Our own listener (not web.TCPSite) so every connection gets the head deadline.
        server = self._runner.server
        assert server is not None  # set by setup()
        self._http = await loop.create_server(
            self.deadlines.factory(server), host, port, reuse_address=True
        )
        if self.cfg.agent is not None:
            self._agent = await asyncio.start_server(self._agent_client, *self.cfg.agent)
        if self.cfg.admin_token is None:
            log.info(
                "POST /drain on the status port is disabled (answers 403): no --admin-token-file; "
                "SIGTERM drains"
            )
        self.cpu.sample()
        self._tasks.append(loop.create_task(self._sample_loop()))
        if self.cfg.report_to:
            self._tasks.append(loop.create_task(self._report_loop()))

    async def stop(self) -> None:
        self.watches.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._agent is not None:
            self._agent.close()
        if self._http is not None:
            self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.cpu.sample()

    async def _report_loop(self) -> None:
        """Push /status to the dispatcher; a failure is logged once until it recovers."""
        url = f"{self.cfg.report_to}/v1/heartbeat"
        headers = {
            "Authorization": f"Bearer {self.cfg.report_token}",
            "Content-Type": "application/json",
        }
        failing = False
        timeout = ClientTimeout(total=max(0.5, min(5.0, self.cfg.report_interval * 2)))
        async with ClientSession(timeout=timeout) as http:
            while True:
                try:
                    async with http.post(
                        url, data=json.dumps(self.status()), headers=headers
                    ) as resp:
                        ok = resp.status < 300
                        problem = f"HTTP {resp.status}"
                except Exception as exc:  # noqa: BLE001 - never disturb serving
                    ok, problem = False, repr(exc)
                if not ok and not failing:
                    log.warning(
                        "heartbeat to %s failing: %s (logged once until it recovers)", url, problem
                    )
                elif ok and failing:
                    log.info("heartbeat to %s recovered", url)
                failing = not ok
                await asyncio.sleep(self.cfg.report_interval)
