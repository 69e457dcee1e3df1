"""One probe of one gateway (http, agent, tcp) and the parsers of what gateways answer.

Parsers (:func:`status_to_result`, :func:`parse_agent_reply`) are pure; :func:`probe`
does the I/O and never raises for network trouble: every failure becomes
``ProbeResult(ok=False, detail=...)``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from tcpdispatch.health.settings import CheckSpec

MAX_STATUS_BYTES = 64 * 1024  # a /status document is ~300 bytes; refuse anything absurd
MAX_AGENT_LINE = 1024  # HAProxy reads at most a buffer-full too

_OK_WORDS = frozenset({"up"})
_FAIL_WORDS = frozenset({"down", "fail", "failed", "stopped"})
_DRAIN_WORDS = frozenset({"drain", "maint"})
_READY_WORDS = frozenset({"ready"})


@dataclass(frozen=True)
class ProbeResult:
    """What one probe (or one push heartbeat) says about a gateway."""

    ok: bool
    latency_s: float = 0.0
    connections: int | None = None
    capacity: int | None = None
    draining: bool = False
    utilization: float | None = None  # 0..1 (gateway /status "cpu"; agent: 1 - up% / 100)
    weight_pct: int | None = None  # agent "N%" if given
    address: str | None = None
    detail: str = ""  # error text when not ok
    busy: float | None = None  # busiest worker's event-loop busy fraction, 0..1 of one core
    lag_s: float | None = None  # busiest worker's event-loop lag (gateway-measured), seconds
    late_s: float = 0.0  # watch: how much later than its interval this status arrived
    leaving: int = 0  # sessions the gateway asked to move (shed) that are still connected


def status_to_result(doc: Mapping[str, Any], latency_s: float = 0.0) -> ProbeResult:
    """Turn a gateway ``/status`` JSON document (or a push heartbeat body) into a result.

    Requires ``state`` ("serving" | "draining"), ``connections`` and ``capacity``
    (integers >= 0); uses ``cpu`` (0..1, clamped), ``busy`` (0..1, clamped), ``lag_ms``
    (>= 0) and ``address`` when present. Raises ValueError naming the bad field.
    """
    if not isinstance(doc, Mapping):
        raise ValueError(f"status must be a JSON object, got {type(doc).__name__}")  # noqa: TRY004 (callers catch ValueError for any bad document)
    state = doc.get("state")
    if state not in ("serving", "draining"):
        raise ValueError(f"status field 'state' must be 'serving' or 'draining', got {state!r}")
    counts: dict[str, int] = {}
    for name in ("connections", "capacity"):
        value = doc.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"status field {name!r} must be an integer >= 0, got {value!r}")
        counts[name] = value
    cpu = doc.get("cpu")
    utilization: float | None = None
    if cpu is not None:
        if not isinstance(cpu, int | float) or isinstance(cpu, bool) or not math.isfinite(cpu):
            raise ValueError(f"status field 'cpu' must be a number in 0..1, got {cpu!r}")
        utilization = min(1.0, max(0.0, float(cpu)))
    busy = _optional_number(doc, "busy")
    lag_ms = _optional_number(doc, "lag_ms")
    address = doc.get("address")
    if address is not None and (not isinstance(address, str) or not address):
        raise ValueError(f"status field 'address' must be a non-empty string, got {address!r}")
    gid = doc.get("id")
    if gid is not None and (not isinstance(gid, str) or not gid):
        raise ValueError(f"status field 'id' must be a non-empty string, got {gid!r}")
    leaving = doc.get("leaving", 0)
    if not isinstance(leaving, int) or isinstance(leaving, bool) or leaving < 0:
        raise ValueError(f"status field 'leaving' must be an integer >= 0, got {leaving!r}")
    return ProbeResult(
        ok=True,
        latency_s=latency_s,
        connections=counts["connections"],
        capacity=counts["capacity"],
        draining=state == "draining",
        utilization=utilization,
        address=address,
        busy=None if busy is None else min(1.0, busy),
        lag_s=None if lag_ms is None else lag_ms / 1000,
        leaving=leaving,
    )


def status_reply_to_result(
    status: int, body: bytes, latency: float, url: str | None
) -> ProbeResult:
    """The verdict on one HTTP answer of a status page (any prober that fetched it)."""
    if status != 200:
        return ProbeResult(ok=False, latency_s=latency, detail=f"HTTP {status} from {url}")
    if len(body) > MAX_STATUS_BYTES:
        return ProbeResult(
            ok=False, latency_s=latency, detail=f"status body over {MAX_STATUS_BYTES} bytes"
        )
    try:
        doc = json.loads(body)
    except ValueError as exc:
        return ProbeResult(ok=False, latency_s=latency, detail=f"bad status JSON: {exc}")
    try:
        return status_to_result(doc, latency)
    except ValueError as exc:
        return ProbeResult(ok=False, latency_s=latency, detail=f"bad status document: {exc}")


def _optional_number(doc: Mapping[str, Any], name: str) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"status field {name!r} must be a number >= 0, got {value!r}")
    return float(value)


def parse_agent_reply(line: str, latency_s: float = 0.0) -> ProbeResult:
    """Parse one HAProxy agent-check reply line, e.g. ``up 75% maxconn:30``.

    Words are separated by spaces, tabs or commas and are case-insensitive; text after
    ``#`` is a description. Operational words (last one wins): ``up`` -> ok;
    ``down``/``fail``/``failed``/``stopped`` -> not ok. Administrative words (last one
    wins): ``drain``/``maint`` -> draining, ``ready`` -> not draining. ``N%`` ->
    ``weight_pct`` and ``utilization = 1 - N/100`` (clamped to 0..1); ``maxconn:N`` ->
    ``capacity`` (HAProxy's per-server maxconn; tcpdispatch gateways send their
    *remaining* slots, so ``connections`` stays None). Unknown words are ignored; a reply
    with nothing recognisable (e.g. empty) is not ok.
    """
    text, _, description = line.partition("#")
    words = text.replace(",", " ").split()
    ok: bool | None = None
    draining = False
    weight_pct: int | None = None
    capacity: int | None = None
    understood = False
    for raw in words:
        word = raw.lower()
        if word in _OK_WORDS:
            ok, understood = True, True
        elif word in _FAIL_WORDS:
            ok, understood = False, True
        elif word in _DRAIN_WORDS:
            draining, understood = True, True
        elif word in _READY_WORDS:
            draining, understood = False, True
        elif word.endswith("%") and word[:-1].isdigit():
            weight_pct, understood = int(word[:-1]), True
        elif word.startswith("maxconn:") and word[8:].isdigit():
            capacity, understood = int(word[8:]), True
    if not understood:
        what = repr(line.strip()) if line.strip() else "an empty reply"
        return ProbeResult(ok=False, latency_s=latency_s, detail=f"agent sent {what}")
    if ok is False:
        reason = description.strip() or line.strip()
        return ProbeResult(
            ok=False, latency_s=latency_s, draining=draining, detail=f"agent says {reason}"
        )
    return ProbeResult(
        ok=True,
        latency_s=latency_s,
        capacity=capacity,
        draining=draining,
        utilization=None if weight_pct is None else min(1.0, max(0.0, 1 - weight_pct / 100)),
        weight_pct=weight_pct,
    )


async def probe(
    spec: CheckSpec, timeout: float, session: aiohttp.ClientSession | None = None
) -> ProbeResult:
    """Probe once, bounded by ``timeout`` seconds in total (connect included).

    Never raises for network errors, timeouts or bad answers: returns ``ok=False`` with
    ``detail``. ``session`` (http only) should be shared and long-lived so probes reuse
    keep-alive connections; without one a throwaway session is used. ``push`` specs
    cannot be probed (ValueError).
    """
    if spec.kind == "push":
        raise ValueError("push checks are not probed; feed heartbeats to PushTracker")
    if spec.kind not in ("http", "agent", "tcp"):
        raise ValueError(f"unknown check kind {spec.kind!r}")
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            if spec.kind == "http":
                return await _probe_http(spec, timeout, session, start)
            if spec.kind == "agent":
                return await _probe_agent(spec, start)
            return await _probe_tcp(spec, start)
    except TimeoutError:
        return ProbeResult(
            ok=False, latency_s=time.monotonic() - start, detail=f"timeout after {timeout:g}s"
        )
    except (OSError, aiohttp.ClientError, ValueError) as exc:
        # OSError covers refused/unreachable/reset; ValueError covers bad JSON/documents
        # and UnicodeDecodeError.
        return ProbeResult(ok=False, latency_s=time.monotonic() - start, detail=_describe(exc))


async def _probe_http(
    spec: CheckSpec, timeout: float, session: aiohttp.ClientSession | None, start: float
) -> ProbeResult:
    assert spec.url is not None
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await _probe_http(spec, timeout, own, start)
    # The outer asyncio.timeout is the real bound; aiohttp's own is a second guard.
    async with session.get(
        spec.url,
        timeout=aiohttp.ClientTimeout(total=timeout),
        allow_redirects=False,
        headers={"Accept": "application/json"},
    ) as resp:
        body = await resp.content.read(MAX_STATUS_BYTES + 1)
        return status_reply_to_result(resp.status, body, time.monotonic() - start, spec.url)


async def _probe_agent(spec: CheckSpec, start: float) -> ProbeResult:
    assert spec.host is not None and spec.port is not None
    reader, writer = await asyncio.open_connection(spec.host, spec.port, limit=MAX_AGENT_LINE * 2)
    try:
        data = b""
        # Read until newline, EOF or the size bound; a reply without a newline is fine.
        while b"\n" not in data and len(data) < MAX_AGENT_LINE:
            chunk = await reader.read(MAX_AGENT_LINE - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        writer.close()
    line = data.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    return parse_agent_reply(line, time.monotonic() - start)


async def _probe_tcp(spec: CheckSpec, start: float) -> ProbeResult:
    assert spec.host is not None and spec.port is not None
    _reader, writer = await asyncio.open_connection(spec.host, spec.port)
    latency = time.monotonic() - start
    # Reset rather than FIN, as HAProxy does: no TIME_WAIT piles up on the checker side.
    writer.transport.abort()
    return ProbeResult(ok=True, latency_s=latency)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
