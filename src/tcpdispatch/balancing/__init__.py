"""Balancing: pure policies over immutable gateway snapshots (see docs/policies.md).

The dispatcher turns its pool into candidates with ``build_candidates`` and
builds a picker with ``make_picker(name, snapshot.candidates, rng=...)`` (or
``get_policy(name)``); the hot path calls ``picker.pick(request, k)``.
"""

from tcpdispatch.balancing.base import Candidate, LoadCounter, Picker, PickerFactory, PickRequest
from tcpdispatch.balancing.registry import DEFAULT_POLICY, POLICIES, get_policy, make_picker
from tcpdispatch.balancing.snapshot import (
    BalancerSettings,
    GatewayView,
    Snapshot,
    build_candidates,
    slow_start_factor,
)

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "BalancerSettings",
    "Candidate",
    "GatewayView",
    "LoadCounter",
    "PickRequest",
    "Picker",
    "PickerFactory",
    "Snapshot",
    "build_candidates",
    "get_policy",
    "make_picker",
    "slow_start_factor",
]
