"""Cost of one pick per balancing policy, over 10 and over 10,000 gateways.

Run as ``python -m bench.pick_cost [--policies p2c,random] [--rounds R] [--budget S]``.
For each policy both pool sizes are timed in the same process, interleaved
round by round so machine noise hits both alike. Time is this thread's CPU
time (``time.thread_time_ns``), so being descheduled on a busy machine does not
count; each figure is the best of ``--rounds`` short rounds (the one least
disturbed by neighbours evicting our caches), in nanoseconds of CPU per
``picker.pick(request)`` (k=1, distinct
client ids and addresses, no gateway full, load growing with the issued
counter as between two reports). Also prints the time to build each picker
over 10,000 gateways, cold (first build) and warm (rebuild, ring points cached).

``c:p2c`` and ``c:random`` time the C hot path instead (``FastDispatch.body``:
pick with 2 alternates, ticket and JSON answer), when ``tcpdispatch._speedups``
is built. They run the same algorithm, so they are reported but not held to
the 1.5x bound: at about 2 us an answer, the cache misses of a 10,000-gateway
table (about 3 MB of candidates, load counters and fragments, against 10
gateways that sit in L1) are a visible share, where the Python pick's
interpreter cost hides them.

Exit status 1 when the p2c or random ratio exceeds 1.5 (the "picking must not
grow with the pool" requirement).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

from tcpdispatch.balancing import (
    POLICIES,
    Candidate,
    LoadCounter,
    Picker,
    PickRequest,
    _ring,
    make_picker,
)

SIZES = (10, 10_000)
CONSTANT_COST = ("p2c", "random")  # policies that must not grow with the pool
MAX_RATIO = 1.5
N_REQUESTS = 4096


def pool(n: int, rng: random.Random) -> list[Candidate]:
    """``n`` gateways with weights 1..4 and some connections already reported."""
    return [
        Candidate(
            f"gw-{i:05d}",
            "10.0.0.1",
            9000 + i % 1000,
            float(rng.randint(1, 4)),
            1_000_000,
            LoadCounter(reported=rng.randint(0, 100)),
        )
        for i in range(n)
    ]


def requests() -> list[PickRequest]:
    return [
        PickRequest(
            client_id=f"client-{i:07d}", client_ip=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        )
        for i in range(N_REQUESTS)
    ]


def time_picks(picker: Picker, reqs: list[PickRequest], count: int) -> float:
    """Nanoseconds per pick over ``count`` picks."""
    pick = picker.pick
    mask = len(reqs) - 1
    t0 = time.thread_time_ns()
    for i in range(count):
        pick(reqs[i & mask])
    return (time.thread_time_ns() - t0) / count


def calibrate(picker: Picker, reqs: list[PickRequest], budget: float) -> int:
    """Picks that take about ``budget`` CPU seconds (at least 2)."""
    per = time_picks(picker, reqs, 20)
    return max(2, int(budget * 1e9 / per))


class CAnswer:
    """The C hot path over one pool, shaped like a picker for the timing loop."""

    def __init__(self, policy: str, candidates: list[Candidate], seed: int) -> None:
        from tcpdispatch.balancing._sampling import WeightedSamplingPicker
        from tcpdispatch.dispatcher import fastpath
        from tcpdispatch.dispatcher.service import Stats
        from tcpdispatch.rng import SplitMixRandom
        from tcpdispatch.tickets import pack_id

        rng = SplitMixRandom(seed)  # the picker's generator is the one C draws from
        picker = make_picker(policy, candidates, rng=rng)
        assert isinstance(picker, WeightedSamplingPicker)
        self.fast = fastpath.FastDispatch(
            **fastpath.settings(
                secret=b"bench-secret-0123456789",
                lifetime=60,
                alternates=2,
                max_client_id=128,
                tail=b'"heartbeat_s":10}',
                stats=Stats(),
                rng=rng,
            )
        )
        frags = {
            c.id: b'{"id":"%s","host":"%s","port":%d' % (c.id.encode(), c.host.encode(), c.port)
            for c in candidates
        }
        fastpath.install(self.fast, picker, frags, {c.id: pack_id(c.id) for c in candidates})

    def pick(self, request: PickRequest) -> bytes:
        return self.fast.body(request.client_id.encode())


def measure(policy: str, rounds: int, budget: float, seed: int) -> dict[str, float]:
    reqs = requests()
    pickers: dict[int, Picker] = {}
    for n in SIZES:
        if policy.startswith("c:"):
            pickers[n] = CAnswer(policy[2:], pool(n, random.Random(seed)), seed)  # type: ignore[assignment]
        else:
            pickers[n] = make_picker(policy, pool(n, random.Random(seed)), rng=random.Random(seed))
    policy = policy.removeprefix("c:")
    # Build cost over the large pool: cold (first build, ring points hashed) and
    # warm (a rebuild after a health change: per-gateway ring points cached).
    big = pool(SIZES[-1], random.Random(seed))
    _ring._points_cache.clear()
    t0 = time.thread_time()
    make_picker(policy, big, rng=random.Random(seed))
    t1 = time.thread_time()
    make_picker(policy, big, rng=random.Random(seed))
    t2 = time.thread_time()
    counts = {n: calibrate(p, reqs, budget) for n, p in pickers.items()}
    samples: dict[int, list[float]] = {n: [] for n in SIZES}
    for _ in range(rounds):
        for n in SIZES:
            samples[n].append(time_picks(pickers[n], reqs, counts[n]))
    small, large = (min(samples[n]) for n in SIZES)
    med_small, med_large = (statistics.median(samples[n]) for n in SIZES)
    return {
        "ns_10": small,
        "ns_10000": large,
        "ratio": large / small,
        "median_ratio": med_large / med_small,
        "build_ms_10000": (t1 - t0) * 1e3,
        "rebuild_ms_10000": (t2 - t1) * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated (default: all)")
    ap.add_argument(
        "--rounds", type=int, default=101, help="interleaved rounds per policy (default 101)"
    )
    ap.add_argument(
        "--budget", type=float, default=0.004, help="CPU seconds per timed batch (default 0.004)"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    results = {}
    for name in args.policies.split(","):
        results[name] = measure(name.strip(), args.rounds, args.budget, args.seed)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(
            f"{'policy':<16}{'ns/pick @10':>12}{'ns/pick @10k':>14}{'ratio':>8}{'(median)':>10}"
            f"{'build @10k':>13}{'rebuild @10k':>15}"
        )
        for name, r in results.items():
            print(
                f"{name:<16}{r['ns_10']:>12,.0f}{r['ns_10000']:>14,.0f}{r['ratio']:>8.2f}"
                f"{r['median_ratio']:>10.2f}"
                f"{r['build_ms_10000']:>10,.1f} ms{r['rebuild_ms_10000']:>12,.1f} ms"
            )
    bad = [n for n in CONSTANT_COST if n in results and results[n]["ratio"] > MAX_RATIO]
    if bad:
        print(
            f"FAIL: pick cost grows with the pool for {', '.join(bad)} (ratio > {MAX_RATIO})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
