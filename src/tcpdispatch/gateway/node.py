"""Running a gateway node: one process, or a supervisor with ``--workers N`` forked workers.

With one worker everything (listener, status, agent) shares one process and
event loop. With several, the supervisor creates the shared counters, forks
the workers (each binds the listen port with SO_REUSEPORT, so the kernel
spreads accepted connections over them), waits until every worker is
listening, then serves status/metrics/agent with node totals. It forwards
SIGTERM (drain) and SIGINT (stop) to the workers and exits when they all
have. Workers are forked before the supervisor imports aiohttp, so they do not
carry it.

A worker that dies while the node serves (a signal, a crash) is logged once with
the reason and restarted in its slot after a backoff (0.5 s, doubling to 30 s for
workers that keep dying within 30 s of their start); restarts are counted
(``tcpdispatch_gateway_worker_restarts_total``) and ``/status`` reports the
workers actually running. A restarted worker is forked from the running
supervisor, so it first drops the supervisor's sockets and loop state.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import select
import signal
import stat
import sys
import time
from typing import Any

from tcpdispatch import aio
from tcpdispatch.errors import ConfigError
from tcpdispatch.gateway.config import GatewayConfig
from tcpdispatch.gateway.loadmeter import LoopMeter
from tcpdispatch.gateway.shm import NodeCounters

log = logging.getLogger("tcpdispatch.gateway")


def _ready_line(cfg: GatewayConfig) -> None:
    print(
        f"READY {cfg.listen[0]}:{cfg.listen[1]} status={cfg.status[0]}:{cfg.status[1]}", flush=True
    )


def _bind_error(exc: OSError, key: str, addr: tuple[str, int]) -> ConfigError:
    return ConfigError(f"cannot listen on {addr[0]}:{addr[1]}: {exc.strerror or exc}", key=key)


def run_node(cfg: GatewayConfig) -> int:
    """Run until drained or stopped; returns the exit code."""
    if cfg.workers == 1:
        return aio.run(_single(cfg))
    return _multi(cfg)


# -- one process -----------------------------------------------------------------
async def _start_status(
    cfg: GatewayConfig, counters: NodeCounters, on_drain: Any, pids: Any, on_shed: Any = None
) -> Any:
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
    meter = LoopMeter(counters.set_loop_load)
    meter.start()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, gw.drain)
    loop.add_signal_handler(signal.SIGINT, gw.stop)
    loop.add_signal_handler(signal.SIGHUP, gw.reload_keys)
    _ready_line(cfg)
    await gw.wait_closed()
    meter.stop()
    await service.stop()
    log.info("gateway %s stopped", cfg.id)
    return 0


# -- several processes -------------------------------------------------------------
RESTART_BACKOFF_INITIAL = 0.5  # seconds before restarting a worker that died
RESTART_BACKOFF_MAX = 30.0
STABLE_AFTER = (
    30.0  # a worker that ran this long before dying restarts after the initial delay again
)


def _after_fork_in_restarted_worker() -> None:
    """Drop what a worker forked from the running supervisor inherited but must not keep.

    The supervisor's event loop is still marked running in this thread (Python < 3.12 does
    not reset it at fork), and its sockets (status and agent listeners, their accepted
    connections, HTTP clients) are open here too: a connection the supervisor closes would
    stay open while this copy lives. Sockets are closed by descriptor; stdio is kept.
    """
    asyncio.events._set_running_loop(None)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:
            pass


def _worker_main(
    cfg: GatewayConfig, counters: NodeCounters, worker: int, ready_fd: int, restarted: bool = False
) -> None:
    """Entry point of a forked worker process (``ready_fd`` < 0: nobody waits for it)."""
    if restarted:
        _after_fork_in_restarted_worker()
    signal.signal(signal.SIGINT, signal.SIG_DFL)

    async def main() -> int:
        from tcpdispatch.gateway.server import Gateway

        gw = Gateway(cfg, counters, worker=worker)
        try:
            await gw.start()
        except OSError as exc:
            print(
                f"tcpdispatch gateway: worker {worker}: {_bind_error(exc, '--listen', cfg.listen)}",
                file=sys.stderr,
                flush=True,
            )
            return 2
        # Only now (listening, before the loop runs a callback) is the worker counted as live.
        counters.bind_worker(worker)
        meter = LoopMeter(counters.set_loop_load)
        meter.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, gw.drain)
        loop.add_signal_handler(signal.SIGINT, gw.stop)
        loop.add_signal_handler(signal.SIGHUP, gw.reload_keys)
        if ready_fd >= 0:
            os.write(ready_fd, b"R")
            os.close(ready_fd)
        await gw.wait_closed()
        meter.stop()
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


def exit_reason(exitcode: int) -> str:
    """``killed by signal SIGKILL`` or ``exited with code 3`` (multiprocessing's exitcode)."""
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = str(-exitcode)
        return f"killed by signal {name}"
    return f"exited with code {exitcode}"


def restart_delay(failures: int) -> float:
    """Backoff before restarting a worker after its ``failures``-th quick death in a row (>= 1)."""
    return float(min(RESTART_BACKOFF_MAX, RESTART_BACKOFF_INITIAL * 2 ** (max(failures, 1) - 1)))


class _Workers:
    """The worker processes of one node, slot by slot; restarts the dead with backoff."""

    def __init__(self, cfg: GatewayConfig, counters: NodeCounters, ctx: Any) -> None:
        self.cfg = cfg
        self.counters = counters
        self._ctx = ctx
        self.procs: list[Any] = [None] * cfg.workers
        self._started = [0.0] * cfg.workers
        self._failures = [0] * cfg.workers
        self._restart_at: list[float | None] = [None] * cfg.workers

    def spawn(self, w: int, ready_fd: int, *, restarted: bool = False) -> Any:
        p = self._ctx.Process(
            target=_worker_main,
            args=(self.cfg, self.counters, w, ready_fd, restarted),
            name=f"gateway-worker-{w}",
        )
        p.start()
        self.procs[w] = p
        self._started[w] = time.monotonic()
        return p

    def running(self) -> list[Any]:
        return [p for p in self.procs if p is not None and p.exitcode is None]

    def kill(self, sig: int) -> None:
        _kill([p for p in self.procs if p is not None], sig)

    def poll(self, *, restart: bool) -> None:
        """Reap dead workers (log once, with the reason) and restart those whose delay is over."""
        now = time.monotonic()
        for w, p in enumerate(self.procs):
            due = self._restart_at[w]
            if p is not None and p.exitcode is not None:
                self.counters.clear_worker(w)
                self.procs[w] = None
                p.join(timeout=0)
                if not restart:
                    continue
                lived = now - self._started[w]
                self._failures[w] = 1 if lived >= STABLE_AFTER else self._failures[w] + 1
                delay = restart_delay(self._failures[w])
                self._restart_at[w] = now + delay
                log.error(
                    "worker %d (pid %s) %s after %.1fs; restarting it in %.1fs",
                    w,
                    p.pid,
                    exit_reason(p.exitcode),
                    lived,
                    delay,
                )
            elif p is None and restart and due is not None and now >= due:
                self._restart_at[w] = None
                new = self.spawn(w, -1, restarted=True)
                self.counters.add_worker_restart()
                log.info("worker %d restarted (pid %s)", w, new.pid)

    def all_gone(self) -> bool:
        return all(p is None for p in self.procs)


def _multi(cfg: GatewayConfig) -> int:
    ctx = multiprocessing.get_context("fork")
    counters = NodeCounters(cfg.workers, lock=ctx.Lock())
    workers = _Workers(cfg, counters, ctx)
    read_fd, write_fd = os.pipe()
    for w in range(cfg.workers):
        workers.spawn(w, write_fd)
    os.close(write_fd)
    try:
        if not _wait_ready(list(workers.procs), read_fd):
            workers.kill(signal.SIGKILL)
            raise ConfigError(
                f"workers failed to start listening on {cfg.listen[0]}:{cfg.listen[1]}",
                key="--listen",
            )
    finally:
        os.close(read_fd)
    try:
        return aio.run(_supervise(cfg, counters, workers))
    finally:
        workers.kill(signal.SIGKILL)


def _kill(procs: list[Any], sig: int) -> None:
    for p in procs:
        if p.exitcode is None and p.pid:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass


async def _supervise(cfg: GatewayConfig, counters: NodeCounters, workers: _Workers) -> int:
    stopping: dict[str, float] = {}

    def drain() -> None:
        if "drain" not in stopping:
            stopping["drain"] = time.monotonic()
            counters.set_draining()
            workers.kill(signal.SIGTERM)

    def stop() -> None:
        if "stop" not in stopping:
            stopping["stop"] = time.monotonic()
            workers.kill(signal.SIGINT)

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
        cfg, counters, drain, lambda: [os.getpid(), *(p.pid for p in workers.running())], shed
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, drain)
    loop.add_signal_handler(signal.SIGINT, stop)
    # SIGHUP: every worker re-reads the key file itself (each keeps its own key objects).
    loop.add_signal_handler(signal.SIGHUP, lambda: workers.kill(signal.SIGHUP))
    _ready_line(cfg)
    while True:
        await asyncio.sleep(0.1)
        workers.poll(restart=not stopping)
        if stopping and workers.all_gone():
            break
        # Bound the wait: a worker stuck past its window (or a stop) gets killed.
        now = time.monotonic()
        if ("stop" in stopping and now - stopping["stop"] > 5.0) or (
            "drain" in stopping and now - stopping["drain"] > cfg.drain_window + 5.0
        ):
            workers.kill(signal.SIGKILL)
    await service.stop()
    log.info("gateway %s stopped", cfg.id)
    return 0
