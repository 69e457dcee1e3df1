"""The harness's waiting helpers and Proc: polling with a deadline, percentiles, process groups."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import psutil
import pytest

import harness as testing
from harness import Proc, async_wait_until, scaled, wait_until
from tcpdispatch.stats import percentile


def test_percentile_is_nearest_rank_of_any_order() -> None:
    assert percentile([], 50) is None
    values = [float(i) for i in range(100, 0, -1)]  # unsorted on purpose
    assert (
        percentile(values, 0),
        percentile(values, 50),
        percentile(values, 99),
        percentile(values, 100),
    ) == (1.0, 50.0, 99.0, 100.0)
    assert percentile([1, 2, 3, 4], 75) == 3  # rank ceil(3.0) = 3, not 4


def test_scaled_reads_the_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(testing.TIMEOUT_FACTOR_ENV, "3")
    assert scaled(2) == 6
    monkeypatch.delenv(testing.TIMEOUT_FACTOR_ENV)
    assert scaled(2) == 2


def flaky(fail_times: int) -> tuple[list[int], object]:
    calls: list[int] = []

    def pred() -> int:
        calls.append(1)
        if len(calls) <= fail_times:
            raise ConnectionRefusedError("still starting")
        return len(calls)

    return calls, pred


def test_wait_until_swallows_errors_while_polling() -> None:
    _, pred = flaky(2)
    assert wait_until(pred, timeout=2, interval=0.001) == 3  # type: ignore[arg-type]


def test_wait_until_reports_the_last_error_at_the_deadline() -> None:
    with pytest.raises(AssertionError, match=r"thing.*ConnectionRefusedError"):
        wait_until(flaky(10**6)[1], timeout=0.05, interval=0.01, what="thing")  # type: ignore[arg-type]


async def test_async_wait_until_swallows_errors_like_the_sync_one() -> None:
    _, pred = flaky(2)
    assert await async_wait_until(pred, timeout=2, interval=0.001) == 3  # type: ignore[arg-type]

    async def broken() -> bool:
        raise ValueError("bad json")

    with pytest.raises(AssertionError, match=r"async thing.*ValueError"):
        await async_wait_until(broken, timeout=0.05, interval=0.01, what="async thing")


async def test_async_wait_until_awaits_what_the_predicate_returns() -> None:
    t0 = time.monotonic()
    assert await async_wait_until(
        lambda: asyncio.to_thread(lambda: time.monotonic() - t0 > 0.03), timeout=2, interval=0.005
    )


def test_proc_stop_kills_the_process_group(tmp_path: Path) -> None:
    code = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('READY', c.pid, flush=True); time.sleep(60)"
    )
    p = Proc([sys.executable, "-c", code], tmp_path / "p.log")
    line = wait_until(lambda: "READY" in p.output() and p.output(), timeout=10, what="child READY")
    grandchild = psutil.Process(int(line.split()[1]))
    assert p.alive
    p.stop()
    assert not p.alive and p.popen.returncode is not None

    def gone() -> bool:
        try:
            return grandchild.status() == psutil.STATUS_ZOMBIE  # killed; reaping is init's job
        except psutil.NoSuchProcess:
            return True

    wait_until(gone, timeout=5, what="the grandchild killed with its group")
