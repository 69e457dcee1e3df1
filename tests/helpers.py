"""Shared test helpers (importable as ``helpers``): the harness's most used names
(:mod:`harness`) plus the pytest-only bits (skipping on missing binaries).

Every wait polls with a deadline scaled by TCPDISPATCH_TIMEOUT_FACTOR (default
1) so slow machines can stretch all timeouts at once.
"""

from __future__ import annotations

import os
import shutil

import pytest
from harness import (
    TCPDISPATCH,
    GatewayHandle,
    Proc,
    async_wait_until,
    free_port,
    get_json,
    named_gateways,
    scaled,
    timeout_factor,
    wait_until,
)

__all__ = [
    "REQUIRE_INTEGRATION",
    "TCPDISPATCH",
    "TIMEOUT_FACTOR",
    "GatewayHandle",
    "Proc",
    "async_wait_until",
    "free_port",
    "get_json",
    "named_gateways",
    "require_binary",
    "require_speedups",
    "scaled",
    "wait_until",
]

TIMEOUT_FACTOR = timeout_factor()
REQUIRE_INTEGRATION = os.environ.get("TCPDISPATCH_REQUIRE_INTEGRATION") == "1"


def require_binary(name: str) -> str:
    """Path of ``name``; skips the test when missing, fails under
    TCPDISPATCH_REQUIRE_INTEGRATION=1."""
    path = shutil.which(name) or next(
        (
            p
            for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}")
            if os.access(p, os.X_OK)
        ),
        None,
    )
    if path:
        return path
    msg = f"{name} is not installed (Debian package; `bash .ci/run` installs it)"
    if REQUIRE_INTEGRATION:
        pytest.fail(msg + " and TCPDISPATCH_REQUIRE_INTEGRATION=1")
    pytest.skip(msg)


def require_speedups() -> None:
    """Skips when the C accelerator is not built; fails under TCPDISPATCH_REQUIRE_INTEGRATION=1."""
    from tcpdispatch.dispatcher import fastpath

    if fastpath.FastDispatch is not None:
        return
    msg = (
        "tcpdispatch._speedups is not built (needs gcc, the Python headers and libssl-dev; "
        "`make install` builds it)"
    )
    if REQUIRE_INTEGRATION:
        pytest.fail(msg + " and TCPDISPATCH_REQUIRE_INTEGRATION=1")
    pytest.skip(msg)
