"""Checks every policy runs on its snapshot once, at build time (never per pick)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tcpdispatch.balancing.base import Candidate


def check_candidates(candidates: Sequence[Candidate]) -> None:
    """ValueError unless ids are unique and weights finite and > 0 (build_candidates ensures it)."""
    seen: set[str] = set()
    for c in candidates:
        if c.id in seen:
            raise ValueError(f"duplicate candidate id {c.id!r}")
        seen.add(c.id)
        if not (c.weight > 0 and math.isfinite(c.weight)):
            raise ValueError(
                f"candidate {c.id!r}: weight must be a finite number > 0, got {c.weight!r}"
            )
