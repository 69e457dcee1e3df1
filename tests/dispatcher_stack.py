"""A dispatcher's service and router over one pool, wired as the server wires them, for unit
tests."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from tcpdispatch.config import DispatcherConfig
from tcpdispatch.dispatcher.http import Request, Response
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.dispatcher.rebalancer import Rebalancer
from tcpdispatch.dispatcher.routes import Router
from tcpdispatch.dispatcher.service import DispatchService, Stats
from tcpdispatch.health import PushTracker
from tcpdispatch.store import Store


class Stack:
    """``service`` answers dispatches, ``router`` every route; both see ``pool`` and ``stats``."""

    def __init__(
        self,
        config: DispatcherConfig,
        pool: Pool,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        store: Store | None = None,
        tracker: PushTracker | None = None,
        rebalance: Rebalancer | None = None,
        stats: Stats | None = None,
        on_passive: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.stats = stats if stats is not None else Stats()
        extra = {"clock": clock} if clock is not None else {}
        self.service = DispatchService(
            config, pool, stats=self.stats, rebalance=rebalance, rng=rng, **extra
        )
        self.router = Router(
            config,
            pool,
            self.service,
            store=store,
            tracker=tracker,
            rebalance=rebalance,
            on_passive=on_passive,
        )

    def configure(self, config: DispatcherConfig) -> None:
        """A reload, as the server applies it."""
        self.config = config
        self.service.configure(config)
        self.router.configure(config)


class Answer:
    """A Response with decoded headers and a JSON accessor."""

    def __init__(self, response: Response) -> None:
        self.status = response.status
        self.headers = {k.decode(): v.decode() for k, v in response.headers}
        self.body = response.body
        self.response = response

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    stack: Stack,
    method: str,
    path: str,
    query: bytes = b"",
    *,
    body: bytes | None = None,
    json_doc: Any = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    token: str | None = None,
    client: tuple[str, int] = ("10.1.2.3", 40000),
) -> Answer:
    """One request through the router, as the HTTP server hands it over."""
    hdrs = list(headers or [])
    if json_doc is not None:
        body = json.dumps(json_doc).encode()
        hdrs.append((b"content-type", b"application/json"))
    if token is not None:
        hdrs.append((b"authorization", f"Bearer {token}".encode()))
    return Answer(
        await stack.router.handle(Request(method, path, query, hdrs, body or b"", client))
    )
