"""Starting a real system: gateways, dispatchers (one or several replicas), third-party peers.

Processes are started through a ``start(args, name=, env=)`` factory: the suite's
``procs`` fixture, a :class:`ProcGroup` in scripts, or anything returning a
:class:`tcpdispatch.procs.Proc`-like object; whoever owns the factory kills what it started.
Dispatcher configuration is written by :func:`tcpdispatch.dispatcher.config_writer.dispatcher_toml`
only (through :func:`write_dispatcher_config` here).
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcpdispatch.dispatcher.config_writer import write_dispatcher_toml
from tcpdispatch.procs import TCPDISPATCH, LocalGateway, Proc, free_port, launch_gateway

from .waiting import scaled, wait_until

if TYPE_CHECKING:
    from .probe import ProbeClient


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
class ProcGroup:
    """``start(args, name=, env=)`` factory for scripts; ``stop()`` kills everything it started."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def __call__(
        self, args: list[str], name: str = "proc", env: dict[str, str] | None = None
    ) -> Proc:
        p = Proc(args, self.workdir / f"{name}-{len(self.procs)}.log", env, name=name)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            p.stop()


def wait_ready(proc: Any, what: str, timeout: float = 30.0) -> None:
    """Wait until ``proc`` printed READY; an AssertionError with its output if it exited first."""
    wait_until(
        lambda: "READY" in proc.output() or proc.popen.poll() is not None,
        timeout,
        0.05,
        what=f"{what} READY",
    )
    if proc.popen.poll() is not None:
        raise AssertionError(f"{what} exited:\n{proc.output()[-2000:]}")


# -- gateways -------------------------------------------------------------------------
@dataclass
class GatewayHandle(LocalGateway):
    """A started ``tcpdispatch gateway`` with blocking status helpers and raw clients."""

    # What a dispatcher probes: the status URL unless a fault test points it elsewhere.
    check: str = ""

    def __post_init__(self) -> None:
        self.check = self.check or self.status_url

    def status(self) -> dict[str, Any]:
        return dict(get_json(self.status_url, timeout=5))

    def connections(self) -> int | None:
        """Held connections from ``/status``; None while the gateway does not answer."""
        try:
            return int(self.status()["connections"])
        except OSError:
            return None

    def metrics(self) -> str:
        url = f"http://{self.host}:{self.status_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
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
        """A raw protocol connection (:class:`harness.probe.ProbeClient`)."""
        from .probe import ProbeClient

        return await ProbeClient.connect(self.host, self.port, source=source)

    def entry(self, *, weight: bool = True) -> dict[str, Any]:
        """This gateway as a ``[[gateways]]`` entry (id, address, check, and weight)."""
        keys: dict[str, Any] = {"id": self.id, "address": self.address, "check": self.check}
        return keys | ({"weight": self.weight} if weight else {})


def start_gateway(
    start: Callable[..., Any],
    gid: str = "g1",
    *extra: str,
    wait: bool = True,
    timeout: float = 30.0,
    **options: Any,
) -> GatewayHandle:
    """Start ``tcpdispatch gateway --id gid`` on free ports through ``start`` and, with ``wait``,
    return once it printed READY.

    ``options`` are those of :func:`tcpdispatch.procs.launch_gateway` (``secret_file``, else
    ``--no-ticket``; ``weight``, ``agent``, ``host``, ``env``, ``log_level``,
    ``admin_token_file`` for ``POST /drain``, ``prefix``).
    """
    gw = GatewayHandle(**vars(launch_gateway(start, gid, *extra, **options)))
    if wait:
        wait_ready(gw.proc, f"gateway {gid}", timeout)
        if gw.ready_line not in gw.proc.output():
            raise AssertionError(
                f"gateway {gid} printed an unexpected READY line:\n{gw.proc.output()[-2000:]}"
            )
    return gw


def restart_gateway(start: Callable[..., Any], gw: GatewayHandle, timeout: float = 20.0) -> None:
    """Start a gateway that was stopped (say SIGKILLed) again with its own command line, so on
    its own ports; returns once it printed READY."""
    gw.proc.popen.wait(timeout=scaled(5))
    gw.proc = start(list(gw.proc.args), name=gw.id)
    wait_ready(gw.proc, f"gateway {gw.id} (restarted)", timeout)


def named_gateways(dispatch: Callable[[str], Any], n: int = 20) -> set[str]:
    """Every gateway id named (primary or alternate) in ``n`` answers of ``dispatch(client_id)``."""
    ids: set[str] = set()
    for i in range(n):
        doc = dispatch(f"probe-{i}")
        ids.add(doc["gateway"]["id"])
        ids.update(a["id"] for a in doc["alternates"])
    return ids


# -- dispatchers ----------------------------------------------------------------------
GatewaySpec = GatewayHandle | Mapping[str, Any]


def write_dispatcher_config(
    workdir: Path,
    gateways: Sequence[GatewaySpec] = (),
    *,
    port: int | None = None,
    name: str | None = None,
    **description: Any,
) -> tuple[int, Path]:
    """Write a dispatcher config listening on ``port`` (a free one by default) over ``gateways``
    (handles, or ready ``[[gateways]]`` mappings) to ``workdir/NAME.toml``; returns (port, path).

    ``description`` is what :func:`tcpdispatch.dispatcher.config_writer.dispatcher_toml` takes
    besides ``listen`` and ``gateways``: ``secret_file``, ``admin_token_file``, ``dispatcher``
    (more ``[dispatcher]`` keys), ``sections``, ``extra`` (a TOML fragment).
    """
    port = port or free_port()
    entries = [g.entry() if isinstance(g, GatewayHandle) else dict(g) for g in gateways]
    path = workdir / f"{name or f'dispatcher-{port}'}.toml"
    write_dispatcher_toml(path, listen=f"127.0.0.1:{port}", gateways=entries, **description)
    return port, path


@dataclass
class RealDispatcher:
    """A started ``tcpdispatch dispatcher``; :meth:`restart` starts it again on the same config."""

    url: str
    proc: Any
    config: Path | None = None
    relaunch: Callable[[], Any] | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def gateways(self) -> dict[str, dict[str, Any]]:
        """``GET /v1/gateways`` by gateway id."""
        body = get_json(self.url + "/v1/gateways")
        items = body["gateways"] if isinstance(body, dict) else body
        return {g["id"]: g for g in items}

    pool = gateways

    def states(self) -> dict[str, str]:
        return {gid: g["state"] for gid, g in self.gateways().items()}

    def dispatch(self, client_id: str) -> dict[str, Any]:
        return dict(get_json(f"{self.url}/v1/dispatch?client_id={client_id}"))

    def handed_out(self, n: int = 20) -> set[str]:
        """Every gateway id named (as primary or alternate) in ``n`` dispatch answers."""
        return named_gateways(self.dispatch, n)

    def all_healthy(self, expected: int) -> bool:
        pool = self.gateways()
        return len(pool) == expected and all(g.get("healthy") for g in pool.values())

    def restart(self) -> None:
        """Start the process again (same port and config), without waiting."""
        if self.relaunch is None:
            raise RuntimeError("this dispatcher was not started by launch_dispatcher")
        self.proc = self.relaunch()


def launch_dispatcher(
    start: Callable[..., Any],
    port: int,
    config: Path,
    *,
    log_level: str | None = None,
    name: str = "dispatcher",
) -> RealDispatcher:
    """Start ``tcpdispatch dispatcher --config CONFIG`` (listening on ``port``); no waiting."""
    args = [
        *TCPDISPATCH,
        *(["--log-level", log_level] if log_level else []),
        "dispatcher",
        "--config",
        str(config),
    ]

    def run() -> Any:
        return start(args, name=name)

    return RealDispatcher(f"http://127.0.0.1:{port}", run(), config, run)


def start_dispatcher(
    start: Callable[..., Any],
    workdir: Path,
    gateways: Sequence[GatewaySpec],
    secret_file: Path | str,
    *,
    extra_toml: str = "",
    timeout: float = 30.0,
    wait_healthy: bool = True,
    log_level: str | None = None,
    **description: Any,
) -> RealDispatcher:
    """A ``tcpdispatch dispatcher`` over ``gateways`` (health interval 0.25 s unless ``sections``
    says otherwise), returned once it printed READY and, with ``wait_healthy``, reports every
    gateway healthy. ``description``: see :func:`write_dispatcher_config`."""
    sections = {"health": {"interval": 0.25}, **description.pop("sections", {})}
    port, config = write_dispatcher_config(
        workdir,
        gateways,
        secret_file=secret_file,
        extra=extra_toml,
        sections=sections,
        **description,
    )
    d = launch_dispatcher(start, port, config, log_level=log_level)
    wait_ready(d.proc, "dispatcher", timeout)
    if wait_healthy:
        wait_until(lambda: d.all_healthy(len(gateways)), timeout, 0.05, what="all gateways healthy")
    return d


# -- third-party peers ----------------------------------------------------------------
def haproxy_stats(
    sock_path: Path, backend: str = "gateways", timeout: float = 2.0
) -> dict[str, dict[str, str]]:
    """HAProxy's ``show stat`` CSV rows of ``backend``'s servers (not FRONTEND/BACKEND), by name."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
    return {
        r["svname"]: r
        for r in rows
        if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")
    }
