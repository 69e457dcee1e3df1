"""A gateway handler that burns CPU on every message, then echoes it (loaded by real gateways in
tests)."""

from __future__ import annotations

import time
from typing import Any

from tcpdispatch.gateway.handlers import EchoHandler

BURN_S = 0.003


class BurnHandler(EchoHandler):
    """Echo, after ``BURN_S`` seconds of pure CPU per message: a worker that saturates under
    load."""

    def on_message(self, session: Any, payload: bytes) -> None:
        end = time.thread_time() + BURN_S
        while time.thread_time() < end:
            pass
        super().on_message(session, payload)
