"""Shared test helpers (importable as ``helpers``): free ports, real processes, deadlines, binaries.

Every wait polls with a deadline scaled by TCPDISPATCH_TIMEOUT_FACTOR (default
1) so slow machines can stretch all timeouts at once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

TIMEOUT_FACTOR = float(os.environ.get("TCPDISPATCH_TIMEOUT_FACTOR", "1"))
REQUIRE_INTEGRATION = os.environ.get("TCPDISPATCH_REQUIRE_INTEGRATION") == "1"


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], object], timeout: float = 5.0, interval: float = 0.02, what: str = "") -> object:
    """Poll ``pred`` until it returns a truthy value; fail the test at the deadline."""
    deadline = time.monotonic() + scaled(timeout)
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = pred()
        except Exception as exc:  # noqa: BLE001 - the predicate may fail while a server starts
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}" + (f" (last error: {last_exc!r})" if last_exc else ""))


async def async_wait_until(pred: Callable[[], object], timeout: float = 5.0, interval: float = 0.02, what: str = "") -> object:
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")


def require_binary(name: str) -> str:
    """Path of ``name``; skips the test when missing, fails under TCPDISPATCH_REQUIRE_INTEGRATION=1."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path:
        return path
    msg = f"{name} is not installed (Debian package; `bash .ci/run` installs it)"
    if REQUIRE_INTEGRATION:
        pytest.fail(msg + " and TCPDISPATCH_REQUIRE_INTEGRATION=1")
    pytest.skip(msg)


class Proc:
    """A real child process (tcpdispatch or a third-party server) with its output in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log = log
        self._fh = open(log, "wb")
        self.popen = subprocess.Popen(
            args, stdout=self._fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def wait(self, timeout: float = 10.0) -> int:
        return self.popen.wait(timeout=scaled(timeout))

    def stop(self) -> None:
        """Kill the process group (workers too) and reap it."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGCONT)
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._fh.close()


TCPDISPATCH = [sys.executable, "-m", "tcpdispatch"]
