"""Helpers for the replica integration tests: TCP sinks as gateways, replicas, HTTP calls.

Replicas are dispatchers started with the harness (:func:`harness.launch_dispatcher`).

Import as ``from store.replica_kit import ...`` (tests/ is on the path).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Proc, launch_dispatcher, scaled, wait_ready, write_dispatcher_config

ADMIN = "admin-token-for-replicas"


class Sink:
    """A listening socket that accepts and closes: enough for a ``tcp://`` health check."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                conn.close()
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Replica:
    """One ``tcpdispatch dispatcher`` process and a small JSON HTTP client for it."""

    def __init__(self, proc: Proc, port: int) -> None:
        self.proc, self.port = proc, port

    def request(
        self, method: str, path: str, body: Any = None, admin: bool = False
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(5))
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if admin:
            headers["Authorization"] = f"Bearer {ADMIN}"
        try:
            conn.request(
                method,
                path,
                body=json.dumps(body).encode() if body is not None else None,
                headers=headers,
            )
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def gateway(self, gid: str) -> dict[str, Any] | None:
        status, doc = self.request("GET", f"/v1/gateways/{gid}")
        return doc if status == 200 else None

    def answer(self, client_id: str) -> tuple[str, ...]:
        """The gateway ids of one dispatch answer (primary first), or () on 503."""
        status, doc = self.request("GET", f"/v1/dispatch?client_id={client_id}")
        if status != 200:
            return ()
        return (doc["gateway"]["id"], *(a["id"] for a in doc["alternates"]))

    def store_up(self) -> bool:
        return bool(self.request("GET", "/healthz")[1]["store"]["available"])


def write_common(tmp: Path) -> None:
    (tmp / "admin.token").write_text(ADMIN + "\n")
    if not (tmp / "ticket.secret").exists():
        (tmp / "ticket.secret").write_text("test-secret-0123456789abcdef\n")


def start_replica(
    procs: Callable[..., Proc],
    tmp: Path,
    name: str,
    redis_url: str,
    gateways: list[tuple[str, int]],
    *,
    extra: str = "",
    port: int | None = None,
) -> Replica:
    """Start one replica sharing ``redis_url``; ``gateways`` are (id, port) with tcp:// checks;
    ``extra``: a TOML fragment (bare keys go to [dispatcher])."""
    write_common(tmp)
    port, cfg = write_dispatcher_config(
        tmp,
        [{"id": gid, "address": f"127.0.0.1:{p}"} for gid, p in gateways],
        port=port,
        name=name,
        secret_file="ticket.secret",
        admin_token_file="admin.token",
        dispatcher={"register_unknown": True, "trusted_proxies": ["127.0.0.1/32"]},
        sections={
            "health": {"interval": 0.1, "ttl": 1.0},
            "balancing": {"slow_start_s": 0},
            "store": {"url": redis_url, "prefix": "it:", "resync_interval": 0.5, "timeout": 0.3},
        },
        extra=extra,
    )
    d = launch_dispatcher(procs, port, cfg, name=f"dispatcher-{name}")
    wait_ready(d.proc, f"replica {name}", 20)
    return Replica(d.proc, port)
