"""``POST /shed`` on the status port: the rebalancer's order to move N sessions elsewhere.

Body (JSON): ``{"count": N, "window_s": W, "min_age_s": A, "reason": "..."}``; only
``count`` is required (``window_s`` defaults to 1, ``min_age_s`` to 0). Answers
``202 {"shedding": n, ...}`` where ``n`` is how many sessions were chosen (fewer than
``count`` when not enough are older than ``min_age_s``). It changes state, so it needs
the admin token (``--admin-token-file``): 401 with a wrong or missing token, 403 when
the gateway has none configured. A draining gateway answers 409 (it moves everyone).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tcpdispatch.httputil import check_bearer, error_body

log = logging.getLogger("tcpdispatch.gateway.status")

MAX_BODY = 4096
MAX_COUNT = 10_000_000

ShedFn = Callable[[int, float, float], int]


def _error(status: int, error: str, detail: str, **headers: str) -> web.Response:
    return web.Response(
        body=error_body(error, detail),
        status=status,
        content_type="application/json",
        headers=headers or None,
    )


def _number(doc: dict[str, Any], key: str, default: float, hi: float) -> float:
    v = doc.get(key, default)
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or not math.isfinite(v)
        or not 0 <= v <= hi
    ):
        raise ValueError(f"{key} must be a number from 0 to {hi:g}, got {v!r}")
    return float(v)


def parse_order(raw: bytes) -> tuple[int, float, float, str]:
    """Validate a shed body; ValueError says what is wrong."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValueError("body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("body must be a JSON object")  # noqa: TRY004 - one error type for bad input
    unknown = sorted(set(doc) - {"count", "window_s", "min_age_s", "reason"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    count = doc.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be an integer from 1 to {MAX_COUNT}, got {count!r}")
    window = _number(doc, "window_s", 1.0, 3600.0)
    min_age = _number(doc, "min_age_s", 0.0, 86_400.0)
    reason = doc.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 200:
        raise ValueError("reason must be a string of at most 200 characters")
    return count, window, min_age, reason


async def post_shed(
    request: web.Request, *, gateway_id: str, admin_token: str | None, draining: bool, shed: ShedFn
) -> web.Response:
    """Handle one ``POST /shed`` (see the module docstring)."""
    if admin_token is None:
        return _error(
            403,
            "forbidden",
            "POST /shed is disabled: no admin token is configured; "
            "start the gateway with --admin-token-file to enable it",
        )
    if not check_bearer(request.headers.get("Authorization"), admin_token):
        return _error(
            401,
            "unauthorized",
            "POST /shed needs Authorization: Bearer <token>",
            **{"WWW-Authenticate": "Bearer"},
        )
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, "body_too_large", f"request body exceeds {MAX_BODY} bytes")
    raw = b""
    async for chunk in request.content.iter_chunked(1024):
        raw += chunk
        if len(raw) > MAX_BODY:
            return _error(413, "body_too_large", f"request body exceeds {MAX_BODY} bytes")
    try:
        count, window, min_age, reason = parse_order(raw)
    except ValueError as exc:
        return _error(400, "bad_request", str(exc))
    if draining:
        return _error(
            409, "draining", "the gateway is draining: every session is being moved already"
        )
    chosen = shed(count, window, min_age)
    log.info(
        "gateway %s: shed order for %d sessions over %.1fs (older than %.1fs%s): %d chosen",
        gateway_id,
        count,
        window,
        min_age,
        f", {reason}" if reason else "",
        chosen,
    )
    return web.json_response(
        {"shedding": chosen, "asked": count, "window_s": window, "min_age_s": min_age}, status=202
    )
