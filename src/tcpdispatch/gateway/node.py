"""Running a gateway node: one process, or a supervisor with ``--workers N`` forked workers.

With one worker everything (listener, status, agent) shares one process and
event loop. With several, the supervisor creates the shared counters, forks
the workers (each binds the listen port with SO_REUSEPORT, so the kernel
spreads accepted connections over them), waits until every worker is
listening, then serves status/metrics/agent with node totals. It forwards
SIGTERM (drain) and SIGINT (stop) to the workers and exits when they all
have. Workers are forked before the supervisor imports aiohttp, so they do not
carry it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import select
import signal
import sys
import time
from typing import Any

from tcpdispatch import aio
from tcpdispatch.errors import ConfigError
from tcpdispatch.gateway.config import GatewayConfig
from tcpdispatch.gateway.shm import NodeCounters

log = logging.getLogger("tcpdispatch.gateway")


def _ready_line(cfg: GatewayConfig) -> None:
    print(f"READY {cfg.listen[0]}:{cfg.listen[1]} status={cfg.status[0]}:{cfg.status[1]}", flush=True)


def _bind_error(exc: OSError, key: str, addr: tuple[str, int]) -> ConfigError:
    return ConfigError(f"cannot listen on {addr[0]}:{addr[1]}: {exc.strerror or exc}", key=key)


def run_node(cfg: GatewayConfig) -> int:
    """Run until drained or stopped; returns the exit code."""
    if cfg.workers == 1:
        return aio.run(_single(cfg))
    return _multi(cfg)


# -- one process -----------------------------------------------------------------
async def _start_status(cfg: GatewayConfig, counters: NodeCounters, on_drain: Any, pids: Any,
                        on_shed: Any = None) -> Any:
    from tcpdispatch.gateway.status import StatusService

    service = StatusService(cfg, counters, on_drain=on_drain, pids=pids, on_shed=on_shed)
    try:
        await service.start()
    except OSError as exc:
        await service.stop()
        raise _bind_error(exc, "--status/--agent", cfg.status) from None
    return service


async def _single(cfg: GatewayConfig) -> int:
    from tcpdispatch.gateway.server import Gateway

    counters = NodeCounters(1)
    counters.bind_worker(0)
    gw = Gateway(cfg, counters)
    try:
        await gw.start()
    except OSError as exc:
        raise _bind_error(exc, "--listen", cfg.listen) from None
    service = await _start_status(cfg, counters, gw.drain, lambda: (os.getpid(),), gw.shed)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, gw.drain)
    loop.add_signal_handler(signal.SIGINT, gw.stop)
    _ready_line(cfg)
    await gw.wait_closed()
    await service.stop()
    log.info("gateway %s stopped", cfg.id)
    return 0


# -- several processes -------------------------------------------------------------
def _worker_main(cfg: GatewayConfig, counters: NodeCounters, worker: int, ready_fd: int) -> None:
    """Entry point of a forked worker process."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    counters.bind_worker(worker)

    async def main() -> int:
        from tcpdispatch.gateway.server import Gateway

        gw = Gateway(cfg, counters, worker=worker)
        try:
            await gw.start()
        except OSError as exc:
            print(f"tcpdispatch gateway: worker {worker}: {_bind_error(exc, '--listen', cfg.listen)}",
                  file=sys.stderr, flush=True)
            return 2
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, gw.drain)
        loop.add_signal_handler(signal.SIGINT, gw.stop)
        os.write(ready_fd, b"R")
        os.close(ready_fd)
        await gw.wait_closed()
        return 0

    code = aio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _wait_ready(procs: list[Any], read_fd: int, timeout: float = 30.0) -> bool:
    """Block until every worker wrote its ready byte; False if one died or time ran out."""
    got = 0
    deadline = time.monotonic() + timeout
    while got < len(procs):
        left = deadline - time.monotonic()
        if left <= 0 or any(p.exitcode is not None for p in procs):
            return False
        r, _, _ = select.select([read_fd], [], [], min(left, 0.2))
        if r:
            chunk = os.read(read_fd, 64)
            if not chunk:
                return False
            got += len(chunk)
    return True


def _multi(cfg: GatewayConfig) -> int:
    ctx = multiprocessing.get_context("fork")
    counters = NodeCounters(cfg.workers, lock=ctx.Lock())
    read_fd, write_fd = os.pipe()
    procs = []
    for w in range(cfg.workers):
        p = ctx.Process(target=_worker_main, args=(cfg, counters, w, write_fd), name=f"gateway-worker-{w}")
        p.start()
        procs.append(p)
    os.close(write_fd)
    try:
        if not _wait_ready(procs, read_fd):
            _kill(procs, signal.SIGKILL)
            raise ConfigError(f"workers failed to start listening on {cfg.listen[0]}:{cfg.listen[1]}",
                              key="--listen")
    finally:
        os.close(read_fd)
    try:
        return aio.run(_supervise(cfg, counters, procs))
    finally:
        _kill(procs, signal.SIGKILL)


def _kill(procs: list[Any], sig: int) -> None:
    for p in procs:
        if p.exitcode is None and p.pid:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass


async def _supervise(cfg: GatewayConfig, counters: NodeCounters, procs: list[Any]) -> int:
    stopping: dict[str, float] = {}

    def drain() -> None:
        if "drain" not in stopping:
            stopping["drain"] = time.monotonic()
            counters.set_draining()
            _kill(procs, signal.SIGTERM)

    def stop() -> None:
        if "stop" not in stopping:
            stopping["stop"] = time.monotonic()
            _kill(procs, signal.SIGINT)

    def shed(count: int, window_s: float, min_age_s: float) -> int:
        """Split the order over the workers by their connections; each picks its oldest."""
        from tcpdispatch.gateway.shed import split_by_worker

        if stopping:
            return 0
        shares = split_by_worker(count, counters.snapshot().worker_connections)
        for w, n in enumerate(shares):
            if n:
                counters.post_shed(w, n, window_s, min_age_s)
        return sum(shares)

    service = await _start_status(
        cfg, counters, drain, lambda: [os.getpid(), *(p.pid for p in procs if p.exitcode is None)], shed
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, drain)
    loop.add_signal_handler(signal.SIGINT, stop)
    _ready_line(cfg)
    seen_dead: set[int] = set()
    code = 0
    while True:
        await asyncio.sleep(0.1)
        for w, p in enumerate(procs):
            if p.exitcode is not None and w not in seen_dead:
                seen_dead.add(w)
                counters.clear_worker(w)
                if not stopping:
                    log.error("worker %d exited unexpectedly (code %s)", w, p.exitcode)
                    code = 1
        if len(seen_dead) == len(procs):
            break
        # Bound the wait: a worker stuck past its window (or a stop) gets killed.
        now = time.monotonic()
        if ("stop" in stopping and now - stopping["stop"] > 5.0) or (
            "drain" in stopping and now - stopping["drain"] > cfg.drain_window + 5.0
        ):
            _kill(procs, signal.SIGKILL)
    for p in procs:
        p.join(timeout=1.0)
    await service.stop()
    log.info("gateway %s stopped", cfg.id)
    return code
