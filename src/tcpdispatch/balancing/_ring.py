"""Weighted consistent-hash ring shared by ``ip_hash`` and ``consistent_hash``.

Each gateway owns points on a 64-bit ring, as many as its share of the weight
asks for; a key belongs to the first point at or after its hash, walking on
clockwise when that gateway cannot take it. Point positions depend only on the
gateway id and the point's number (``blake2b(id#block)``, 8 points per digest),
never on Python's per-process ``hash()``: every dispatcher replica, in any
process, builds the same ring, and a gateway that gains or loses points keeps
the others where they were.

Ring size: a gateway gets ``points_per_gateway(n) * weight / unit`` points,
``points_per_gateway(n) = clamp(TARGET_POINTS // n, MIN_POINTS, MAX_POINTS)``
and ``unit`` the mean weight rounded to a power of two. Small pools get 2048
points per unit of weight, which holds each gateway's share of the key space
to within about a percentage point; large pools get fewer so the ring
stays ~160k points (10,000 gateways: 16 each, arcs then vary by about +-25%,
which the bounded-load walk of ``consistent_hash`` evens out).
Up to 78 gateways, and while the rounded mean weight stays the same, no
gateway's point count depends on the others, so adding one gateway to N moves
~1/(N+1) of the keys, all to the newcomer. Above 78 the count per gateway
shrinks a little as the pool grows, which moves more (2.2/(N+1) at N = 100,
2.6/(N+1) at N = 500).

Build cost matters because the dispatcher rebuilds on every health change and
every slow-start step: point positions are cached per gateway id, and points
are sorted as floats (see ``_OWNER_BITS``).

Complexity: build O(P log P) for P points; lookup O(log P) (bisect) plus the
walk, which is 1 step while the owner is usable and in bound.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Collection, Sequence
from hashlib import blake2b
from struct import Struct

from tcpdispatch.balancing._validate import check_candidates
from tcpdispatch.balancing.base import Candidate, Picker, PickRequest

TARGET_POINTS = 160_000
MIN_POINTS = 16
MAX_POINTS = 2048
_EIGHT_U64 = Struct(">8Q")
# Ring points are sorted as floats (CPython sorts floats ~6x faster than
# tuples): the top 33 bits of the 64-bit position, then 20 bits of owner index,
# exact in a double's 53-bit mantissa.
_OWNER_BITS = 20
_OWNER_MASK = (1 << _OWNER_BITS) - 1
MAX_GATEWAYS = 1 << _OWNER_BITS
# Point lists are cached per gateway id across rebuilds (hashing is a third of the build).
_POINTS_CACHE_IDS = 100_000
_points_cache: dict[str, list[float]] = {}
# Whole rings, keyed by (ids, static weights): a rebuild for health, drain or a slow-start
# step reuses the ring as long as membership and static weights are unchanged.
_RING_CACHE_SIZE = 8
_ring_cache: OrderedDict[tuple[tuple[str, ...], tuple[float, ...]], HashRing] = OrderedDict()
_FRACTION = 1.0 / (1 << 32)


def key_hash(key: str) -> int:
    """Stable 64-bit position of ``key`` on the ring (same in every process)."""
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "big")


def ring_key(h: int) -> float:
    """The sort key of 64-bit position ``h`` (owner bits zero: sorts before its points)."""
    return float((h >> 31) << _OWNER_BITS)


def gateway_points(gateway_id: str, count: int) -> list[float]:
    """The first ``count`` ring keys of a gateway, owner bits zero (see ``ring_key``).

    A prefix: asking for more points keeps the earlier ones where they were.
    """
    cached = _points_cache.get(gateway_id)
    if cached is not None and len(cached) >= count:
        return cached[:count]
    out: list[float] = []
    block = 0
    while len(out) < count:
        digest = blake2b(f"{gateway_id}#{block}".encode(), digest_size=64).digest()
        out.extend(ring_key(h) for h in _EIGHT_U64.unpack(digest))
        block += 1
    if len(_points_cache) >= _POINTS_CACHE_IDS:
        _points_cache.clear()
    _points_cache[gateway_id] = out
    return out[:count]


def points_per_gateway(n: int) -> int:
    """Average ring points per gateway for a pool of ``n``."""
    return max(MIN_POINTS, min(MAX_POINTS, TARGET_POINTS // max(n, 1)))


def weight_unit(weights: Sequence[float]) -> float:
    """The weight that gets ``points_per_gateway`` points: the mean weight rounded to a power of 2.

    Rounding keeps the scale (hence every other gateway's points) unchanged
    when a gateway of unusual weight joins or leaves; the mean itself would
    shift all of them a little and move keys between unchanged gateways.
    """
    mean = sum(weights) / len(weights)
    return 2.0 ** round(math.log2(mean))


class HashRing:
    """Sorted ring keys (see ``ring_key``); the low bits of each key name its owner."""

    __slots__ = ("keys",)

    def __init__(self, ids: Sequence[str], weights: Sequence[float]) -> None:
        n = len(ids)
        if n > MAX_GATEWAYS:
            raise ValueError(f"a hash ring holds at most {MAX_GATEWAYS} gateways, got {n}")
        keys: list[float] = []
        if n:
            ppg = points_per_gateway(n)
            unit = weight_unit(weights)
            for idx, (gid, w) in enumerate(zip(ids, weights)):
                count = max(1, round(ppg * w / unit))
                # Adding the (exact, small) index sets the owner bits; map() keeps the loop in C.
                keys.extend(map(float(idx).__add__, gateway_points(gid, count)))
        keys.sort()
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def owner(self, pos: int) -> int:
        """Index of the candidate owning point ``pos``."""
        return int(self.keys[pos]) & _OWNER_MASK

    def locate(self, h: int) -> int:
        """Position of the first point at or after 64-bit position ``h`` (wrapping)."""
        pos = bisect_left(self.keys, ring_key(h))
        return 0 if pos == len(self.keys) else pos


def ring_for(ids: tuple[str, ...], weights: tuple[float, ...]) -> HashRing:
    """The ring of ``ids`` at static ``weights``, from
    a small LRU cache (build cost is O(P log P))."""
    key = (ids, weights)
    ring = _ring_cache.get(key)
    if ring is None:
        ring = HashRing(ids, weights)
        _ring_cache[key] = ring
        if len(_ring_cache) > _RING_CACHE_SIZE:
            _ring_cache.popitem(last=False)
    else:
        _ring_cache.move_to_end(key)
    return ring


def normalize_ip(ip: str) -> str:
    """``::ffff:1.2.3.4`` -> ``1.2.3.4`` so a client hashes the same over IPv4 and mapped IPv6."""
    if ip[:7].lower() == "::ffff:" and "." in ip:
        return ip[7:]
    return ip


class HashRingPicker(Picker):
    """Ring lookup by a request key, optionally with bounded loads (``epsilon``).

    With ``epsilon`` set, a gateway is skipped while its load is at or above
    ``ceil((1 + epsilon) * (T + 1) * weight / W)``, T being the total load of
    the snapshot and W its total weight (HAProxy's hash-balance-factor,
    Mirrokni et al. "Consistent hashing with bounded loads"). The walk then
    moves on to the next point. When every usable gateway is over its bound
    (possible only when full or excluded gateways hold part of the weight) the
    first usable one on the walk is taken.

    T is summed over the pool exactly every ``max(1, n // 16)`` picks and
    advanced by one per pick in between, so a pick stays O(log P) amortized;
    reports arriving in between are seen at the next refresh.

    The ring is built from membership and *static* weights only (``base_weight``)
    and shared through ``ring_for``, so health changes and slow-start steps do
    not rebuild it. A gateway in slow start (``weight < base_weight``) keeps a
    key only when the key's own fraction (low 32 bits of its hash, independent of
    its ring position) is below ``weight / base_weight``: it takes that share of
    its keys, the same keys in every replica, growing as it ramps.
    """

    keyed = True
    ordered_alternates = True

    def __init__(
        self,
        candidates: Sequence[Candidate],
        *,
        rng: random.Random | None = None,
        epsilon: float | None = None,
    ) -> None:
        super().__init__(candidates, rng=rng)
        check_candidates(self.candidates)
        if epsilon is not None and not (epsilon >= 0 and math.isfinite(epsilon)):
            raise ValueError(f"epsilon must be a finite number >= 0 (or None), got {epsilon!r}")
        self.epsilon = epsilon
        static = tuple(
            c.weight if c.base_weight is None else c.base_weight for c in self.candidates
        )
        self._ring = ring_for(tuple(c.id for c in self.candidates), static)
        # Slow-start share per candidate; None when nobody ramps (the common case).
        factors = [min(1.0, c.weight / s) for c, s in zip(self.candidates, static)]
        self._factors: list[float] | None = factors if any(f < 1.0 for f in factors) else None
        self._weight_sum = sum(c.weight for c in self.candidates)
        self._refresh_every = max(1, len(self.candidates) // 16)
        self._countdown = 0
        self._base_total = 0
        self._since = 0

    def _key(self, request: PickRequest) -> str:
        raise NotImplementedError

    def _total_load(self) -> int:
        if self._countdown <= 0:
            self._base_total = sum(c.load.current for c in self.candidates)
            self._since = 0
            self._countdown = self._refresh_every
        return self._base_total + self._since

    def pick(self, request: PickRequest, k: int = 1) -> list[Candidate]:
        out = super().pick(request, k)
        if out:
            self._since += 1
            self._countdown -= 1
        return out

    def _choose(self, request: PickRequest, exclude: Collection[str]) -> Candidate | None:
        ring = self._ring
        size = len(ring)
        if size == 0:
            return None
        key = self._key(request)
        if key:
            h = key_hash(key)
            pos = ring.locate(h)
            frac = (h & 0xFFFFFFFF) * _FRACTION
        else:
            pos = int(self.rng.random() * size) % size
            frac = self.rng.random()
        factors = self._factors
        keys = ring.keys
        cands = self.candidates
        n = len(cands)
        scale = 0.0
        if self.epsilon is not None:
            scale = (1.0 + self.epsilon) * (self._total_load() + 1) / self._weight_sum
        fallback: Candidate | None = None
        tried: set[int] | None = None
        for _ in range(size):
            idx = int(keys[pos]) & _OWNER_MASK
            pos += 1
            if pos == size:
                pos = 0
            if tried is not None and idx in tried:
                continue
            c = cands[idx]
            if not c.full and not (exclude and c.id in exclude):
                # The 1e-9 keeps float noise (2.0000000001) from adding a slot.
                ramped = factors is None or frac < factors[idx]
                if ramped and (not scale or c.load.current < math.ceil(scale * c.weight - 1e-9)):
                    return c
                if fallback is None:
                    fallback = c
            if tried is None:
                tried = set()
            tried.add(idx)
            if len(tried) == n:
                break
        return fallback
