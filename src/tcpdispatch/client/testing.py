"""Start real gateways and a real dispatcher for the client's integration tests and bench.

``start`` is any callable ``start(args, name=...)`` returning an object with
``output()`` and ``popen`` (the test suite's ``procs`` fixture, or
:class:`SimpleProc` here for scripts). Everything listens on free loopback ports.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TCPDISPATCH = [sys.executable, "-m", "tcpdispatch"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(pred: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = pred()
        except Exception as exc:  # noqa: BLE001 - the server may still be starting
            last, value = exc, None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@dataclass
class RealGateway:
    id: str
    port: int
    status_port: int
    proc: Any
    weight: int = 1

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        return dict(get_json(f"http://127.0.0.1:{self.status_port}/status"))

    def signal(self, sig: int) -> None:
        if self.proc.popen.poll() is None:
            os.kill(self.proc.popen.pid, sig)

    def drain(self) -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.status_port}/drain", method="POST")
        urllib.request.urlopen(req, timeout=2).read()


@dataclass
class RealDispatcher:
    url: str
    proc: Any

    def gateways(self) -> dict[str, dict[str, Any]]:
        body = get_json(self.url + "/v1/gateways")
        items = body["gateways"] if isinstance(body, dict) else body
        return {g["id"]: g for g in items}


def start_gateway(
    start: Callable[..., Any], gid: str, *extra: str, secret_file: Path | None = None,
    weight: int = 1, timeout: float = 30.0,
) -> RealGateway:
    """A ``tcpdispatch gateway`` (tickets from ``secret_file``, else ``--no-ticket``), READY."""
    port, status = free_port(), free_port()
    tickets = ["--secret-file", str(secret_file)] if secret_file else ["--no-ticket"]
    proc = start([*TCPDISPATCH, "gateway", "--id", gid, "--listen", f"127.0.0.1:{port}",
                  "--status", f"127.0.0.1:{status}", *tickets, *extra], name=gid)
    _wait(lambda: "READY" in proc.output() or proc.popen.poll() is not None, timeout, f"{gid} READY")
    if proc.popen.poll() is not None:
        raise AssertionError(f"gateway {gid} exited: {proc.output()[-2000:]}")
    return RealGateway(gid, port, status, proc, weight)


def start_dispatcher(
    start: Callable[..., Any], workdir: Path, gateways: Sequence[RealGateway], secret_file: Path,
    *, extra_toml: str = "", timeout: float = 30.0,
) -> RealDispatcher:
    """A ``tcpdispatch dispatcher`` over ``gateways``, returned once it hands them all out."""
    port = free_port()
    lines = ["[dispatcher]", f'listen = "127.0.0.1:{port}"', f'secret_file = "{secret_file}"',
             extra_toml, "", "[health]", "interval = 0.25", ""]
    for g in gateways:
        lines += ["[[gateways]]", f'id = "{g.id}"', f'address = "{g.address}"',
                  f'check = "http://127.0.0.1:{g.status_port}/status"', f"weight = {g.weight}", ""]
    config = workdir / f"dispatcher-{port}.toml"
    config.write_text("\n".join(lines))
    proc = start([*TCPDISPATCH, "dispatcher", "--config", str(config)], name="dispatcher")
    d = RealDispatcher(f"http://127.0.0.1:{port}", proc)
    _wait(lambda: "READY" in proc.output() or proc.popen.poll() is not None, timeout, "dispatcher READY")
    if proc.popen.poll() is not None:
        raise AssertionError(f"dispatcher exited: {proc.output()[-2000:]}")
    _wait(lambda: len(d.gateways()) == len(gateways)
          and all(g.get("healthy") for g in d.gateways().values()), timeout, "all gateways healthy")
    return d


class SimpleProc:
    """A child process with its output in a file (for scripts outside pytest)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        with open(log, "wb") as fh:
            self.popen = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
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


class ProcGroup:
    """``start(args, name=)`` factory for scripts; ``stop()`` kills everything it started."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[SimpleProc] = []

    def __call__(self, args: list[str], name: str = "proc") -> SimpleProc:
        p = SimpleProc(args, self.workdir / f"{name}-{len(self.procs)}.log")
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
