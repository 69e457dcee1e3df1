"""Where the client gets gateway addresses: dispatchers over HTTP and the on-disk cache.

The order and the skip rules are decided in :mod:`tcpdispatch.client.policy`
and :mod:`tcpdispatch.client.client`; this module only performs the I/O.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yarl

from tcpdispatch.client.policy import DispatchAnswer, parse_retry_after
from tcpdispatch.errors import DispatchError

log = logging.getLogger("tcpdispatch.client")

CACHE_VERSION = 1


@dataclass(frozen=True, slots=True)
class DispatchResult:
    """Outcome of one ``GET /v1/dispatch``: an answer, a refusal (503) or a failure."""

    url: str
    answer: DispatchAnswer | None = None
    retry_after: float | None = None  # set on 503
    error: str = ""
    kind: str = ""  # failure kind: timeout | connect | http_NNN | bad_answer | 503

    @property
    def ok(self) -> bool:
        return self.answer is not None


def dispatch_url(url: str, client_id: str) -> str:
    """``URL/v1/dispatch?client_id=...`` with the id percent-encoded by RFC 3986.

    Every byte of the UTF-8 id but the unreserved ones (``A-Z a-z 0-9 - . _ ~``)
    is sent as ``%XX``, so ``+``, ``%``, ``&``, spaces and non-ASCII reach the
    dispatcher unchanged (it reads ``+`` as a literal plus, never as a space).
    """
    return f"{url.rstrip('/')}/v1/dispatch?client_id={quote(client_id, safe='')}"


async def fetch_dispatch(
    session: aiohttp.ClientSession,
    url: str,
    client_id: str,
    timeout: float,
    *,
    leaving: str | None = None,
    zone: str | None = None,
) -> DispatchResult:
    """Ask one dispatcher for a gateway. Never raises for network or HTTP trouble.

    ``leaving``: the gateway that asked us to move for rebalancing (sent as
    ``leaving=ID&reason=rebalance``, so the dispatcher places us below target).
    ``zone``: the client's zone, sent as the ``zone=NAME`` hint (docs/zones.md).
    """
    query = dispatch_url(url, client_id)
    if zone:
        query += f"&zone={quote(zone, safe='')}"
    if leaving:
        query += f"&leaving={quote(leaving, safe='')}&reason=rebalance"
    endpoint = yarl.URL(query, encoded=True)
    try:
        async with session.get(
            endpoint,
            # Time waiting for a pooled connection is our own queue, not the
            # dispatcher being slow: bound only connecting and each read.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
        ) as resp:
            if resp.status == 503:
                body: Any = None
                try:
                    body = await resp.json(content_type=None)
                except (ValueError, aiohttp.ClientError):
                    pass
                default = 1.0
                if isinstance(body, dict) and isinstance(body.get("retry_after_s"), (int, float)):
                    default = float(body["retry_after_s"])
                delay = parse_retry_after(resp.headers.get("Retry-After"), time.time(), default)
                return DispatchResult(
                    url, retry_after=delay, error="503 no gateway available", kind="503"
                )
            if resp.status != 200:
                detail = ""
                if resp.status == 400:  # our request is at fault (an unknown zone): say why
                    try:
                        doc = await resp.json(content_type=None)
                        detail = (
                            f": {doc['detail']}"
                            if isinstance(doc, dict) and "detail" in doc
                            else ""
                        )
                    except (ValueError, aiohttp.ClientError):
                        pass
                return DispatchResult(
                    url, error=f"HTTP {resp.status}{detail}", kind=f"http_{resp.status}"
                )
            obj = await resp.json(content_type=None)
            return DispatchResult(url, answer=DispatchAnswer.from_json(obj))
    except TimeoutError:
        return DispatchResult(url, error=f"timed out after {timeout:g}s", kind="timeout")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return DispatchResult(url, error=f"{type(exc).__name__}: {exc}", kind="connect")
    except DispatchError as exc:
        return DispatchResult(url, error=str(exc), kind="bad_answer")


async def report_gateway(
    session: aiohttp.ClientSession,
    url: str,
    gateway_id: str,
    error: str,
    timeout: float = 1.0,
) -> None:
    """Tell a dispatcher we could not reach ``gateway_id`` (passive health; best effort)."""
    try:
        async with session.post(
            url.rstrip("/") + "/v1/report",
            json={"gateway_id": gateway_id, "error": error[:200]},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            await resp.read()
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    answer: DispatchAnswer
    saved_at: float  # unix time

    def age(self, now: float) -> float:
        return max(now - self.saved_at, 0.0)


def save_cache(path: str | os.PathLike[str], answer: DispatchAnswer, now: float) -> None:
    """Atomically write the last good answer with its time (errors are logged, not raised)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(
            json.dumps({"version": CACHE_VERSION, "saved_at": now, "answer": dict(answer.raw)})
        )
        os.replace(tmp, p)
    except OSError as exc:
        log.warning("cannot write dispatch cache %s: %s", p, exc)
        tmp.unlink(missing_ok=True)


def load_cache(path: str | os.PathLike[str]) -> CachedAnswer | None:
    """The cached answer, or None when missing or unreadable (a bad cache is ignored)."""
    try:
        obj = json.loads(Path(path).read_text())
        if not isinstance(obj, dict) or obj.get("version") != CACHE_VERSION:
            return None
        saved_at = float(obj["saved_at"])
        return CachedAnswer(DispatchAnswer.from_json(obj["answer"], source="cache"), saved_at)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, DispatchError) as exc:
        log.warning("ignoring unreadable dispatch cache %s: %s", path, exc)
        return None
