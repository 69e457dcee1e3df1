"""``consistent_hash``: the same client id goes to the same gateway, within a load bound.

Keyed on ``PickRequest.client_id`` (then ``client_ip``, then a random position)
on the weighted ring of ``_ring``. With bounded loads (``epsilon``, default
0.25 = HAProxy ``hash-balance-factor 125``) no gateway takes a client while its
load is at or above ``ceil((1 + epsilon) * (total load + 1) * weight / total
weight)``; the walk moves on to the next point, so the client's second choice
is itself stable. ``epsilon=None`` turns the bound off (plain ring).

A client reconnecting lands on the gateway that served it last (warm caches,
session state) as long as the pool is unchanged and that gateway is not
overloaded; adding one gateway to N moves about 1/(N+1) of the keys.

Complexity: build O(P log P) (see ``_ring``); pick O(log P) + the walk, which
is expected O(1/epsilon^2) steps at worst and usually 1; the total load is
re-summed every n/16 picks, O(1) amortized.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tcpdispatch.balancing._ring import HashRingPicker, normalize_ip
from tcpdispatch.balancing.base import Candidate, PickRequest

DEFAULT_EPSILON = 0.25


class ConsistentHashPicker(HashRingPicker):
    """Weighted consistent hashing of the client id with bounded loads."""

    name = "consistent_hash"
    options = (("epsilon", "hash_epsilon"),)

    def __init__(
        self,
        candidates: Sequence[Candidate],
        *,
        rng: random.Random | None = None,
        epsilon: float | None = DEFAULT_EPSILON,
    ) -> None:
        super().__init__(candidates, rng=rng, epsilon=epsilon)

    def _key(self, request: PickRequest) -> str:
        if request.client_id:
            return "id:" + request.client_id
        return "ip:" + normalize_ip(request.client_ip) if request.client_ip else ""
