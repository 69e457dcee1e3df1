"""Balancing policies by name, resolved once when the config is loaded.

``get_policy(name)`` returns the picker class, called as ``(candidates, *,
rng=None, **options)``. Options are policy specific (``consistent_hash``:
``epsilon``, ``load``: ``floor``); each class names the ``[balancing]`` keys
they come from in ``Picker.options`` (see ``policy_options``) and validates
its own, raising ValueError. ``Picker.keyed`` and ``Picker.ordered_alternates``
tell the dispatcher how to call it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from tcpdispatch.balancing.base import Candidate, Picker
from tcpdispatch.balancing.consistent_hash import ConsistentHashPicker
from tcpdispatch.balancing.ip_hash import IpHashPicker
from tcpdispatch.balancing.least_conn import LeastConnPicker
from tcpdispatch.balancing.load import LoadPicker
from tcpdispatch.balancing.p2c import P2CPicker
from tcpdispatch.balancing.round_robin import RoundRobinPicker
from tcpdispatch.balancing.weighted_random import RandomPicker

DEFAULT_POLICY = "p2c"

POLICIES: Mapping[str, type[Picker]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (
            RoundRobinPicker,
            RandomPicker,
            IpHashPicker,
            ConsistentHashPicker,
            LeastConnPicker,
            P2CPicker,
            LoadPicker,
        )
    }
)


def get_policy(name: str) -> type[Picker]:
    """The factory registered as ``name``; ValueError naming the valid ones otherwise."""
    try:
        return POLICIES[name]
    except (KeyError, TypeError):
        valid = ", ".join(POLICIES)
        raise ValueError(f"unknown balancing policy {name!r}; valid: {valid}") from None


def policy_options(policy: type[Picker], settings: object) -> dict[str, Any]:
    """The constructor options of ``policy`` taken from ``settings`` (a ``BalancerSettings``)."""
    return {kw: getattr(settings, field) for kw, field in policy.options}


def make_picker(
    name: str,
    candidates: Sequence[Candidate],
    *,
    rng: random.Random | None = None,
    **options: Any,
) -> Picker:
    """The ``name`` picker over ``candidates``; ValueError on an unknown name or a bad option."""
    factory = get_policy(name)
    if not options:
        return factory(candidates, rng=rng)
    try:
        return factory(candidates, rng=rng, **options)
    except TypeError as exc:  # an option this policy does not take
        raise ValueError(f"policy {name!r}: {exc}") from None
