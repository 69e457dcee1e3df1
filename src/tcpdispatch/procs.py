"""Child processes of a local tcpdispatch system: the demo's runtime, and the test harness's base.

- :data:`TCPDISPATCH`, the command prefix that runs this tcpdispatch with this interpreter;
- :func:`free_port` and :func:`scaled` (a timeout stretched by ``TCPDISPATCH_TIMEOUT_FACTOR``,
  default 1, so a slow machine stretches them all at once);
- :class:`Proc`, a child in its own process group with its output in a file, killed with
  its workers by :meth:`Proc.stop`;
- :class:`LocalGateway` and :func:`launch_gateway`, which starts ``tcpdispatch gateway`` on
  free ports without waiting for it.

Waiting for processes, raw protocol clients and everything else test-only lives in the
test suite's harness (``tests/harness``), which builds on this module.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TCPDISPATCH = [sys.executable, "-m", "tcpdispatch"]
"""Command prefix that runs this tcpdispatch with the current interpreter."""
TIMEOUT_FACTOR_ENV = "TCPDISPATCH_TIMEOUT_FACTOR"


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


class Proc:
    """A real child process in its own session (process group), stdout+stderr in ``log``."""

    def __init__(
        self,
        args: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        *,
        name: str | None = None,
        append: bool = False,
    ) -> None:
        self.args = args
        self.log = log
        self.name = name or Path(args[0]).name
        with open(log, "ab" if append else "wb") as fh:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(
                args,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env} if env else None,
                start_new_session=True,
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


@dataclass
class LocalGateway:
    """A ``tcpdispatch gateway`` started by :func:`launch_gateway`: its ports and process."""

    id: str
    port: int
    status_port: int
    proc: Any  # Proc, or what the caller's ``start`` returned (``output()`` and ``popen``)
    weight: int = 1
    agent_port: int | None = None
    host: str = "127.0.0.1"
    admin_token: str | None = None  # the gateway's --admin-token-file content

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def status_url(self) -> str:
        return f"http://{self.host}:{self.status_port}/status"

    @property
    def ready_line(self) -> str:
        """What the gateway prints once it listens."""
        return f"READY {self.host}:{self.port} status={self.host}:{self.status_port}"


def launch_gateway(
    start: Callable[..., Any],
    gid: str = "g1",
    *extra: str,
    secret_file: Path | str | None = None,
    weight: int = 1,
    agent: bool = False,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    log_level: str | None = None,
    admin_token_file: Path | str | None = None,
    prefix: tuple[str, ...] = (),
    port_host: str | None = None,
) -> LocalGateway:
    """Start ``tcpdispatch gateway --id gid`` on free ``host`` ports through
    ``start(args, name=, env=)`` and return at once (the caller waits for READY).

    Tickets come from ``secret_file``, else ``--no-ticket`` (unless ``extra`` already names
    ``--secret-file`` or ``--no-ticket``). ``agent=True`` also opens the agent-check port.
    ``admin_token_file`` enables ``POST /drain`` and ``/shed``. ``prefix`` goes before the
    command (e.g. ``ip netns exec NAME``); ``port_host`` is where free ports are looked for
    when ``host`` is not reachable from here (an address inside that namespace).
    """
    probe = port_host or host
    port, status = free_port(probe), free_port(probe)
    agent_port = free_port(probe) if agent else None
    if {"--secret-file", "--no-ticket"} & set(extra):
        tickets: list[str] = []
    else:
        tickets = ["--secret-file", str(secret_file)] if secret_file else ["--no-ticket"]
    args = [
        *prefix,
        *TCPDISPATCH,
        *(["--log-level", log_level] if log_level else []),
        "gateway",
        "--id",
        gid,
        "--listen",
        f"{host}:{port}",
        "--status",
        f"{host}:{status}",
        *(["--agent", f"{host}:{agent_port}"] if agent_port else []),
        *tickets,
        *(["--admin-token-file", str(admin_token_file)] if admin_token_file else []),
        *extra,
    ]
    if admin_token_file is None and "--admin-token-file" in extra:
        admin_token_file = extra[list(extra).index("--admin-token-file") + 1]
    admin_token = Path(admin_token_file).read_text().strip() if admin_token_file else None
    proc = start(args, name=gid, env=env) if env else start(args, name=gid)
    return LocalGateway(gid, port, status, proc, weight, agent_port, host, admin_token)
