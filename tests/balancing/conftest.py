"""Fixtures for the balancing tests: synthetic candidate pools."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from tcpdispatch.balancing import Candidate, LoadCounter

PoolFactory = Callable[..., list[Candidate]]


def make_pool(
    weights: Sequence[float],
    *,
    loads: Sequence[int] | None = None,
    limits: Sequence[int | None] | None = None,
    prefix: str = "g",
) -> list[Candidate]:
    """Candidates ``g0..gN`` with the given weights, reported loads and limits."""
    out = []
    for i, w in enumerate(weights):
        load = LoadCounter(reported=loads[i] if loads else 0)
        limit = limits[i] if limits else None
        out.append(Candidate(f"{prefix}{i}", "127.0.0.1", 9000 + i, float(w), limit, load))
    return out


@pytest.fixture
def pool() -> PoolFactory:
    return make_pool
