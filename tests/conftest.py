"""Fixtures shared by the whole suite; plain helpers live in tests/helpers.py."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Proc


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Factory starting real processes; all are killed at teardown, with their logs shown on
    failure."""
    started: list[Proc] = []

    def start(args: list[str], name: str | None = None, env: dict[str, str] | None = None) -> Proc:
        name = name or Path(args[0]).name
        p = Proc(args, tmp_path / f"{name}-{len(started)}.log", env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
    for p in started:
        out = p.output()
        if out:
            sys.stdout.write(f"\n--- output of {' '.join(p.args[:4])} ---\n{out[-4000:]}\n")


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "ticket.secret"
    path.write_text("test-secret-0123456789abcdef\n")
    return path


@pytest.fixture
def admin_token_file(tmp_path: Path) -> Path:
    """A gateway ``--admin-token-file`` (``start_gateway(..., admin_token_file=...)``)."""
    path = tmp_path / "gateway-admin.token"
    path.write_text("test-gateway-admin-token-0123\n")
    return path
