"""The one random generator of the dispatch hot path: splitmix64, in C when built, else in Python.

The pickers' weighted draws and the ticket nonces come from one
:class:`SplitMixRandom`. Its core is ``tcpdispatch._speedups.SplitMix64`` when
the C accelerator is built, else :class:`PySplitMix64`, the same generator
written in Python: both give the same numbers for the same seed, so the C hot
path and the Python one answer byte for byte alike (tests hold them side by side).

splitmix64 (Steele, Lea, Flood 2014; the seeder of xoshiro): a 64-bit counter
stepped by the golden ratio and mixed by two multiply-xorshift rounds. Each
output is a bijection of the counter, so one stream repeats no 64-bit value in
2**64 draws, which is what ticket nonces need (unique, not secret: the MAC
covers them). ``random()`` is the top 53 bits over 2**53, as CPython does.

Generators seeded from the OS (``SplitMixRandom()``, production) and explicitly
seeded ones alike are reseeded from ``os.urandom`` in a forked child: two
workers forked from one parent must not issue the same nonces.
"""

from __future__ import annotations

import hashlib
import os
import random
import weakref
from typing import Any

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
TWO_POW_MINUS_53 = 1.0 / (1 << 53)
ENV = "TCPDISPATCH_SPEEDUPS"  # "0": use the Python core even when the C one is built

try:
    from tcpdispatch._speedups import SplitMix64 as CSplitMix64
except ImportError:  # the accelerator is not built: the Python core serves
    CSplitMix64 = None


class PySplitMix64:
    """splitmix64 in Python, the exact twin of
    ``_speedups.SplitMix64`` (same methods, same numbers)."""

    __slots__ = ("_state",)

    def __init__(self, state: int = 0) -> None:
        self._state = state & MASK

    def next64(self) -> int:
        """The next 64-bit output."""
        x = self._state = (self._state + GOLDEN) & MASK
        x = ((x ^ (x >> 30)) * MIX1) & MASK
        x = ((x ^ (x >> 27)) * MIX2) & MASK
        return x ^ (x >> 31)

    def random(self) -> float:
        """A float in [0, 1): the top 53 bits of one output."""
        return (self.next64() >> 11) * TWO_POW_MINUS_53

    def getrandbits(self, k: int) -> int:
        """The top ``k`` bits (0..64) of one output."""
        if not 0 <= k <= 64:
            raise ValueError("k must be 0..64")
        return self.next64() >> (64 - k) if k else 0

    def getstate(self) -> int:
        return self._state

    def setstate(self, state: int) -> None:
        self._state = state & MASK


def seed_state(seed: int | bytes | str | None) -> int:
    """A 64-bit state from a seed: an int as is (mod
    2**64), other values hashed, None from the OS."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "big")
    if isinstance(seed, int):
        return seed & MASK
    raw = seed.encode() if isinstance(seed, str) else bytes(seed)
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big")


def c_core_available() -> bool:
    """True when the C core is built and not switched off by ``TCPDISPATCH_SPEEDUPS=0``."""
    return CSplitMix64 is not None and os.environ.get(ENV, "1") != "0"


# Every live generator, reseeded from the OS in a forked child.
_LIVE: weakref.WeakSet[random.Random] = weakref.WeakSet()


def _reseed_after_fork() -> None:
    for rng in list(_LIVE):
        rng.seed(None)


def default_generator() -> random.Random:
    """The hot path's generator in production, seeded from the OS and reseeded after fork.

    With the C core built: a :class:`SplitMixRandom` that the C hot path shares. Without it
    there is no C twin to agree with, and a Python splitmix64 draw costs about ten times a
    Mersenne Twister one, so the pure-Python dispatcher keeps ``random.Random``.
    """
    if c_core_available():
        return SplitMixRandom()
    rng = random.Random()
    _LIVE.add(rng)
    return rng


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_after_fork)


class SplitMixRandom(random.Random):
    """A ``random.Random`` whose every draw comes from a splitmix64 core.

    ``pure=True`` takes the Python core even when the C one is built (tests
    compare the two). ``random()``, ``getrandbits(k)`` (k at most 64) and
    ``next64()`` are the core's own methods, bound per instance, so a draw costs
    one C call when the core is C; ``randint``, ``choice`` and the other
    ``random.Random`` helpers work on top of them.
    """

    def __init__(self, seed: int | bytes | str | None = None, *, pure: bool = False) -> None:
        use_c = not pure and c_core_available()
        self.core: Any = CSplitMix64(seed_state(seed)) if use_c else PySplitMix64(seed_state(seed))
        self.random = self.core.random  # type: ignore[method-assign]
        self.getrandbits = self.core.getrandbits  # type: ignore[method-assign]
        self.next64 = self.core.next64  # type: ignore[method-assign]
        self.gauss_next = None
        _LIVE.add(self)

    @property
    def in_c(self) -> bool:
        """True when the core is the C one (the C hot path can then draw from it directly)."""
        return CSplitMix64 is not None and isinstance(self.core, CSplitMix64)

    def seed(self, a: Any = None, version: int = 2) -> None:
        """Restart the stream from ``a`` (None: from the OS)."""
        core = getattr(self, "core", None)
        if core is not None:  # random.Random.__new__ may call seed() before __init__
            core.setstate(seed_state(a))
        self.gauss_next = None

    def getstate(self) -> tuple[int, ...]:
        return (self.core.getstate(),)

    def setstate(self, state: tuple[int, ...]) -> None:
        self.core.setstate(state[0])

    # Class-level versions for random.Random's subclass
    # hooks; instances use the core's bound methods.
    def random(self) -> float:  # type: ignore[override]
        return float(self.core.random())

    def getrandbits(self, k: int) -> int:  # type: ignore[override]
        return int(self.core.getrandbits(k))

    def next64(self) -> int:
        """The next 64-bit output (a ticket nonce)."""
        return int(self.core.next64())
