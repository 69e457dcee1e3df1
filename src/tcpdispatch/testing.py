"""Helpers for driving real tcpdispatch processes: used by the tests, the benchmarks and :mod:`cluster`.

- :func:`free_port`, :func:`scaled`, :func:`wait_until` / :func:`async_wait_until`
  (poll with a deadline; every timeout is multiplied by ``TCPDISPATCH_TIMEOUT_FACTOR``,
  default 1, so a slow machine stretches them all at once);
- :class:`Proc` (a child in its own process group, output in a file, killed with
  its workers by :meth:`Proc.stop`) and :class:`ProcGroup` (a ``start(args, name=)``
  factory for scripts; the test suite's ``procs`` fixture is the pytest twin);
- :func:`start_gateway` / :func:`start_dispatcher` and their handles;
- :func:`get_json`, :func:`haproxy_stats`.

No pytest import: this module is importable from scripts and production code.
"""

from __future__ import annotations

import asyncio
import csv
import inspect
import io
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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tcpdispatch.gateway.testing import ProbeClient

TCPDISPATCH = [sys.executable, "-m", "tcpdispatch"]
"""Command prefix that runs this tcpdispatch with the current interpreter."""
TIMEOUT_FACTOR_ENV = "TCPDISPATCH_TIMEOUT_FACTOR"


# -- time and ports ---------------------------------------------------------------------
def timeout_factor() -> float:
    """``TCPDISPATCH_TIMEOUT_FACTOR`` (default 1), read at each call."""
    return float(os.environ.get(TIMEOUT_FACTOR_ENV) or "1")


def scaled(seconds: float) -> float:
    """``seconds`` stretched by the timeout factor."""
    return seconds * timeout_factor()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _timed_out(timeout: float, what: str, pred: object, last: BaseException | None) -> AssertionError:
    limit = scaled(timeout)
    shown = f"{timeout:g}s" if limit == timeout else f"{timeout:g}s (scaled to {limit:g}s)"
    return AssertionError(f"timed out after {shown} waiting for {what or pred}"
                          + (f" (last error: {last!r})" if last is not None else ""))


def wait_until(pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll ``pred`` until it returns a truthy value and return that value.

    Exceptions from ``pred`` count as "not yet" (a server may still be starting);
    at the scaled deadline an AssertionError names ``what`` and the last error.
    """
    deadline = time.monotonic() + scaled(timeout)
    last: Exception | None = None
    while True:
        try:
            value = pred()
        except Exception as exc:  # noqa: BLE001 - reported at the deadline
            last, value = exc, None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, pred, last)
        time.sleep(interval)


async def async_wait_until(
    pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02, what: str = "",
) -> Any:
    """:func:`wait_until` for async code: ``pred`` may return an awaitable (e.g. ``asyncio.to_thread(...)``),
    which is awaited; exceptions are swallowed the same way and reported at the deadline."""
    deadline = time.monotonic() + scaled(timeout)
    last: Exception | None = None
    while True:
        try:
            value = pred()
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:  # noqa: BLE001 - reported at the deadline
            last, value = exc, None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, pred, last)
        await asyncio.sleep(interval)


# -- HTTP -----------------------------------------------------------------------------
def get_json(url: str, timeout: float = 2.0) -> Any:
    """GET ``url`` and decode its JSON body (urllib errors propagate)."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def post(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> int:
    """POST with an empty body; returns the HTTP status (4xx/5xx raise urllib.error.HTTPError)."""
    req = urllib.request.Request(url, method="POST", headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        r.read()
        return int(r.status)


# -- processes ------------------------------------------------------------------------
class Proc:
    """A real child process in its own session (process group), stdout+stderr in ``log``."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, *,
                 name: str | None = None, append: bool = False) -> None:
        self.args = args
        self.log = log
        self.name = name or Path(args[0]).name
        with open(log, "ab" if append else "wb") as fh:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(
                args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **env} if env else None, start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process itself (not its group), if it still runs."""
        if self.alive:
            os.kill(self.popen.pid, sig)

    def wait(self, timeout: float = 10.0) -> int:
        return self.popen.wait(timeout=scaled(timeout))

    def stop(self, timeout: float = 10.0) -> None:
        """Kill the whole process group (workers too, even if stopped) and reap it."""
        if self.alive:
            try:
                os.killpg(self.popen.pid, signal.SIGCONT)
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass


class ProcGroup:
    """``start(args, name=, env=)`` factory for scripts; ``stop()`` kills everything it started."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def __call__(self, args: list[str], name: str = "proc", env: dict[str, str] | None = None) -> Proc:
        p = Proc(args, self.workdir / f"{name}-{len(self.procs)}.log", env, name=name)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            p.stop()


# -- gateways and dispatchers ------------------------------------------------------------------
@dataclass
class GatewayHandle:
    """A started ``tcpdispatch gateway``: its ports, process and blocking status helpers."""

    id: str
    port: int
    status_port: int
    proc: Any  # Proc, or what the caller's ``start`` returned (``output()`` and ``popen``)
    weight: int = 1
    agent_port: int | None = None
    host: str = "127.0.0.1"
    admin_token: str | None = None  # the gateway's --admin-token-file content, sent by drain()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def status_url(self) -> str:
        return f"http://{self.host}:{self.status_port}/status"

    def status(self) -> dict[str, Any]:
        return dict(get_json(self.status_url, timeout=5))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.host}:{self.status_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def drain(self) -> int:
        """``POST /drain`` with the admin token; returns the HTTP status (202).

        Without an admin token the gateway refuses (403, raised as urllib.error.HTTPError):
        start it with ``start_gateway(..., admin_token_file=...)``."""
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else None
        return post(f"http://{self.host}:{self.status_port}/drain", headers)

    def agent(self) -> str:
        """The agent-check line (needs ``start_gateway(..., agent=True)``)."""
        if self.agent_port is None:
            raise RuntimeError(f"gateway {self.id} was started without --agent")
        with socket.create_connection((self.host, self.agent_port), timeout=5) as s:
            return s.makefile().read()

    def signal(self, sig: int) -> None:
        if self.proc.popen.poll() is None:
            os.kill(self.proc.popen.pid, sig)

    async def client(self, source: str | None = None) -> ProbeClient:
        """A raw protocol connection (:class:`tcpdispatch.gateway.testing.ProbeClient`)."""
        from tcpdispatch.gateway.testing import ProbeClient

        return await ProbeClient.connect(self.host, self.port, source=source)


def _wait_ready(proc: Any, what: str, timeout: float) -> None:
    wait_until(lambda: "READY" in proc.output() or proc.popen.poll() is not None, timeout, 0.05,
               what=f"{what} READY")
    if proc.popen.poll() is not None:
        raise AssertionError(f"{what} exited:\n{proc.output()[-2000:]}")


def start_gateway(
    start: Callable[..., Any], gid: str = "g1", *extra: str, secret_file: Path | str | None = None,
    weight: int = 1, agent: bool = False, host: str = "127.0.0.1", env: dict[str, str] | None = None,
    log_level: str | None = None, wait: bool = True, timeout: float = 30.0,
    admin_token_file: Path | str | None = None,
) -> GatewayHandle:
    """Start ``tcpdispatch gateway --id gid`` on free ``host`` ports through ``start(args, name=, env=)``
    (the ``procs`` fixture, a :class:`ProcGroup`, ...) and, with ``wait``, return once it printed READY.

    Tickets come from ``secret_file``, else ``--no-ticket`` (unless ``extra`` already names
    ``--secret-file`` or ``--no-ticket``). ``agent=True`` also opens the agent-check port.
    ``admin_token_file`` enables ``POST /drain`` (:meth:`GatewayHandle.drain` sends the token).
    """
    port, status = free_port(host), free_port(host)
    agent_port = free_port(host) if agent else None
    if {"--secret-file", "--no-ticket"} & set(extra):
        tickets: list[str] = []
    else:
        tickets = ["--secret-file", str(secret_file)] if secret_file else ["--no-ticket"]
    args = [*TCPDISPATCH, *(["--log-level", log_level] if log_level else []), "gateway", "--id", gid,
            "--listen", f"{host}:{port}", "--status", f"{host}:{status}",
            *(["--agent", f"{host}:{agent_port}"] if agent_port else []), *tickets,
            *(["--admin-token-file", str(admin_token_file)] if admin_token_file else []), *extra]
    if admin_token_file is None and "--admin-token-file" in extra:
        admin_token_file = extra[list(extra).index("--admin-token-file") + 1]
    admin_token = Path(admin_token_file).read_text().strip() if admin_token_file else None
    proc = start(args, name=gid, env=env) if env else start(args, name=gid)
    if wait:
        _wait_ready(proc, f"gateway {gid}", timeout)
        if f"READY {host}:{port} status={host}:{status}" not in proc.output():
            raise AssertionError(f"gateway {gid} printed an unexpected READY line:\n{proc.output()[-2000:]}")
    return GatewayHandle(gid, port, status, proc, weight, agent_port, host, admin_token)


def named_gateways(dispatch: Callable[[str], Any], n: int = 20) -> set[str]:
    """Every gateway id named (as primary or alternate) in ``n`` answers of ``dispatch(client_id)``."""
    ids: set[str] = set()
    for i in range(n):
        doc = dispatch(f"probe-{i}")
        ids.add(doc["gateway"]["id"])
        ids.update(a["id"] for a in doc["alternates"])
    return ids


@dataclass
class RealDispatcher:
    """A started ``tcpdispatch dispatcher``."""

    url: str
    proc: Any

    def gateways(self) -> dict[str, dict[str, Any]]:
        """``GET /v1/gateways`` by gateway id."""
        body = get_json(self.url + "/v1/gateways")
        items = body["gateways"] if isinstance(body, dict) else body
        return {g["id"]: g for g in items}


def start_dispatcher(
    start: Callable[..., Any], workdir: Path, gateways: Sequence[GatewayHandle], secret_file: Path,
    *, extra_toml: str = "", timeout: float = 30.0,
) -> RealDispatcher:
    """A ``tcpdispatch dispatcher`` over ``gateways`` (health interval 0.25 s), returned once it
    reports them all healthy."""
    port = free_port()
    lines = ["[dispatcher]", f'listen = "127.0.0.1:{port}"', f'secret_file = "{secret_file}"',
             extra_toml, "", "[health]", "interval = 0.25", ""]
    for g in gateways:
        lines += ["[[gateways]]", f'id = "{g.id}"', f'address = "{g.address}"',
                  f'check = "{g.status_url}"', f"weight = {g.weight}", ""]
    config = workdir / f"dispatcher-{port}.toml"
    config.write_text("\n".join(lines))
    proc = start([*TCPDISPATCH, "dispatcher", "--config", str(config)], name="dispatcher")
    d = RealDispatcher(f"http://127.0.0.1:{port}", proc)
    _wait_ready(proc, "dispatcher", timeout)

    def all_healthy() -> bool:
        pool = d.gateways()
        return len(pool) == len(gateways) and all(g.get("healthy") for g in pool.values())

    wait_until(all_healthy, timeout, 0.05, what="all gateways healthy")
    return d


# -- third-party peers and figures -------------------------------------------------------------
def haproxy_stats(sock_path: Path, backend: str = "gateways", timeout: float = 2.0) -> dict[str, dict[str, str]]:
    """HAProxy's ``show stat`` CSV rows of ``backend``'s servers (no FRONTEND/BACKEND rows), by name."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
    return {r["svname"]: r for r in rows
            if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")}


