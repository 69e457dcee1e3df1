"""Many gateways' status endpoints in one process, for the health-scale benchmark.

``python -m bench.health_fleet --count K --first-port P --ports-file F`` listens
on K ports (from P upwards, skipping taken ones), one per simulated gateway,
writes the ports to F as JSON and prints READY. Each port answers like a
gateway's status port:

- ``GET /status?watch=SECONDS``: the watch stream, produced by the gateway's own
  :class:`tcpdispatch.gateway.watch.WatchFeed` (the protocol under test);
- ``GET /status``: one JSON document (keep-alive unless the client asks to
  close), what HAProxy's ``option httpchk`` and polling dispatchers read.

One timer per process serves every stream (a real gateway has one stream per
dispatcher replica; here one process stands in for thousands of gateways), and
polls each feed once per tick (nothing urgent ever changes here). Every
second about a tenth of the gateways change their connection count, so the
streams carry load updates as well as bare ticks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import socket
import sys
from pathlib import Path
from typing import Any

from tcpdispatch import aio
from tcpdispatch.gateway.watch import CONTENT_TYPE, WATCH_HEADER, WatchFeed, parse_watch_interval

STEP_S = 0.05


class Fleet:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs
        self.streams: set[StatusConn] = set()
        self.rng = random.Random(1)
        self.version = [0] * len(docs)  # bumped on every change of a gateway's document

    def sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for c in list(self.streams):
            feed = c.feed
            if feed is not None and now >= c.due:
                version = self.version[c.index]
                line = feed.poll(self.docs[c.index], now, changed=version != c.seen)
                c.seen = version
                if line:
                    c.transport.write(b"%x\r\n%s\r\n" % (len(line), line))
                c.due = feed.due  # no urgent changes here: poll once per tick
        loop.call_later(STEP_S, self.sweep)

    def churn(self) -> None:
        for i in self.rng.sample(range(len(self.docs)), max(1, len(self.docs) // 10)):
            self.docs[i]["connections"] = self.rng.randrange(0, 1000)
            self.version[i] += 1
        asyncio.get_running_loop().call_later(1.0, self.churn)


class StatusConn(asyncio.Protocol):
    __slots__ = ("buf", "due", "feed", "fleet", "index", "seen", "transport")

    def __init__(self, fleet: Fleet, index: int) -> None:
        self.fleet = fleet
        self.index = index
        self.transport: Any = None
        self.buf = b""
        self.feed: WatchFeed | None = None
        self.due = 0.0
        self.seen = -1  # document version last given to the feed

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.feed is not None:
            return
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self._request(head)
            if self.feed is not None:
                return

    def _request(self, head: bytes) -> None:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        target = line.split(" ")[1] if line.count(" ") >= 2 else ""
        close = b"connection: close" in head.lower() or line.endswith("HTTP/1.0")
        if "watch=" in target:
            try:
                interval = parse_watch_interval(target.split("watch=", 1)[1].split("&", 1)[0])
            except ValueError:
                self._answer(400, b'{"error":"bad watch interval"}', True)
                return
            self.transport.write(
                "HTTP/1.1 200 OK\r\nContent-Type: "
                f"{CONTENT_TYPE}\r\n{WATCH_HEADER}: {interval:g}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode()
            )
            self.feed = WatchFeed(interval)
            self.fleet.streams.add(self)
            self.due = 0.0
            return
        self._answer(200, json.dumps(self.fleet.docs[self.index]).encode(), close)

    def _answer(self, status: int, body: bytes, close: bool) -> None:
        reason = "OK" if status == 200 else "Bad Request"
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(body)}\r\n"
            f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n".encode()
            + body
        )
        if close:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fleet.streams.discard(self)


async def serve(count: int, first_port: int, ports_file: str) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.get_running_loop()
    docs: list[dict[str, Any]] = []
    fleet = Fleet(docs)
    ports: list[int] = []
    port = first_port
    servers = []
    while len(ports) < count:
        if port > 65000:
            raise SystemExit(f"ran out of ports after {len(ports)}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            port += 1
            continue
        sock.listen(512)
        index = len(ports)
        gid = f"f{port}"
        docs.append(
            {
                "id": gid,
                "state": "serving",
                "connections": 0,
                "capacity": 1_000_000,
                "address": f"127.0.0.1:{port}",
                "cpu": 0.1,
                "busy": 0.1,
                "lag_ms": 0,
            }
        )
        servers.append(await loop.create_server(lambda i=index: StatusConn(fleet, i), sock=sock))  # type: ignore[misc]
        ports.append(port)
        port += 1
    fleet.version = [0] * len(docs)
    Path(ports_file).write_text(json.dumps(ports))
    loop.call_later(STEP_S, fleet.sweep)
    loop.call_later(1.0, fleet.churn)
    print("READY", flush=True)
    await asyncio.Event().wait()


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.health_fleet", description=__doc__)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--first-port", type=int, required=True)
    ap.add_argument("--ports-file", required=True)
    args = ap.parse_args()
    aio.run(serve(args.count, args.first_port, args.ports_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
