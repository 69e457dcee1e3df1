"""Fixtures for store tests: a real redis-server per test (skipped when not installed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
