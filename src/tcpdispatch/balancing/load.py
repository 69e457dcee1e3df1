"""``load``: dynamic weights from the utilization the gateways report (ORCA-style).

Each gateway's effective weight is ``weight / max(utilization, floor)``, the
way gRPC's ORCA-fed weighted round robin derives weights from backend
utilization: a gateway reporting 20 % CPU counts 2.5x one reporting 50 %.
It is combined with connection load by weighted power of two choices: draw
two gateways by static weight, keep the lower
``(load.current + 1) / effective weight``
= ``(load.current + 1) * max(utilization, floor) / weight``.

- ``floor`` (default 0.1) bounds how attractive a nearly idle gateway can look:
  low utilization readings are noisy and mostly baseline, and without a floor
  a gateway reporting 0.001 would take every client until its next report.
- The connection term keeps it safe between reports: utilization is at least
  one report interval old, while ``load.current`` moves with every ticket
  this dispatcher issues, so a gateway that looked idle fills up gradually.
- Fallback: a gateway that reports no utilization (``None``, or NaN/negative)
  is scored with the mean of the utilizations the others report; when nobody
  reports, all use 1.0 and the policy is ``p2c`` (on load + 1).

At equilibrium it equalizes connections x utilization per unit of weight, so
a gateway whose connections cost twice as much CPU ends up with ~1/sqrt(2) of
the connections of its peer: it moves load towards the cheaper gateway without
reacting fully to one noisy reading.

Complexity: build O(n); pick O(1) expected as p2c; the mean utilization is
re-summed every max(64, n/16) scores that need it (O(1) amortized), i.e. only
while some gateway does not report.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from tcpdispatch.balancing._sampling import TwoChoicePicker
from tcpdispatch.balancing.base import Candidate

DEFAULT_FLOOR = 0.1


class LoadPicker(TwoChoicePicker):
    """Power of two choices on connections x reported utilization per unit of weight."""

    name = "load"
    options = (("floor", "load_floor"),)

    def __init__(
        self,
        candidates: Sequence[Candidate],
        *,
        rng: random.Random | None = None,
        floor: float = DEFAULT_FLOOR,
    ) -> None:
        super().__init__(candidates, rng=rng)
        if not (0.0 < floor <= 1.0):
            raise ValueError(f"floor must be in (0, 1], got {floor!r}")
        self.floor = floor
        # The mean only moves when reports arrive, so a few dozen picks of
        # staleness cost nothing; re-summing on every pick would double the cost.
        self._refresh_every = max(64, self._n // 16)
        self._countdown = 0
        self._default = 1.0

    def _default_utilization(self) -> float:
        if self._countdown <= 0:
            reported = [
                u
                for c in self.candidates
                if (u := c.load.utilization) is not None and u >= 0.0 and math.isfinite(u)
            ]
            self._default = sum(reported) / len(reported) if reported else 1.0
            self._countdown = self._refresh_every
        self._countdown -= 1
        return self._default

    def _score(self, c: Candidate) -> float:
        u = c.load.utilization
        if u is None or not (u >= 0.0):  # `not >=` also catches NaN
            u = self._default_utilization()
        return (c.load.current + 1) * max(u, self.floor) / c.weight

    def _better(self, a: Candidate, b: Candidate) -> bool:
        return self._score(a) <= self._score(b)
