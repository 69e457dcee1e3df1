"""The optional C hot path (:mod:`tcpdispatch._speedups`), fed from the app's snapshots.

The extension answers a plain ``GET /v1/dispatch?client_id=X`` in one call:
request recognition, p2c or weighted-random pick, HMAC-SHA256 ticket and the
whole HTTP answer. It covers the keyless sampling policies (``p2c``, the
default, and ``random``); for every other policy, and whenever the extension
says ``None`` (unusual request, no gateway free), the pure-Python path answers
by the same rules. It is off when the extension was not built, when
``[dispatcher] speedups = false``, or with ``TCPDISPATCH_SPEEDUPS=0`` in the
environment.
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Any

from tcpdispatch.balancing._sampling import WeightedSamplingPicker
from tcpdispatch.dispatcher.httpserver import MAX_HEAD, MAX_HEADERS, MAX_URL
from tcpdispatch.metrics_common import DISPATCH_BUCKETS

if TYPE_CHECKING:
    from tcpdispatch.balancing.base import Picker
    from tcpdispatch.config import DispatcherConfig

try:
    from tcpdispatch._speedups import FastDispatch
except ImportError:  # not built (no compiler or headers): the Python path does everything
    FastDispatch = None

ENV = "TCPDISPATCH_SPEEDUPS"
POLICIES = {"p2c": 0, "random": 1}
OFF = -1

# Every live accelerator, reseeded in forked children (two workers must not issue equal nonces).
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()


def _reseed() -> None:
    for fast in list(_LIVE):
        fast.reseed(os.urandom(32))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def available() -> bool:
    """True when the extension is built and not switched off by the environment."""
    return FastDispatch is not None and os.environ.get(ENV, "1") != "0"


def create(config: DispatcherConfig, stats: Any, tail: bytes) -> Any | None:
    """A configured accelerator, or None when it is unavailable or ``speedups = false``."""
    if not (config.speedups and available()):
        return None
    fast = FastDispatch(**_settings(config, stats, tail))  # type: ignore[misc]
    _LIVE.add(fast)
    return fast


def configure(fast: Any, config: DispatcherConfig, stats: Any, tail: bytes) -> None:
    """Apply a reloaded config (secret, lifetime, alternates, limits, hints) in place."""
    fast.configure(**_settings(config, stats, tail))


def _settings(config: DispatcherConfig, stats: Any, tail: bytes) -> dict[str, Any]:
    return {
        "secret": config.secrets[0], "lifetime": int(config.ticket_lifetime),
        "alternates": config.alternates, "max_client_id": config.max_client_id,
        "max_head": MAX_HEAD, "max_url": MAX_URL, "max_headers": MAX_HEADERS,
        "tail": tail, "stats": stats, "seed": os.urandom(32), "latency_bounds": DISPATCH_BUCKETS,
    }


def install(fast: Any, picker: Picker, frags: dict[str, bytes], packed_ids: dict[str, bytes], *,
            enabled: bool = True) -> None:
    """Hand a new snapshot to the accelerator (off for policies it does not implement).

    ``frags`` and ``packed_ids`` map each candidate's id to its JSON fragment and to
    :func:`tcpdispatch.tickets.pack_id` of it.
    """
    fast.set_pool(OFF, (), (), ())  # off first: if building the rows fails, no stale snapshot stays
    policy = POLICIES.get(picker.name, OFF) if enabled else OFF
    if policy == OFF or not isinstance(picker, WeightedSamplingPicker):
        return
    rows = [(c.load, c.id, frags[c.id], packed_ids[c.id], float(c.weight), c.limit) for c in picker.candidates]
    fast.set_pool(policy, rows, picker.alias_table[0], picker.alias_table[1])
