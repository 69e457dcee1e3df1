"""Overload protection by performance: is a gateway collapsing? (pure, no I/O, no clock)

Capacity limits protect a gateway from too many connections; they do not see a
gateway whose *performance* collapses below its capacity (a handler burning CPU,
a noisy neighbour on its core). :class:`OverloadState` judges that from three
signals, each with an enter and a lower exit threshold (hysteresis, so a gateway
hovering at one threshold does not flap):

- ``busy``: the busiest worker's event-loop busy fraction (0..1 of one core),
  measured by the gateway per worker over a short window (a worker saturates at
  one core, so node-wide CPU would hide it);
- ``lag``: the busiest worker's event-loop lag in seconds, measured by the
  gateway (it also catches a worker starved by another process on its core);
- ``latency``: what the dispatcher itself sees, how late a watched status tick
  arrived (or how long a polled status answer took). It also grows when the
  dispatcher or the network is the slow one, for every gateway at once, so the
  pool passes it only for gateways that do not measure themselves (a plain
  status page); a tcpdispatch gateway is judged by its own ``busy`` and ``lag``.

One bad status is a blip (a GC pause, the first status after a SIGSTOP, which
carries the stall's lag), so a gateway enters after ``samples`` consecutive
statuses with some signal at or over its enter threshold, and leaves when one
status has every signal at or under its exit threshold. The owner (the dispatcher's
pool) stops handing out an overloaded gateway, whatever the balancing policy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OverloadThresholds:
    """Enter/exit thresholds (see :class:`~tcpdispatch.health.settings.HealthSettings`)."""

    busy: float = 0.9
    busy_exit: float = 0.7
    lag: float = 0.1
    lag_exit: float = 0.03
    latency: float = 0.25
    latency_exit: float = 0.1
    samples: int = 2


class OverloadState:
    """Hysteresis for one gateway; :meth:`observe` returns True when ``over`` changed."""

    __slots__ = ("_hot", "over", "reason")

    def __init__(self) -> None:
        self.over = False
        self.reason = ""
        self._hot = 0  # consecutive samples with a signal at or over its enter threshold

    def observe(
        self, t: OverloadThresholds, busy: float | None, lag: float | None, latency: float
    ) -> bool:
        """Feed one status sample (None: the gateway does not report that signal)."""
        why = []
        if busy is not None and busy >= t.busy:
            why.append(f"busy {busy:.2f} >= {t.busy:g}")
        if lag is not None and lag >= t.lag:
            why.append(f"event-loop lag {lag * 1000:.0f} ms >= {t.lag * 1000:.0f} ms")
        if latency >= t.latency:
            why.append(f"status {latency * 1000:.0f} ms late >= {t.latency * 1000:.0f} ms")
        self._hot = self._hot + 1 if why else 0
        if not self.over:
            if self._hot >= t.samples:
                self.over = True
                self.reason = f"{'; '.join(why)}, {self._hot} statuses in a row"
                return True
            return False
        cool = (
            (busy is None or busy <= t.busy_exit)
            and (lag is None or lag <= t.lag_exit)
            and latency <= t.latency_exit
        )
        if cool:
            parts = [
                f"busy {busy:.2f}" if busy is not None else "",
                f"lag {lag * 1000:.0f} ms" if lag is not None else "",
                f"status latency {latency * 1000:.0f} ms",
            ]
            self.over, self.reason = False, ", ".join(p for p in parts if p)
            return True
        return False

    def __repr__(self) -> str:
        return f"OverloadState(over={self.over}, reason={self.reason!r})"


__all__ = ["OverloadState", "OverloadThresholds"]
