"""The optional C hot path (:mod:`tcpdispatch._speedups`): the twin of the Python dispatch path.

The extension answers a plain ``GET /v1/dispatch?client_id=X`` in one call:
request recognition, pick, HMAC-SHA256 ticket and the whole HTTP answer. It is
the same algorithm as the Python path, not a second one:

- every constant it uses is handed over here, from its one Python definition
  (rejection draws, ticket limits, the answer's pieces, the HTTP framing, the
  request limits, the fields of ``LoadCounter`` and ``Stats`` it reads and writes);
- it draws from the app's :class:`~tcpdispatch.rng.SplitMixRandom`, the
  generator the Python pickers and the ticket signer draw from, so the same seed
  gives the same picks and nonces on both paths;
- tickets carry the app's clock when one is injected (tests), the wall clock
  read in C otherwise;
- the picker says which C rule it is (``Picker.c_policy``); pickers without
  one (keyed policies, ``least_conn``, ``load``) keep the Python path.

Whenever the extension returns ``None`` (unusual request, no gateway free) it
has drawn nothing, and the Python path answers by the same rules. It is off when
the extension was not built, when ``[dispatcher] speedups = false``, with
``TCPDISPATCH_SPEEDUPS=0`` in the environment, or when the pool's generator is
not a C-backed ``SplitMixRandom``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tcpdispatch.balancing._sampling import ATTEMPTS, WeightedSamplingPicker
from tcpdispatch.balancing.base import LoadCounter
from tcpdispatch.dispatcher.httpserver import (
    _JSON_HEAD,
    MAX_HEAD,
    MAX_HEADERS,
    MAX_URL,
    _status_line,
)
from tcpdispatch.metrics_common import DISPATCH_BUCKETS
from tcpdispatch.rng import SplitMixRandom
from tcpdispatch.tickets import MAC_SIZE, MAX_TICKET

if TYPE_CHECKING:
    from tcpdispatch.balancing.base import Picker
    from tcpdispatch.config import DispatcherConfig

try:
    from tcpdispatch._speedups import FastDispatch
except ImportError:  # not built (no compiler or headers): the Python path does everything
    FastDispatch = None

ENV = "TCPDISPATCH_SPEEDUPS"
OFF = -1

# The dispatch answer around its variable parts (gateway fragments, ticket, hints tail):
# {"gateway":F0},"ticket":"T","alternates":[F1,"ticket":"T"},F2,"ticket":"T"}],TAIL
# DispatchService._template cuts the same answer where the ticket goes.
ANSWER_PIECES = (
    b'{"gateway":',  # then the primary's fragment
    b'},"ticket":"',  # then the ticket
    b'","alternates":[',
    b',"ticket":"',  # after each alternate's fragment
    b'"}',  # closes each alternate
    b",",  # between alternates
    b"],",  # then the hints tail
)


def framing() -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """The HTTP framing of a 200 answer, as the built-in server writes it for the Python path."""
    return (
        _status_line(200),
        _JSON_HEAD,
        b"connection: close\r\n",
        b"content-length: ",
        b"\r\n\r\n",
    )


def available() -> bool:
    """True when the extension is built and not switched off by the environment."""
    return FastDispatch is not None and os.environ.get(ENV, "1") != "0"


def shares(rng: random.Random) -> bool:
    """True when the C path can draw from ``rng`` (a SplitMixRandom with the C core)."""
    return isinstance(rng, SplitMixRandom) and rng.in_c


def create(
    config: DispatcherConfig,
    stats: Any,
    tail: bytes,
    rng: random.Random,
    clock: Callable[[], float],
) -> Any | None:
    """A configured accelerator, or None when it is unavailable, ``speedups = false`` or
    ``rng`` is not one it can share."""
    if not (config.speedups and available() and shares(rng)):
        return None
    return FastDispatch(**_from_config(config, stats, tail, rng, clock))  # type: ignore[misc]


def configure(
    fast: Any,
    config: DispatcherConfig,
    stats: Any,
    tail: bytes,
    rng: random.Random,
    clock: Callable[[], float],
) -> None:
    """Apply a reloaded config (secret, lifetime, alternates, limits, hints) in place."""
    fast.configure(**_from_config(config, stats, tail, rng, clock))


def _from_config(
    config: DispatcherConfig,
    stats: Any,
    tail: bytes,
    rng: random.Random,
    clock: Callable[[], float],
) -> dict[str, Any]:
    return settings(
        secret=config.secrets[0],
        lifetime=int(config.ticket_lifetime),
        alternates=config.alternates,
        max_client_id=config.max_client_id,
        tail=tail,
        stats=stats,
        rng=rng,
        clock=clock,
    )


def settings(
    *,
    secret: bytes,
    lifetime: int,
    alternates: int,
    max_client_id: int,
    tail: bytes,
    stats: Any,
    rng: random.Random,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Every argument of ``FastDispatch(...)`` / ``.configure(...)``: the given ones, and the
    constants, each from the one place it is defined in Python."""
    if not shares(rng):
        raise ValueError("the C path draws from a SplitMixRandom with the C core only")
    assert isinstance(rng, SplitMixRandom)
    return {
        "secret": secret,
        "lifetime": lifetime,
        "alternates": alternates,
        "max_client_id": max_client_id,
        "max_head": MAX_HEAD,
        "max_url": MAX_URL,
        "max_headers": MAX_HEADERS,
        "tail": tail,
        "stats": stats,
        "rng": rng.core,
        # The wall clock is read in C (one read dates the ticket and starts the answer timer).
        "clock": None if clock is time.time else clock,
        "latency_bounds": DISPATCH_BUCKETS,
        "attempts": ATTEMPTS,
        "max_ticket": MAX_TICKET,
        "mac_size": MAC_SIZE,
        # slot descriptors: C reads and writes these fields through them, never by name
        "load_fields": (LoadCounter.reported, LoadCounter.issued, LoadCounter.headroom),  # type: ignore[misc]
        "stats_fields": (type(stats).dispatched, type(stats).per_gateway),
        "answer": ANSWER_PIECES,
        "framing": framing(),
    }


def policy_code(picker: Picker | type[Picker]) -> int:
    """The C rule for this picker (``Picker.c_policy``), or OFF when it has none."""
    cls = picker if isinstance(picker, type) else type(picker)
    code = cls.c_policy
    return OFF if code is None or not issubclass(cls, WeightedSamplingPicker) else code


def install(
    fast: Any,
    picker: Picker,
    frags: dict[str, bytes],
    packed_ids: dict[str, bytes],
    *,
    enabled: bool = True,
) -> None:
    """Hand a new snapshot to the accelerator (off for pickers without a C rule).

    ``frags`` and ``packed_ids`` map each candidate's id to its JSON fragment and to
    :func:`tcpdispatch.tickets.pack_id` of it.
    """
    fast.set_pool(OFF, (), (), ())  # off first: if building the rows fails, no stale snapshot stays
    policy = policy_code(picker) if enabled else OFF
    if policy == OFF or not isinstance(picker, WeightedSamplingPicker):
        return
    rows = [
        (c.load, c.id, frags[c.id], packed_ids[c.id], float(c.weight), c.limit)
        for c in picker.candidates
    ]
    fast.set_pool(policy, rows, picker.alias_table[0], picker.alias_table[1])
