"""Start a whole tcpdispatch system on loopback: gateways and a dispatcher as child processes.

The runtime of ``tcpdispatch demo``. The test suite and the benchmarks start systems
with their own harness (``tests/harness``), built on the same :mod:`tcpdispatch.procs`
and :mod:`tcpdispatch.dispatcher.config_writer`. Every child runs in its own process
group and is killed on ``close()``, so nothing is left behind even when the caller is
interrupted.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tcpdispatch.dispatcher.config_writer import write_dispatcher_toml
from tcpdispatch.procs import TCPDISPATCH, LocalGateway, Proc, free_port, launch_gateway, scaled
from tcpdispatch.tickets import generate_secret


@dataclass
class Cluster:
    """A dispatcher and its gateways running as child processes in ``workdir``."""

    workdir: Path
    host: str = "127.0.0.1"
    gateways: dict[str, LocalGateway] = field(default_factory=dict)
    dispatcher: Proc | None = None
    dispatcher_url: str = ""
    children: list[Proc] = field(default_factory=list)
    _owns_workdir: bool = False

    @classmethod
    def temporary(cls) -> Cluster:
        """A cluster in a new temporary directory, removed by :meth:`close` (unless kept)."""
        cluster = cls(Path(tempfile.mkdtemp(prefix="tcpdispatch-")))
        cluster._owns_workdir = True
        return cluster

    def __post_init__(self) -> None:
        self.secret_file = self.workdir / "ticket.secret"
        self.token_file = self.workdir / "admin.token"
        if not self.secret_file.exists():
            self.secret_file.write_text(generate_secret() + "\n")
            self.token_file.write_text(generate_secret() + "\n")
        self.admin_token = self.token_file.read_text().strip()

    # -- processes -----------------------------------------------------------
    def _start(self, args: list[str], name: str) -> Proc:
        """Start a child logging to ``workdir/NAME.log``
        (appended: a restarted child keeps its history)."""
        child = Proc(args, self.workdir / f"{name}.log", name=name, append=True)
        self.children.append(child)
        return child

    def start_gateway(self, gid: str, weight: int = 1, *extra: str) -> LocalGateway:
        """Start a gateway (tickets on, the cluster's admin token for ``POST /drain``);
        :meth:`wait_ready` waits for it."""
        gw = launch_gateway(
            self._start,
            gid,
            *extra,
            secret_file=self.secret_file,
            weight=weight,
            host=self.host,
            log_level="warning",
            admin_token_file=self.token_file,
        )
        self.gateways[gid] = gw
        return gw

    def write_config(
        self,
        policy: str = "p2c",
        extra: str = "",
        sections: dict[str, dict[str, Any]] | None = None,
    ) -> Path:
        """The dispatcher's config over the started gateways: ``sections`` by name
        (``[health]`` defaults to a 0.25 s interval), ``extra`` a TOML fragment."""
        port = free_port(self.host)
        self.dispatcher_url = f"http://{self.host}:{port}"
        gateways = [
            {"id": gw.id, "address": gw.address, "check": gw.status_url, "weight": gw.weight}
            for gw in self.gateways.values()
        ]
        return write_dispatcher_toml(
            self.workdir / "dispatcher.toml",
            listen=f"{self.host}:{port}",
            gateways=gateways,
            secret_file=self.secret_file,
            admin_token_file=self.token_file,
            dispatcher={"policy": policy},
            sections={"health": {"interval": 0.25}, **(sections or {})},
            extra=extra,
        )

    def start_dispatcher(
        self,
        policy: str = "p2c",
        extra: str = "",
        sections: dict[str, dict[str, Any]] | None = None,
    ) -> Proc:
        """Start the dispatcher over the started gateways (see :meth:`write_config`)."""
        config = self.write_config(policy, extra, sections)
        self.dispatcher = self._start(
            [*TCPDISPATCH, "--log-level", "warning", "dispatcher", "--config", str(config)],
            "dispatcher",
        )
        return self.dispatcher

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every gateway answers /status and the dispatcher has them all up."""
        deadline = time.monotonic() + scaled(timeout)
        async with aiohttp.ClientSession() as http:
            while True:
                dead = [c.name for c in self.children if not c.alive and c.name in self.gateways]
                if self.dispatcher is not None and not self.dispatcher.alive:
                    dead.append("dispatcher")
                if dead:
                    raise RuntimeError(f"{', '.join(dead)} exited; see logs in {self.workdir}")
                try:
                    pool = await self.pool(http)
                    if pool and all(g.get("healthy") for g in pool.values()):
                        return
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"cluster not ready after {timeout}s; see logs in {self.workdir}"
                    )
                await asyncio.sleep(0.1)

    # -- HTTP helpers ----------------------------------------------------------
    async def pool(self, http: aiohttp.ClientSession) -> dict[str, dict[str, Any]]:
        """The dispatcher's view of the pool, by gateway id."""
        async with http.get(
            f"{self.dispatcher_url}/v1/gateways", timeout=aiohttp.ClientTimeout(total=2)
        ) as r:
            body = await r.json()
        items = body["gateways"] if isinstance(body, dict) else body
        return {g["id"]: g for g in items}

    async def gateway_status(self, http: aiohttp.ClientSession, gid: str) -> dict[str, Any] | None:
        gw = self.gateways[gid]
        if not gw.proc.alive:
            return None
        try:
            async with http.get(gw.status_url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                return dict(await r.json())
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None

    async def admin(
        self, http: aiohttp.ClientSession, method: str, path: str, body: Any = None
    ) -> int:
        """Call the dispatcher's admin API; returns the HTTP status."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        data = None if body is None else json.dumps(body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with http.request(
            method, f"{self.dispatcher_url}{path}", data=data, headers=headers
        ) as r:
            await r.read()
            return r.status

    async def drain_gateway(self, http: aiohttp.ClientSession, gid: str) -> int:
        """Ask the gateway itself to drain (RECONNECT its
        clients over its drain window, then exit)."""
        gw = self.gateways[gid]
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        async with http.post(f"http://{gw.host}:{gw.status_port}/drain", headers=headers) as r:
            return r.status

    def start_gateway_admin(self, gid: str, weight: int = 1, *extra: str) -> LocalGateway:
        """:meth:`start_gateway` with the cluster's admin
        token on the status port (POST /shed, /drain)."""
        return self.start_gateway(gid, weight, "--admin-token-file", str(self.token_file), *extra)

    def rebalance_section(self, **settings: float | str) -> dict[str, Any]:
        """The keys of a ``[rebalance]`` section that lets the dispatcher shed on these
        gateways (with the cluster's admin token)."""
        return {"gateway_admin_token_file": str(self.token_file), **settings}

    async def rebalance(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """The dispatcher's ``GET /v1/rebalance``."""
        async with http.get(
            f"{self.dispatcher_url}/v1/rebalance", timeout=aiohttp.ClientTimeout(total=2)
        ) as r:
            return dict(await r.json())

    def stop(self) -> None:
        """Kill every child (and its workers); the work directory and its logs stay."""
        for child in self.children:
            child.stop()

    def close(self, *, keep_logs: bool = False) -> None:
        """Kill every child and remove a temporary work directory unless ``keep_logs``;
        safe to call twice."""
        self.stop()
        if self._owns_workdir and not keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._owns_workdir = False
