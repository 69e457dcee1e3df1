"""The one rule for gateway ids, shared by the gateway (``--id``) and the dispatcher
(config file, admin API, push heartbeats), so an id one accepts the other accepts too.

A gateway id travels in URLs (``/v1/gateways/{id}``), in tickets and in
Prometheus labels, so it is kept to 1..64 bytes of printable ASCII without
spaces or ``/``.
"""

from __future__ import annotations

MAX_GATEWAY_ID = 64
"""Longest gateway id, in bytes."""


def gateway_id_problem(text: object) -> str | None:
    """Why ``text`` is not a usable gateway id, or None when it is."""
    if not isinstance(text, str) or not text:
        return "must be a non-empty string"
    if len(text.encode()) > MAX_GATEWAY_ID:
        return f"must be at most {MAX_GATEWAY_ID} bytes"
    if not all(33 <= ord(c) < 127 for c in text) or "/" in text:
        return "may only contain printable ASCII without spaces or '/'"
    return None
