"""``ip_hash``: the same client address goes to the same gateway.

Keyed on ``PickRequest.client_ip`` (IPv4-mapped IPv6 folded to IPv4) on the
weighted ring of ``_ring``; with no address it falls back to ``client_id``,
then to a random ring position. No load bound: the mapping only moves when the
pool changes or the owner is full/excluded (then the next gateway clockwise).
Clients behind one NAT all land together, so prefer ``consistent_hash`` (by
client id, with bounded loads) unless address affinity is the point.

Complexity: build O(P log P) with P ~ min(2048 n, max(160k, 16 n)) points;
pick O(log P) plus one step per full gateway skipped.
"""

from __future__ import annotations

from tcpdispatch.balancing._ring import HashRingPicker, normalize_ip
from tcpdispatch.balancing.base import PickRequest


class IpHashPicker(HashRingPicker):
    """Weighted consistent hashing of the client address."""

    name = "ip_hash"

    def _key(self, request: PickRequest) -> str:
        if request.client_ip:
            return "ip:" + normalize_ip(request.client_ip)
        return "id:" + request.client_id if request.client_id else ""
