"""Fixtures for dispatcher unit tests: a config builder, a pool with a fake clock, a router
caller."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dispatcher_stack import Stack, call
from helpers import require_speedups

from tcpdispatch.config import DispatcherConfig, parse_config
from tcpdispatch.dispatcher.pool import Pool
from tcpdispatch.health import ProbeResult
from tcpdispatch.rng import SplitMixRandom

SECRET = "test-secret-0123456789abcdef"
ADMIN = "admin-token-123"


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DispatcherConfig]:
    (tmp_path / "ticket.secret").write_text(SECRET + "\n")
    (tmp_path / "admin.token").write_text(ADMIN + "\n")

    def make(
        gateways: list[dict[str, Any]] | None = None, **sections: dict[str, Any]
    ) -> DispatcherConfig:
        d = {
            "secret_file": "ticket.secret",
            "admin_token_file": "admin.token",
            **sections.pop("dispatcher", {}),
        }
        doc: dict[str, Any] = {
            "dispatcher": d,
            "balancing": {"slow_start_s": 0, **sections.pop("balancing", {})},
        }
        doc.update(sections)
        if gateways is None:
            gateways = [
                {"id": f"g{i}", "address": f"127.0.0.1:{9000 + i}", "weight": i} for i in (1, 2, 3)
            ]
        doc["gateways"] = gateways
        return parse_config(doc, file="test.toml", base=tmp_path, env={})

    return make


def bring_up(
    pool: Pool, *ids: str, connections: int = 0, capacity: int = 10_000, draining: bool = False
) -> None:
    """Feed enough good probe results to bring gateways up (rise)."""
    for gid in ids or list(pool.gateways):
        for _ in range(pool.gateways[gid].health.rise):
            pool.on_result(
                gid,
                ProbeResult(ok=True, connections=connections, capacity=capacity, draining=draining),
            )
    pool.rebuild()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["python", "c"])
def hot_path(request: pytest.FixtureRequest) -> str:
    """Which path answers plain dispatches: a test asking for it runs once on each.

    ``make_app`` builds the app for it (``speedups`` on or off) and checks that the path
    it asked for is the one answering; "c" is skipped when the extension is not built.
    """
    if request.param == "c":
        require_speedups()
    return str(request.param)


@pytest.fixture
def make_app(
    make_config: Callable[..., DispatcherConfig], clock: FakeClock, request: pytest.FixtureRequest
) -> Callable[..., Stack]:
    path = request.getfixturevalue("hot_path") if "hot_path" in request.fixturenames else None

    def make(
        *args: Any,
        up: bool = True,
        seed: int = 7,
        wall: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> Stack:
        if path is not None:
            kwargs["dispatcher"] = {"speedups": path == "c", **kwargs.get("dispatcher", {})}
        cfg = make_config(*args, **kwargs)
        pool = Pool(cfg, clock=clock, rng=SplitMixRandom(seed))
        if up:
            bring_up(pool)
        app = Stack(cfg, pool, rng=random.Random(3), clock=wall)
        if path is not None and cfg.speedups:
            assert app.service.fast is not None, app.service.hot_path_reason()
        return app

    return make


@pytest.fixture
def call_router() -> Callable[..., Any]:
    """``await call_router(stack, method, path, query, ...)`` -> Answer."""
    return call


@pytest.fixture
def up() -> Callable[..., None]:
    """``up(pool, *ids, connections=, capacity=, draining=)`` brings gateways up."""
    return bring_up
