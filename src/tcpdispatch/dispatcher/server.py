"""Dispatcher process lifecycle: one asyncio loop runs the HTTP server, the health checker
and signals.

The server is the composition root: it builds the pool, the store, the push
tracker, the rebalancer, the :class:`DispatchService` and the :class:`Router`,
each with its dependencies given at construction, and serves them with the
built-in HTTP server (``httpserver.py``, asyncio + httptools) in the current
loop, so health results, push heartbeats, SIGHUP reloads and requests all
touch the pool from one thread without locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from tcpdispatch.config import DispatcherConfig, load_config
from tcpdispatch.dispatcher.events import EventBus
from tcpdispatch.dispatcher.httpserver import HTTPServer
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.dispatcher.rebalancer import Rebalancer
from tcpdispatch.dispatcher.routes import Router
from tcpdispatch.dispatcher.service import DispatchService, Stats
from tcpdispatch.errors import ConfigError
from tcpdispatch.health import CheckSpec, ProbeResult, PushTracker, StatusMonitor, status_to_result
from tcpdispatch.store import SharedGateway, StoreHooks, make_store

log = logging.getLogger("tcpdispatch.dispatcher")


class DispatcherServer:
    """Owns the pool, service, router, health checker, push TTL loop and the HTTP server."""

    def __init__(
        self,
        config: DispatcherConfig,
        *,
        config_path: Path | None = None,
        listen: tuple[str, int] | None = None,
    ) -> None:
        if listen is not None:
            config = replace(config, listen_host=listen[0], listen_port=listen[1])
        self.config = config
        self.config_path = config_path
        self.listen = (config.listen_host, config.listen_port)
        self.checker: StatusMonitor | None = None
        self.events = EventBus()  # what the dashboard's /v1/events stream carries
        self.store = make_store(config.store)
        self.pool = Pool(
            config, on_targets=self._set_targets, shared=self.store.shared, events=self.events
        )
        self.tracker = PushTracker(config.health.ttl)
        self.stats = Stats()
        self.rebalancer = Rebalancer(
            config.rebalance, self.pool, self.stats, self.store, events=self.events
        )
        self.service = DispatchService(
            config, self.pool, stats=self.stats, rebalance=self.rebalancer
        )
        self.router = Router(
            config,
            self.pool,
            self.service,
            store=self.store,
            tracker=self.tracker,
            rebalance=self.rebalancer,
            reload=self.reload if config_path else None,
            on_passive=self._on_passive,
        )
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[tuple[bool, str]]] = set()
        self._reload_lock = asyncio.Lock()  # SIGHUP and POST /v1/reload must not interleave

    # ------------------------------------------------------------ wiring

    def _set_targets(self, targets: dict[str, CheckSpec]) -> None:
        if self.checker is not None:
            self.checker.set_targets(targets)

    def _on_probe(self, gateway_id: str, result: ProbeResult) -> None:
        self.stats.observe_probe(bool(result.ok), result.latency_s)
        self.pool.on_result(gateway_id, result)

    def _on_passive(self, gateway_id: str) -> None:
        if self.checker is not None:
            self.checker.check_now(gateway_id)

    def _store_hooks(self) -> StoreHooks:
        return StoreHooks(
            snapshot=self.pool.shared_state,
            apply=self._apply_shared,
            heartbeat=self._relayed_heartbeat,
            push_ids=lambda: [g.id for g in self.pool.gateways.values() if g.push],
        )

    def _apply_shared(self, entries: Mapping[str, SharedGateway], initial: bool) -> None:
        before = set(self.pool.gateways)
        self.pool.sync(entries, initial=initial)
        for gid in before - set(self.pool.gateways):
            self.tracker.forget(gid)

    def _relayed_heartbeat(self, gateway_id: str, doc: Mapping[str, Any]) -> None:
        """A heartbeat another replica received: treat it as if it had come here."""
        gw = self.pool.get(gateway_id)
        if gw is None or not gw.push:
            return  # not (yet) in our pool: the next resync brings it, the next heartbeat counts
        try:
            result = status_to_result(doc)
        except ValueError:
            return
        self.tracker.record(gateway_id)
        self.pool.on_result(gateway_id, result)

    async def _start_checker(self) -> None:
        """Start a checker for the current settings, swap it in, then close the old one.

        The swap happens before the only await on the old checker, so admin
        changes arriving meanwhile reach the new one (set_targets on a closed
        checker is a no-op anyway).
        """
        checker = StatusMonitor(self.config.health, self._on_probe)
        _descriptor_headroom(len(self.pool.targets()))
        checker.set_targets(self.pool.targets())
        await checker.start()
        old, self.checker = self.checker, checker
        checker.set_targets(self.pool.targets())  # membership may have changed during start()
        if old is not None:
            await old.close()

    async def _push_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.tracker.ttl / 8))
            for gid in self.tracker.expired():
                gw = self.pool.get(gid)
                if gw is None or not gw.push:
                    self.tracker.forget(gid)
                    continue
                self.pool.push_expired(gid)

    # ------------------------------------------------------------ reload

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config file; on any error keep serving with the current config.

        Reloads are serialized: a SIGHUP during a POST /v1/reload waits for it.
        """
        async with self._reload_lock:
            return await self._reload()

    async def _reload(self) -> tuple[bool, str]:
        assert self.config_path is not None
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, still serving the previous config: %s", exc)
            self.events.publish(
                "reload", f"reload refused, still serving the previous config: {exc}", ok=False
            )
            return False, str(exc)
        if (new.listen_host, new.listen_port) != self.listen:
            log.warning(
                "reload: listen address changes need a restart; keeping %s:%s", *self.listen
            )
        new = replace(new, listen_host=self.listen[0], listen_port=self.listen[1])
        old = self.config
        if new.store != old.store:
            log.warning("reload: [store] changes need a restart; keeping the current store")
            new = replace(new, store=old.store)
        self.config = new
        self.service.configure(new)
        self.router.configure(new)
        self.pool.apply_config(new)
        self.rebalancer.configure(new.rebalance)
        if new.health != old.health:
            await self._start_checker()
            if new.health.ttl != old.health.ttl:
                # grace: one full ttl under the new setting for every push gateway
                self.tracker.restart(
                    new.health.ttl, [gw.id for gw in self.pool.gateways.values() if gw.push]
                )
        self.pool.rebuild()
        detail = (
            f"{len(new.gateways)} gateways in file, "
            f"{len(self.pool.gateways)} in pool, policy {new.policy}"
        )
        log.info("reloaded %s: %s", self.config_path, detail)
        self.events.publish("reload", f"reloaded {self.config_path.name}: {detail}", ok=True)
        return True, detail

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ run

    async def serve(self, *, ready: bool = True) -> None:
        """Serve until SIGTERM/SIGINT (or :meth:`stop`)."""
        loop = asyncio.get_running_loop()
        for sig, fn in (
            (signal.SIGTERM, self.stop),
            (signal.SIGINT, self.stop),
            (signal.SIGHUP, self._on_sighup),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, fn)
        await self.store.start(self._store_hooks())
        await self._start_checker()
        push_task = loop.create_task(self._push_loop())
        await self.rebalancer.start()
        try:
            await self._serve_http(ready)
        finally:
            push_task.cancel()
            await self.rebalancer.close()
            if self.checker is not None:
                await self.checker.close()
            await self.store.close()
            self.pool.close()

    def _ready(self, ready: bool) -> None:
        # Everything allocated so far (modules, config, pool) lives for the whole process:
        # move it out of the collector's reach so full collections stay cheap under load.
        gc.collect()
        gc.freeze()
        self.service.announce_hot_path()
        if ready:
            host, port = self.listen
            print(f"READY http://{host}:{port}", flush=True)

    async def _serve_http(self, ready: bool) -> None:
        """The built-in asyncio + httptools server: dispatches answered inline, the rest routed."""
        host, port = self.listen
        cfg = self.config
        http = HTTPServer(
            self.service.dispatch_bytes,
            self.router.handle,
            host,
            port,
            max_body=cfg.max_body,
            header_timeout=cfg.header_timeout,
            body_timeout=cfg.body_timeout,
            reuse_port=cfg.reuse_port,
            raw=self.service.fast_request,
            on_date=self.service.set_date,
        )
        try:
            await http.start()
        except OSError as exc:
            raise RuntimeError(f"HTTP server failed to start on {host}:{port}: {exc}") from None
        try:
            self._ready(ready)
            await self._stop.wait()
        finally:
            await http.close()

    def stop(self) -> None:
        self._stop.set()


def _descriptor_headroom(checked: int) -> None:
    """Raise the descriptor limit to its hard cap; warn when health checks would take half of it.

    Each watched (or keep-alive polled) gateway holds one connection; client
    connections share what is left (docs/health.md, "Descriptors").
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if checked > soft // 2:
        log.warning(
            "%d gateways are checked over long-lived connections, more than half of the %d "
            "file descriptors this process may open; the rest is left for clients "
            "(raise the limit or split the pool, see docs/health.md)",
            checked,
            soft,
        )


def main(config_path: Path, listen: tuple[str, int] | None) -> int:
    from tcpdispatch.aio import run

    config = load_config(config_path)
    server = DispatcherServer(config, config_path=config_path, listen=listen)

    async def go() -> None:
        await server.serve()

    try:
        run(go())
    except RuntimeError as exc:
        print(f"tcpdispatch dispatcher: {exc}", file=sys.stderr)
        return 1
    return 0
