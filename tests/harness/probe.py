"""A minimal asyncio client for driving a gateway in tests and benchmarks.

It speaks the wire protocol through the sans-I/O :class:`Connection` (client
role) over a plain asyncio stream; it makes no decisions (no reconnects, no
automatic pings) so tests see exactly what the gateway sends. Get one from a started
gateway with ``await gw.client()`` (:class:`harness.GatewayHandle`).
"""

from __future__ import annotations

import asyncio
import socket

from tcpdispatch.errors import RemoteProtocolError
from tcpdispatch.protocol import Connection, Frame, Hello, Ping, Role, State

__all__ = ["ProbeClient"]


class ProbeClient:
    """One raw connection to a gateway."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = Connection(Role.CLIENT)
        self._frames: list[Frame] = []
        self.eof = False

    @classmethod
    async def connect(
        cls, host: str, port: int, *, source: str | None = None, timeout: float = 5.0
    ) -> ProbeClient:
        """Open a TCP connection, optionally from a given local source address."""
        sock = None
        if source is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((source, 0))
            sock.setblocking(False)
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, (host, port)), timeout
            )
            reader, writer = await asyncio.open_connection(sock=sock)
        else:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        return cls(reader, writer)

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out and not self.writer.is_closing():
            self.writer.write(out)

    async def send(self, frame: Frame) -> None:
        self.conn.send(frame)
        self._flush()
        await self.writer.drain()

    async def send_data(self, payload: bytes) -> None:
        self.conn.send_data(payload)
        self._flush()
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def hello(self, ticket: str = "", client_id: str = "c1", timeout: float = 5.0) -> Frame:
        """Send HELLO and return the gateway's answer (WELCOME or ERROR)."""
        await self.send(Hello(ticket, client_id))
        return await self.recv(timeout)

    async def ping(self, nonce: int = 1) -> None:
        await self.send(Ping(nonce))

    async def recv(self, timeout: float = 5.0) -> Frame:
        """The next frame; raises EOFError when the gateway closed, TimeoutError when silent."""

        async def read() -> Frame:
            while not self._frames:
                if self.eof:
                    raise EOFError("gateway closed the connection")
                chunk = await self.reader.read(65536)
                if not chunk:
                    self.eof = True
                    continue
                try:
                    self._frames.extend(self.conn.receive_data(chunk))
                except RemoteProtocolError:
                    self.eof = True
            return self._frames.pop(0)

        return await asyncio.wait_for(read(), timeout)

    async def recv_all(self, timeout: float = 5.0) -> list[Frame]:
        """Every frame until the gateway closes the connection (bounded by ``timeout``)."""
        frames: list[Frame] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            try:
                frames.append(await self.recv(max(0.0, end - loop.time())))
            except EOFError:
                return frames

    @property
    def is_open(self) -> bool:
        return self.conn.state in (State.OPEN, State.DRAINING) and not self.eof

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
