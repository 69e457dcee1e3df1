"""HealthChecker scheduling, target changes, shutdown, and end-to-end detection times."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict

import aiohttp
from health_recorder import Recorder
from helpers import async_wait_until, scaled

from tcpdispatch.health import (
    CheckSpec,
    HealthChecker,
    HealthSettings,
    ProbeResult,
    parse_check,
)


def health_tasks() -> list[asyncio.Task]:  # type: ignore[type-arg]
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("health:")]


class FakeProber:
    """Records probe starts and concurrency; answers after ``duration`` with ``ok``."""

    def __init__(self, duration: float = 0.0, ok: bool = True) -> None:
        self.duration = duration
        self.ok = ok
        self.starts: dict[str, list[float]] = defaultdict(list)
        self.active: dict[str, int] = defaultdict(int)
        self.max_active = 0

    async def __call__(
        self, spec: CheckSpec, timeout: float, session: aiohttp.ClientSession | None
    ) -> ProbeResult:
        key = str(spec)
        self.starts[key].append(time.monotonic())
        self.active[key] += 1
        self.max_active = max(self.max_active, self.active[key])
        try:
            await asyncio.sleep(self.duration)
        finally:
            self.active[key] -= 1
        return ProbeResult(ok=self.ok)


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_calls_on_result_at_about_the_interval(status_server) -> None:  # type: ignore[no-untyped-def]
    server = await status_server()
    settings = HealthSettings(interval=0.1, jitter=0.2)
    rec = Recorder(settings)
    checker = HealthChecker(settings, rec, rng=random.Random(1))
    checker.set_targets({"g1": parse_check(server.url)})
    await checker.start()
    try:
        await async_wait_until(
            lambda: len(rec.calls["g1"]) >= 9, timeout=3.0, what="9 probe results"
        )
    finally:
        await checker.close()
    times = [t for t, _ in rec.calls["g1"]]
    assert all(r.ok for _, r in rec.calls["g1"])
    mean = sum(gaps(times)) / len(gaps(times))
    assert 0.08 <= mean <= scaled(0.16), gaps(times)
    assert min(gaps(times)) >= 0.08 - 0.005  # never faster than interval * (1 - jitter)
    assert rec.up("g1")
    assert server.hits == len(times)


async def test_jitter_spreads_probe_starts_within_bounds() -> None:
    prober = FakeProber()
    settings = HealthSettings(interval=0.05, jitter=0.5)
    checker = HealthChecker(settings, lambda g, r: None, rng=random.Random(7), prober=prober)
    checker.set_targets({"g1": CheckSpec("tcp", host="a", port=1)})
    await checker.start()
    try:
        await async_wait_until(lambda: len(prober.starts["tcp://a:1"]) >= 12, timeout=3.0)
    finally:
        await checker.close()
    g = gaps(prober.starts["tcp://a:1"])
    assert min(g) >= 0.025 - 0.005
    assert max(g) - min(g) > 0.01  # randomised, not a fixed period
    assert sum(g) / len(g) <= scaled(0.08)


async def test_probes_of_one_gateway_never_overlap() -> None:
    prober = FakeProber(duration=0.15)
    settings = HealthSettings(interval=0.05, timeout=0.5, jitter=0.0)
    checker = HealthChecker(settings, lambda g, r: None, rng=random.Random(3), prober=prober)
    checker.set_targets({"g1": CheckSpec("tcp", host="a", port=1)})
    await checker.start()
    try:
        await async_wait_until(lambda: len(prober.starts["tcp://a:1"]) >= 4, timeout=3.0)
    finally:
        await checker.close()
    assert prober.max_active == 1
    # A probe outlasting the interval is followed at once by the next one (back to back).
    g = gaps(prober.starts["tcp://a:1"])
    assert all(0.15 - 0.005 <= x <= scaled(0.25) for x in g), g


async def test_set_targets_adds_removes_and_restarts_loops() -> None:
    prober = FakeProber()
    seen: dict[str, list[float]] = defaultdict(list)
    settings = HealthSettings(interval=0.05)
    checker = HealthChecker(settings, lambda g, r: seen[g].append(time.monotonic()), prober=prober)
    a, b, c = (CheckSpec("tcp", host=h, port=1) for h in "abc")
    checker.set_targets({"g1": a, "gp": CheckSpec("push")})  # before start: remembered only
    assert checker.probing == frozenset()
    await checker.start()
    assert checker.probing == {"g1"}  # push targets are not probed
    checker.set_targets({"g1": a, "g2": b})
    assert checker.probing == {"g1", "g2"}
    await async_wait_until(lambda: seen["g1"] and seen["g2"], timeout=2.0, what="both probed")
    task_g1 = next(t for t in health_tasks() if t.get_name() == "health:g1")

    checker.set_targets({"g2": b})
    assert checker.probing == {"g2"}
    await async_wait_until(task_g1.done, timeout=1.0, what="g1 loop stopped")
    n_g1 = len(seen["g1"])
    await async_wait_until(lambda: len(seen["g2"]) >= 4, timeout=2.0)
    assert len(seen["g1"]) == n_g1  # removed: no more results

    checker.set_targets({"g2": c})  # same id, new check: restarted against the new target
    await async_wait_until(lambda: prober.starts["tcp://c:1"], timeout=2.0, what="new spec probed")
    assert len([t for t in health_tasks() if not t.done()]) == 1
    await checker.close()
    assert not health_tasks()


async def test_close_leaves_no_tasks_and_closes_the_connections(status_server) -> None:  # type: ignore[no-untyped-def]
    server = await status_server()
    server.mode = "hang"  # close() must also cancel probes stuck in flight
    checker = HealthChecker(HealthSettings(interval=0.05, timeout=5.0), lambda g, r: None)
    checker.set_targets({f"g{i}": parse_check(server.url) for i in range(5)})
    await checker.start()
    await async_wait_until(lambda: server.hits >= 5, timeout=2.0, what="probes in flight")
    raw = checker._raw
    assert raw is not None and raw._conns
    conns = list(raw._conns.values())
    start = time.monotonic()
    await checker.close()
    assert time.monotonic() - start < scaled(1.0)
    assert not health_tasks()
    assert not raw._conns
    await asyncio.wait_for(asyncio.gather(*(c.closed for c in conns)), 1.0)
    # A closed checker ignores new targets (a reload swapped it out while an admin change ran).
    checker.set_targets({"g9": parse_check(server.url)})
    assert not health_tasks() and checker.probing == frozenset()


async def test_callback_and_prober_errors_do_not_stop_checking() -> None:
    calls: list[ProbeResult] = []

    def on_result(gid: str, result: ProbeResult) -> None:
        calls.append(result)
        raise RuntimeError("consumer bug")

    async def broken(
        spec: CheckSpec, timeout: float, session: aiohttp.ClientSession | None
    ) -> ProbeResult:
        raise KeyError("prober bug")

    checker = HealthChecker(HealthSettings(interval=0.02), on_result, prober=broken)
    checker.set_targets({"g1": CheckSpec("tcp", host="a", port=1)})
    await checker.start()
    try:
        await async_wait_until(lambda: len(calls) >= 3, timeout=2.0)
    finally:
        await checker.close()
    assert not calls[0].ok and "prober bug" in calls[0].detail


async def test_check_now_probes_early_but_not_in_a_flood() -> None:
    prober = FakeProber()
    settings = HealthSettings(interval=1.0, jitter=0.0)
    checker = HealthChecker(settings, lambda g, r: None, rng=random.Random(0), prober=prober)
    checker.set_targets({"g1": CheckSpec("tcp", host="a", port=1)})
    await checker.start()
    starts = prober.starts["tcp://a:1"]
    try:
        checker.check_now("g1")  # wakes the initial random-phase wait
        await async_wait_until(lambda: len(starts) >= 1, timeout=0.5, what="first probe")
        for _ in range(20):
            checker.check_now("g1")
            await asyncio.sleep(0.01)
        await async_wait_until(lambda: len(starts) >= 2, timeout=0.6, what="early probe")
        checker.check_now("unknown")  # ignored
    finally:
        await checker.close()
    g = gaps(starts)
    assert 0.25 - 0.005 <= g[0] < scaled(0.5)  # min gap interval/4, not the full 1 s interval


# ---------------------------------------------------------------- detection times with defaults


async def _bring_up(status_server, n: int):  # type: ignore[no-untyped-def]
    servers = [await status_server() for _ in range(n)]
    settings = HealthSettings()  # the defaults are what is being measured
    rec = Recorder(settings)
    checker = HealthChecker(settings, rec)
    checker.set_targets({f"g{i}": parse_check(s.url) for i, s in enumerate(servers)})
    await checker.start()
    await async_wait_until(
        lambda: all(rec.up(f"g{i}") for i in range(n)), timeout=3.0, what="all up"
    )
    return servers, rec, checker


N_GATEWAYS = 3  # a few gateways at independent random phases sample the detection time


async def test_defaults_detect_a_crashed_gateway_within_1s(status_server) -> None:  # type: ignore[no-untyped-def]
    servers, rec, checker = await _bring_up(status_server, N_GATEWAYS)
    try:
        t0 = time.monotonic()
        for s in servers:
            await s.stop()  # listener and kept-alive connections closed: connection refused
        await async_wait_until(
            lambda: all(not rec.up(f"g{i}") for i in range(N_GATEWAYS)),
            timeout=3.0,
            what="all down",
        )
    finally:
        await checker.close()
    times = [rec.down_since(f"g{i}", t0) for i in range(N_GATEWAYS)]
    print(f"crash (refused) detection times: {[round(t, 3) for t in times if t is not None]}")
    assert all(t is not None and t < scaled(1.0) for t in times), times


async def test_defaults_detect_a_hung_gateway_within_2s(status_server) -> None:  # type: ignore[no-untyped-def]
    servers, rec, checker = await _bring_up(status_server, N_GATEWAYS)
    try:
        t0 = time.monotonic()
        for s in servers:
            s.mode = "hang"  # accepts and reads, never answers: a SIGSTOPped gateway from outside
        await async_wait_until(
            lambda: all(not rec.up(f"g{i}") for i in range(N_GATEWAYS)),
            timeout=4.0,
            what="all down",
        )
        for s in servers:  # and it comes back after `rise` successes
            s.mode = "ok"
            s.release.set()
        t1 = time.monotonic()
        await async_wait_until(lambda: all(rec.up(f"g{i}") for i in range(N_GATEWAYS)), timeout=3.0)
        recovered = time.monotonic() - t1
    finally:
        await checker.close()
    times = [rec.down_since(f"g{i}", t0) for i in range(N_GATEWAYS)]
    print(
        f"hang detection times: {[round(t, 3) for t in times if t is not None]}, "
        f"recovery <= {recovered:.3f}s"
    )
    assert all(t is not None and t < scaled(2.0) for t in times), times
    assert recovered < scaled(1.5)
