"""Async active health checking: one probing task per gateway."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tcpdispatch.health.probes import ProbeResult
from tcpdispatch.health.rawprobe import RawProber
from tcpdispatch.health.settings import CheckSpec, HealthSettings

log = logging.getLogger("tcpdispatch.health")

# (spec, timeout, session) -> result; ``session`` is always None (kept for older probers).
Prober = Callable[[CheckSpec, float, Any], Awaitable[ProbeResult]]


class HealthChecker:
    """Probes every non-push target on its own task and reports each result.

    Each gateway's loop starts at a random phase within one interval (so probes of
    many gateways, and of several dispatcher replicas, spread out), then starts a probe
    every ``interval`` +- ``jitter`` measured start to start. Probes of one gateway
    never overlap: when a probe outlasts the interval (a hung gateway), the next one
    starts as soon as it ends. ``on_result(gateway_id, result)`` is called from the
    event loop after every probe; exceptions it raises are logged and ignored.

    The default prober (:class:`~tcpdispatch.health.rawprobe.RawProber`) keeps one
    idle HTTP connection per gateway, so a healthy gateway is probed over one
    kept-alive connection. (The dispatcher polls only what it cannot watch; see
    :mod:`tcpdispatch.health.watch`.)
    """

    def __init__(
        self,
        settings: HealthSettings,
        on_result: Callable[[str, ProbeResult], None],
        *,
        rng: random.Random | None = None,
        prober: Prober | None = None,
    ) -> None:
        self.settings = settings
        self._on_result = on_result
        self._rng = rng or random.Random()
        self._raw = RawProber() if prober is None else None
        self._prober: Prober = prober or self._raw  # type: ignore[assignment]
        self._targets: dict[str, CheckSpec] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._specs: dict[str, CheckSpec] = {}  # spec each running task probes
        self._wake: dict[str, asyncio.Event] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False

    @property
    def probing(self) -> frozenset[str]:
        """Ids of the gateways currently being probed."""
        return frozenset(self._tasks)

    def set_targets(self, targets: Mapping[str, CheckSpec]) -> None:
        """Replace the target set: start loops for new ids, stop removed ones, restart changed ones.

        Push targets are accepted but not probed. Before :meth:`start` the targets are
        only remembered.
        """
        if self._closed:
            return  # replaced and closed during a reload: the new checker has the targets
        self._targets = dict(targets)
        if not self._started:
            return
        wanted = {gid: spec for gid, spec in self._targets.items() if spec.kind != "push"}
        for gid in list(self._tasks):
            if wanted.get(gid) != self._specs[gid]:
                self._stop(gid)
        for gid, spec in wanted.items():
            if gid not in self._tasks:
                self._launch(gid, spec)

    def check_now(self, gateway_id: str) -> None:
        """Probe ``gateway_id`` soon (e.g. after a client reported it unreachable).

        Wakes its loop early, but never starts a probe within ``interval / 4`` of the
        previous start nor overlapping it, so repeated calls cannot flood the gateway.
        """
        event = self._wake.get(gateway_id)
        if event is not None:
            event.set()

    async def start(self) -> None:
        """Start probing the current targets."""
        if self._closed:
            raise RuntimeError("HealthChecker is closed")
        if self._started:
            return
        self._started = True
        self.set_targets(self._targets)

    async def close(self) -> None:
        """Cancel every probing task, wait for them, and close the kept-alive connections."""
        self._closed = True
        for gid in list(self._tasks):
            self._stop(gid)
        stopping = list(self._stopping)
        if stopping:
            await asyncio.gather(*stopping, return_exceptions=True)
        if self._raw is not None:
            self._raw.close()

    def _launch(self, gid: str, spec: CheckSpec) -> None:
        wake = asyncio.Event()
        task = asyncio.get_running_loop().create_task(
            self._run(gid, spec, wake), name=f"health:{gid}"
        )
        self._tasks[gid] = task
        self._specs[gid] = spec
        self._wake[gid] = wake

    def _stop(self, gid: str) -> None:
        task = self._tasks.pop(gid)
        del self._specs[gid]
        del self._wake[gid]
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _next_interval(self) -> float:
        s = self.settings
        return s.interval * (1 + self._rng.uniform(-s.jitter, s.jitter))

    async def _run(self, gid: str, spec: CheckSpec, wake: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        min_gap = s.interval / 4
        await _wait(wake, self._rng.uniform(0, s.interval))
        while True:
            started = loop.time()
            try:
                result = await self._prober(spec, s.timeout, None)
            except Exception as exc:
                log.exception("health probe of %s (%s) crashed", gid, spec)
                result = ProbeResult(
                    ok=False, latency_s=loop.time() - started, detail=f"probe crashed: {exc!r}"
                )
            try:
                self._on_result(gid, result)
            except Exception:
                log.exception("health on_result callback failed for %s", gid)
            elapsed = loop.time() - started
            woken = await _wait(wake, self._next_interval() - elapsed)
            if woken:
                # An early wake-up still keeps a minimum spacing between probe starts.
                await asyncio.sleep(max(0.0, min_gap - (loop.time() - started)))


async def _wait(event: asyncio.Event, delay: float) -> bool:
    """Sleep ``delay`` seconds or until ``event`` is set; True if woken early. Clears the event."""
    try:
        if delay <= 0:
            await asyncio.sleep(0)
            return False
        try:
            async with asyncio.timeout(delay):
                await event.wait()
            return True
        except TimeoutError:
            return False
    finally:
        event.clear()
