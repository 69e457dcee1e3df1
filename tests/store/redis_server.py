"""A throwaway redis-server on a free loopback port (no persistence), for store and replica tests.

Import as ``from store.redis_server import RedisServer`` (tests/ is on the path).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from helpers import Proc, free_port, require_binary, scaled


class RedisServer:
    """``redis-server --port P --save "" --appendonly no``; ``kill()`` and ``start()`` again on
    the same port."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.binary = require_binary("redis-server")
        self.tmp = tmp
        self.port = port or free_port()
        self.proc: Proc | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.starts += 1
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.tmp),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        self.proc = Proc(args, self.tmp / f"redis-{self.starts}.log")
        deadline = time.monotonic() + scaled(10)
        while not self.ping():
            if self.proc.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start: {self.proc.output()[-2000:]}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL (no clean shutdown): what a crash looks like to the replicas."""
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def stop(self) -> None:
        self.kill()
