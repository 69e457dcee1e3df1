"""Hypothesis over every input the dispatcher's HTTP API takes, calling the ASGI app directly.

Properties, for any query string, path, method, header and body:

* the answer is a well-formed HTTP response with a status below 500, and a JSON
  body (``{"error", "detail"}`` for 4xx) unless it is a 204, a HEAD or /metrics;
* a rejected request (4xx, 503) changes nothing in the pool: membership, weights,
  health counters, drain flags, load counters and the picker stay as they were;
* nothing that changes the pool succeeds without the admin (or push) token;
* a 200 dispatch answer carries a ticket that verifies for the gateways it names.
"""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpdispatch.tickets import TicketVerifier

SECRET = b"test-secret-0123456789abcdef"  # tests/dispatcher/conftest.py
ADMIN = "admin-token-123"
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
IDS = ["g1", "g2", "g3", "nope", "", "g1/x", "../g1", "g\u00e9", "x" * 70]
MUTATING = {
    ("POST", "/v1/gateways"),
    ("PATCH", "gw"),
    ("DELETE", "gw"),
    ("POST", "drain"),
    ("POST", "undrain"),
    ("POST", "/v1/reload"),
    ("POST", "/v1/heartbeat"),
}


def snapshot(app: Any) -> Any:
    """Everything about the pool a request could change."""
    pool = app.pool
    return (
        pool.rebuilds,
        pool.panic,
        {
            gid: (
                json.dumps(pool.describe(g), sort_keys=True),
                repr(g.health),
                g.health._passive_since_probe,
                g.load.reported,
                g.load.issued,
            )
            for gid, g in pool.gateways.items()
        },
        [(c.id, c.weight) for c in pool.picker.candidates],
    )


def check_response(path: str, method: str, r: Any) -> Any:
    assert 100 <= r.status < 500 or r.status == 503, (r.status, r.body[:200])
    if method == "HEAD" or r.status == 204 or (path == "/metrics" and r.status == 200):
        return None
    assert r.headers.get("content-type") == "application/json", r.headers
    doc = json.loads(r.body)
    if r.status >= 400:
        assert (
            isinstance(doc, dict)
            and isinstance(doc["error"], str)
            and isinstance(doc["detail"], str)
        )
        assert doc["detail"]
    return doc


# ---------------------------------------------------------------------------- GET /v1/dispatch

texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
pct = st.sampled_from(
    ["%", "%2", "%zz", "%00", "%41", "%c3%a9", "%ff", "%e2%82", "+", "&", "=", "%26", "%3D"]
)
value = st.lists(st.one_of(texts, pct), max_size=6).map("".join)
name = st.sampled_from(
    ["client_id", "client_id", "Client_ID", "client_id[]", "x", "", "client%5Fid"]
)
pair = st.one_of(st.tuples(name, value).map(lambda t: f"{t[0]}={t[1]}"), name)
query = st.one_of(
    st.lists(pair, max_size=4).map(lambda ps: "&".join(ps).encode("utf-8")),
    st.binary(max_size=120),
    st.builds(lambda n: b"client_id=" + b"a" * n, st.integers(100, 300)),
)
xff = st.one_of(
    st.none(),
    st.binary(max_size=60),
    st.lists(
        st.sampled_from(
            ["1.2.3.4", "10.0.0.1", "::1", "junk", " ", "", "300.1.1.1", "fe80::1%eth0", "10.9.9.9"]
        ),
        max_size=5,
    ).map(", ".join),
)


@FUZZ
@given(queries=st.lists(st.tuples(query, xff), min_size=1, max_size=6), trusted=st.booleans())
async def test_dispatch_query_never_breaks(
    make_app: Any, call_router: Any, queries: Any, trusted: bool
) -> None:
    extra = {"dispatcher": {"trusted_proxies": ["10.0.0.0/8"]}} if trusted else {}
    app = make_app(**extra)
    verifier = TicketVerifier([SECRET])
    for qs, forwarded in queries:
        headers = []
        if forwarded is not None:
            headers.append(
                (
                    b"x-forwarded-for",
                    forwarded if isinstance(forwarded, bytes) else forwarded.encode(),
                )
            )
        before = snapshot(app)
        r = await call_router(app, "GET", "/v1/dispatch", qs, headers=headers)
        doc = check_response("/v1/dispatch", "GET", r)
        assert r.status in (200, 400, 503)
        if r.status != 200:
            assert snapshot(app) == before
            continue
        named = [doc["gateway"]["id"], *(a["id"] for a in doc["alternates"])]
        assert len(set(named)) == len(named) and set(named) <= set(app.pool.gateways)
        claims = verifier.verify(doc["ticket"], named[0])
        assert list(claims.gateway_ids) == named
        assert (
            claims.client_id
            and claims.client_id.isprintable()
            and len(claims.client_id.encode()) <= 128
        )


# ---------------------------------------------------------------------------- everything else

numbers = st.one_of(
    st.integers(-5, 2_000_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    texts,
    st.lists(st.integers(), max_size=2),
)
addresses = st.one_of(
    st.sampled_from(
        [
            "127.0.0.1:9100",
            "127.0.0.1:0",
            "[::1]:9101",
            "host:70000",
            ":9",
            "127.0.0.1",
            "a b:1",
            "127.0.0.1:9101",
        ]
    ),
    texts,
)
checks = st.one_of(
    st.sampled_from(
        [
            "push",
            "tcp://127.0.0.1:9100",
            "http://127.0.0.1:1/status",
            "agent://127.0.0.1:5",
            "ftp://x",
            "http://",
            "tcp://:0",
        ]
    ),
    texts,
)
ids = st.one_of(st.sampled_from(IDS), texts)
gateway_doc = st.fixed_dictionaries(
    {"id": ids, "address": addresses},
    optional={"check": checks, "weight": numbers, "capacity": numbers, "extra": numbers},
)
status_doc = st.fixed_dictionaries(
    {"id": ids},
    optional={
        "state": st.sampled_from(["serving", "draining", "up", ""]),
        "connections": numbers,
        "capacity": numbers,
        "cpu": numbers,
        "address": addresses,
    },
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=8,
)
docs = st.one_of(
    gateway_doc,
    status_doc,
    st.fixed_dictionaries({"weight": numbers}),
    st.fixed_dictionaries({"gateway_id": ids, "error": st.one_of(texts, numbers)}),
    json_values,
)
bodies = st.one_of(
    docs.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=80),
    st.builds(lambda n: b'{"id": "' + b"x" * n + b'"}', st.integers(200, 400)),
)
paths = st.one_of(
    st.sampled_from(
        [
            "/v1/gateways",
            "/v1/report",
            "/v1/heartbeat",
            "/v1/reload",
            "/metrics",
            "/healthz",
            "/v1/dispatch",
            "/",
            "/v1/gateways/",
            "//v1/gateways",
        ]
    ),
    st.tuples(ids, st.sampled_from(["", "/drain", "/undrain", "/x", "/drain/more"])).map(
        lambda t: f"/v1/gateways/{t[0]}{t[1]}"
    ),
)
tokens = st.sampled_from(
    [
        None,
        ADMIN,
        ADMIN,
        "wrong",
        ADMIN + "x",
        ADMIN[:-1],
        "",
        f"Basic {ADMIN}",
        f"bearer {ADMIN}",
        f"Bearer  {ADMIN} ",
        f"Bearer {ADMIN}\x00",
    ]
)
ctypes = st.sampled_from(
    [
        None,
        b"application/json",
        b"application/json; charset=utf-8",
        b"text/plain",
        b"APPLICATION/JSON",
        b"\xff",
    ]
)
lengths = st.one_of(st.none(), st.sampled_from([b"0", b"-1", b"abc", b"99999999", b"5"]))
request = st.tuples(
    st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"]),
    paths,
    tokens,
    ctypes,
    lengths,
    bodies,
)


def classify(method: str, path: str) -> tuple[str, str] | None:
    if path.startswith("/v1/gateways/"):
        rest = path[len("/v1/gateways/") :]
        action = rest.partition("/")[2]
        return (method, action or "gw") if action in ("", "drain", "undrain") else None
    return (method, path)


@FUZZ
@given(requests=st.lists(request, min_size=1, max_size=8))
async def test_admin_and_report_inputs_never_break(
    make_app: Any, call_router: Any, requests: Any
) -> None:
    app = make_app(dispatcher={"max_body": 256})
    for method, path, token, ctype, length, body in requests:
        headers: list[tuple[bytes, bytes]] = []
        if token is not None:
            raw = token if token.startswith(("Basic", "bearer", "Bearer")) else f"Bearer {token}"
            headers.append((b"authorization", raw.encode()))
        if ctype is not None:
            headers.append((b"content-type", ctype))
        if length is not None:
            headers.append((b"content-length", length))
        before = snapshot(app)
        r = await call_router(app, method, path, headers=headers, body=body)
        check_response(path, method, r)
        if r.status >= 400:
            assert snapshot(app) == before, (method, path, r.status, r.body[:200])
        elif classify(method, path) in MUTATING and r.status < 300:
            # The scheme is case-insensitive and spaces around the credential do not matter.
            scheme, _, cred = (token or "").strip().partition(" ")
            given = cred.strip() if scheme.lower() == "bearer" else token
            assert given == ADMIN, (method, path, token, r.status)


async def test_tokens_are_compared_in_constant_time(make_app: Any, call_router: Any) -> None:
    """The admin check goes through hmac.compare_digest, never ``==`` on the secret."""
    import hmac

    from tcpdispatch import httputil

    app = make_app()
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    with mock.patch.object(httputil.hmac, "compare_digest", spy):
        r = await call_router(app, "DELETE", "/v1/gateways/g1", token="guess")
        assert r.status == 401 and "g1" in app.pool.gateways
        assert calls == [(b"guess", ADMIN.encode())]
