"""Cost of one connect ticket: tcpdispatch tickets vs itsdangerous vs PyJWT HS256.

Run as ``python -m bench.ticket_cost [--n N] [--repeat R]``. Every library signs
the same claims (gateway id + 2 alternates, client id, expiry, nonce) with the
same 32-byte secret, and is timed in the same process, interleaved round by
round so machine noise hits all of them alike. Libraries that are not installed
are skipped. Figures are the best of ``--repeat`` rounds, in microseconds per call.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from functools import partial

from tcpdispatch.tickets import TicketSigner, TicketVerifier

SECRET = b"bench-secret-0123456789abcdef-xyz"
GATEWAYS = ("gw-eu-1", "gw-eu-2", "gw-us-1")
CLIENT = "client-000123456"

Impl = tuple[Callable[[], object], Callable[[object], object]]


def _ours() -> Impl:
    signer = TicketSigner(SECRET, 60)
    verifier = TicketVerifier([SECRET])
    return (lambda: signer.issue(GATEWAYS, CLIENT)), (
        lambda t: verifier.verify(t, GATEWAYS[0], CLIENT)  # type: ignore[arg-type]
    )


def _itsdangerous() -> Impl | None:
    try:
        from itsdangerous import URLSafeTimedSerializer
    except ImportError:
        return None
    ser = URLSafeTimedSerializer(SECRET, salt="tcpdispatch-ticket")

    def sign() -> object:
        return ser.dumps({"g": GATEWAYS, "c": CLIENT, "n": os.urandom(8).hex()})

    def verify(t: object) -> object:
        claims = ser.loads(t, max_age=60)  # type: ignore[arg-type]
        if GATEWAYS[0] not in claims["g"] or claims["c"] != CLIENT:
            raise AssertionError("bad claims")
        return claims

    return sign, verify


def _pyjwt() -> Impl | None:
    try:
        import jwt
    except ImportError:
        return None

    def sign() -> object:
        now = int(time.time())
        payload = {
            "g": list(GATEWAYS),
            "sub": CLIENT,
            "iat": now,
            "exp": now + 60,
            "jti": os.urandom(8).hex(),
        }
        return jwt.encode(payload, SECRET, algorithm="HS256")

    def verify(t: object) -> object:
        claims = jwt.decode(t, SECRET, algorithms=["HS256"])  # type: ignore[arg-type]
        if GATEWAYS[0] not in claims["g"] or claims["sub"] != CLIENT:
            raise AssertionError("bad claims")
        return claims

    return sign, verify


def _per_call_us(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def measure(n: int, repeat: int) -> dict[str, tuple[float, float, int]]:
    """``{name: (sign_us, verify_us, ticket_len)}``, best of ``repeat`` interleaved rounds."""
    impls: dict[str, Impl] = {"tcpdispatch": _ours()}
    for name, make in (("itsdangerous", _itsdangerous), ("pyjwt-hs256", _pyjwt)):
        impl = make()
        if impl is None:
            print(f"skipping {name}: not installed", file=sys.stderr)
        else:
            impls[name] = impl
    best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name in impls}
    tokens: dict[str, object] = {}
    for _ in range(repeat):
        for name, (sign, verify) in impls.items():
            token = tokens[name] = sign()  # fresh each round: tickets expire after 60 s
            best[name][0] = min(best[name][0], _per_call_us(sign, n))
            best[name][1] = min(best[name][1], _per_call_us(partial(verify, token), n))
    return {name: (s, v, len(str(tokens[name]))) for name, (s, v) in best.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="calls per timing round")
    ap.add_argument("--repeat", type=int, default=5, help="rounds; the best is reported")
    args = ap.parse_args(argv)
    results = measure(args.n, args.repeat)
    print(f"{'library':<14} {'sign µs':>9} {'verify µs':>10} {'ticket chars':>13}")
    for name, (s, v, size) in results.items():
        print(f"{name:<14} {s:>9.2f} {v:>10.2f} {size:>13}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
