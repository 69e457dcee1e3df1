"""Real nginx in front of two replicas: killing one replica mid-load fails no client request."""

from __future__ import annotations

import http.client
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Proc, free_port, require_binary, scaled, wait_until
from store.redis_server import RedisServer
from store.replica_kit import Sink, start_replica

pytestmark = pytest.mark.integration

NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;

    # Same upstream/location settings as deploy/nginx/dispatcher.conf, on test ports.
    upstream tcpdispatch_dispatchers {{
        server 127.0.0.1:{a} max_fails=1 fail_timeout=5s;
        server 127.0.0.1:{b} max_fails=1 fail_timeout=5s;
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://tcpdispatch_dispatchers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_connect_timeout 1s;
            proxy_read_timeout 5s;
            proxy_next_upstream error timeout http_502 http_504;
            proxy_next_upstream_tries 2;
            proxy_next_upstream_timeout 3s;
        }}
    }}
}}
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def test_replica_killed_mid_load_fails_no_dispatch(
    tmp_path: Path,
    procs: Callable[..., Proc],
    redis_server: RedisServer,
) -> None:
    nginx = require_binary("nginx")
    sinks = [Sink(), Sink()]
    try:
        gws = [("g1", sinks[0].port), ("g2", sinks[1].port)]
        a = start_replica(procs, tmp_path, "a", redis_server.url, gws)
        b = start_replica(procs, tmp_path, "b", redis_server.url, gws)
        for r in (a, b):
            wait_until(lambda r=r: r.answer("warm"), 5, what="replica dispatches")
        port = free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp_path, a=a.port, b=b.port, port=port))
        proc = procs([nginx, "-c", str(conf), "-p", str(tmp_path)], name="nginx")

        def via_nginx(conn: http.client.HTTPConnection, cid: str) -> int:
            conn.request("GET", f"/v1/dispatch?client_id={cid}")
            resp = conn.getresponse()
            resp.read()
            return resp.status

        def ready() -> bool:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                return via_nginx(c, "probe") == 200
            finally:
                c.close()

        wait_until(ready, 10, 0.05, what="nginx up")
        assert proc.popen.poll() is None, proc.output()

        stop = threading.Event()
        results: list[tuple[int, int]] = []  # (thread, status or -1 for a transport error)

        def client(n: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(5))
            i = 0
            while not stop.is_set() and i < 20_000:
                i += 1
                try:
                    status = via_nginx(conn, f"t{n}-{i}")
                except (OSError, http.client.HTTPException):
                    status = -1
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(5))
                results.append((n, status))
            conn.close()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(results) >= 200, 10, what="load running")
            a.proc.popen.send_signal(signal.SIGKILL)  # mid-load, no graceful shutdown
            killed_at = len(results)
            wait_until(lambda: len(results) >= killed_at + 400, 15, what="load after the kill")
        finally:
            stop.set()
            for t in threads:
                t.join(scaled(10))
        failed = [s for _, s in results if s != 200]
        assert not failed, (
            f"{len(failed)} of {len(results)} dispatches failed: {sorted(set(failed))}"
        )
        assert b.request("GET", "/healthz")[0] == 200
    finally:
        for s in sinks:
            s.close()
