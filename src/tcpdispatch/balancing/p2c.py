"""``p2c``: weighted power of two choices (the default policy).

Draw two distinct usable gateways in proportion to their weight, keep the one
with the lower ``load.current / weight``. Ties go to the first draw, which is
itself random.

Why it is the default: the load it compares is always somewhat stale (last
report + tickets this replica issued since), and several dispatcher replicas
decide independently. "Pick the global minimum" (least_conn) sends every
request between two reports to the same gateway and herds; two random choices
spread them, yet still avoid the loaded ones (Mitzenmacher: the maximum load
drops from O(log n / log log n) to O(log log n) with the second choice).
The weighted draw plus the per-weight comparison keep shares proportional to
the weights (1:2:3 -> 1/6, 2/6, 3/6) once load grows with the picks.

Complexity: build O(n) (alias table); pick O(1) expected, independent of the
pool size; O(n) fallback only when repeated draws keep hitting full/excluded
gateways, or when one gateway holds nearly all the weight and the second
distinct draw keeps returning it.
"""

from __future__ import annotations

from tcpdispatch.balancing._sampling import C_TWO_CHOICES, TwoChoicePicker
from tcpdispatch.balancing.base import Candidate


class P2CPicker(TwoChoicePicker):
    """Weighted power of two choices on connections per unit of weight."""

    name = "p2c"
    c_policy = C_TWO_CHOICES

    def _better(self, a: Candidate, b: Candidate) -> bool:
        # a.load/a.weight <= b.load/b.weight, without the divisions.
        return a.load.current * b.weight <= b.load.current * a.weight
