"""The ASGI app called directly with fake scope/receive/send: dispatch, errors, admin, push,
metrics."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from tcpdispatch.errors import ErrorCode, TicketError
from tcpdispatch.health import ProbeResult
from tcpdispatch.tickets import TicketVerifier

SECRET = b"test-secret-0123456789abcdef"
ADMIN = "admin-token-123"


@pytest.mark.usefixtures("hot_path")
async def test_dispatch_answer_shape_and_one_ticket_for_all(
    make_app: Any, call_router: Any
) -> None:
    app = make_app()
    r = await call_router(app, "GET", "/v1/dispatch", b"client_id=alice")
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    gw = doc["gateway"]
    assert set(gw) == {"id", "host", "port"} and gw["host"] == "127.0.0.1"
    assert len(doc["alternates"]) == 2
    ids = [gw["id"]] + [a["id"] for a in doc["alternates"]]
    assert sorted(ids) == ["g1", "g2", "g3"]
    assert all(a["ticket"] == doc["ticket"] for a in doc["alternates"])
    assert doc["heartbeat_s"] == 10.0
    assert doc["retry"] == {"initial_s": 1.0, "multiplier": 1.6, "jitter": 0.2, "max_s": 120.0}
    verifier = TicketVerifier([SECRET])
    for gid in ids:
        claims = verifier.verify(doc["ticket"], gid, "alice")
        assert claims.gateway_ids[0] == gw["id"]
    with pytest.raises(TicketError) as info:
        verifier.verify(doc["ticket"], "g9", "alice")
    assert info.value.code is ErrorCode.TICKET_WRONG_GATEWAY


@pytest.mark.usefixtures("hot_path")
async def test_alternates_setting_and_fewer_gateways(make_app: Any, call_router: Any) -> None:
    app = make_app(dispatcher={"alternates": 0})
    assert (await call_router(app, "GET", "/v1/dispatch", b"client_id=a")).json()[
        "alternates"
    ] == []
    app = make_app([{"id": "only", "address": "127.0.0.1:9000"}], dispatcher={"alternates": 5})
    assert (await call_router(app, "GET", "/v1/dispatch", b"client_id=a")).json()[
        "alternates"
    ] == []


@pytest.mark.usefixtures("hot_path")
@pytest.mark.parametrize(
    ("query", "detail"),
    [
        (b"", "client_id is required"),
        (b"client_id=", "client_id is required"),
        (b"other=1", "client_id is required"),
        (b"client_id=" + b"x" * 129, "longer than 128"),
        (b"client_id=a%00b", "printable"),
        (b"client_id=a%0A", "printable"),
        (b"client_id=a&client_id=b", "more than once"),
        (b"client_id=%ff", "UTF-8"),
        (b"client_id=\xff", "ASCII"),
    ],
)
async def test_bad_parameters_get_400_json(
    make_app: Any, call_router: Any, query: bytes, detail: str
) -> None:
    app = make_app()
    r = await call_router(app, "GET", "/v1/dispatch", query)
    assert r.status == 400, r.body
    doc = r.json()
    assert doc["error"] == "bad_request" and detail in doc["detail"]
    assert app.stats.bad_request == 1 and app.stats.dispatched == 0


@pytest.mark.usefixtures("hot_path")
async def test_percent_encoded_and_extra_params_accepted(make_app: Any, call_router: Any) -> None:
    app = make_app()
    r = await call_router(app, "GET", "/v1/dispatch", b"v=2&client_id=caf%C3%A9%20user+x")
    assert r.status == 200  # RFC 3986: '+' is a literal plus, a space is %20
    TicketVerifier([SECRET]).verify(
        r.json()["ticket"], r.json()["gateway"]["id"], "caf\u00e9 user+x"
    )


@pytest.mark.usefixtures("hot_path")
async def test_503_with_jittered_retry_after_when_all_full(
    make_app: Any, call_router: Any, up: Any
) -> None:
    app = make_app(up=False, dispatcher={"retry_after_min": 2, "retry_after_max": 7})
    up(app.pool, connections=5, capacity=5)
    seen = set()
    for _ in range(30):
        r = await call_router(app, "GET", "/v1/dispatch", b"client_id=a")
        assert r.status == 503
        doc = r.json()
        assert doc["error"] == "no_gateway_available" and "capacity" in doc["detail"]
        assert int(r.headers["retry-after"]) == doc["retry_after_s"]
        seen.add(doc["retry_after_s"])
    assert seen <= set(range(2, 8)) and len(seen) > 2  # jittered
    # capacity frees up: dispatch works again without a rebuild
    for gid in app.pool.gateways:
        app.pool.on_result(gid, ProbeResult(ok=True, connections=4, capacity=5))
    assert (await call_router(app, "GET", "/v1/dispatch", b"client_id=a")).status == 200


@pytest.mark.usefixtures("hot_path")
async def test_never_hands_out_a_full_gateway(make_app: Any, call_router: Any, up: Any) -> None:
    app = make_app(up=False)
    up(app.pool, "g1", "g2", connections=0, capacity=10)
    up(app.pool, "g3", connections=0, capacity=1000)
    counts: Counter[str] = Counter()
    for i in range(200):
        r = await call_router(app, "GET", "/v1/dispatch", f"client_id=c{i}".encode())
        counts[r.json()["gateway"]["id"]] += 1
    assert counts["g1"] <= 10 and counts["g2"] <= 10
    assert sum(counts.values()) == 200


@pytest.mark.usefixtures("hot_path")
async def test_503_when_no_gateway_is_up(make_app: Any, call_router: Any) -> None:
    app = make_app(up=False, balancing={"panic_threshold": 0})
    r = await call_router(app, "GET", "/v1/dispatch", b"client_id=a")
    assert r.status == 503 and "no gateway is up" in r.json()["detail"]
    assert app.stats.unavailable == 1


@pytest.mark.usefixtures("hot_path")
async def test_panic_hands_out_all_when_most_are_down(
    make_app: Any, call_router: Any, up: Any
) -> None:
    app = make_app(up=False)  # default panic_threshold 0.5
    up(app.pool, "g1")  # 1 of 3 healthy < 50 %: panic
    assert app.pool.panic
    seen = {
        (await call_router(app, "GET", "/v1/dispatch", f"client_id={i}".encode())).json()[
            "gateway"
        ]["id"]
        for i in range(60)
    }
    assert seen == {"g1", "g2", "g3"}
    assert (await call_router(app, "GET", "/healthz")).json()["panic"] is True
    up(app.pool, "g2")  # 2 of 3: normal again, the down one is not handed out
    assert not app.pool.panic
    seen = {
        (await call_router(app, "GET", "/v1/dispatch", f"client_id={i}".encode())).json()[
            "gateway"
        ]["id"]
        for i in range(60)
    }
    assert seen == {"g1", "g2"}


async def test_unknown_route_and_wrong_method(make_app: Any, call_router: Any) -> None:
    app = make_app()
    r = await call_router(app, "GET", "/nope")
    assert r.status == 404 and r.json()["error"] == "not_found"
    r = await call_router(app, "POST", "/v1/dispatch", b"client_id=a")
    assert r.status == 405 and r.headers["allow"] == "GET"
    r = await call_router(app, "PUT", "/v1/gateways")
    assert r.status == 405 and r.headers["allow"] == "GET, POST"
    r = await call_router(app, "GET", "/v1/gateways/g1/drain")
    assert r.status == 405 and r.json()["error"] == "method_not_allowed"


async def test_admin_requires_bearer_token(make_app: Any, call_router: Any) -> None:
    app = make_app()
    body = {"id": "g4", "address": "127.0.0.1:9004"}
    for token in (None, "wrong-token", ""):
        r = await call_router(app, "POST", "/v1/gateways", json_doc=body, token=token)
        assert r.status == 401 and r.json()["error"] == "unauthorized"
        assert "bearer" in r.headers["www-authenticate"].lower()
    r = await call_router(
        app, "DELETE", "/v1/gateways/g1", headers=[(b"authorization", ADMIN.encode())]
    )
    assert r.status == 401  # token without the Bearer scheme
    assert "g4" not in app.pool.gateways and "g1" in app.pool.gateways


async def test_admin_disabled_without_token(make_app: Any, call_router: Any, tmp_path: Any) -> None:
    app = make_app()
    from dataclasses import replace

    app.configure(replace(app.config, admin_token=None))
    r = await call_router(app, "POST", "/v1/gateways/g1/drain", token=ADMIN)
    assert r.status == 403 and r.json()["error"] == "forbidden"
    assert (
        "no token is configured" in r.json()["detail"] and "admin_token_file" in r.json()["detail"]
    )


async def test_admin_changes_apply_at_once(make_app: Any, call_router: Any, up: Any) -> None:
    app = make_app()

    async def primaries(n: int = 120) -> Counter[str]:
        c: Counter[str] = Counter()
        for i in range(n):
            c[
                (await call_router(app, "GET", "/v1/dispatch", f"client_id=c{i}".encode())).json()[
                    "gateway"
                ]["id"]
            ] += 1
        return c

    r = await call_router(
        app,
        "POST",
        "/v1/gateways",
        json_doc={"id": "g4", "address": "127.0.0.1:9004", "weight": 2},
        token=ADMIN,
    )
    assert r.status == 201 and r.json()["state"] == "down"
    assert (
        await call_router(
            app,
            "POST",
            "/v1/gateways",
            json_doc={"id": "g4", "address": "127.0.0.1:1"},
            token=ADMIN,
        )
    ).status == 409
    up(app.pool, "g4")
    assert (await primaries())["g4"] > 0

    r = await call_router(app, "POST", "/v1/gateways/g3/drain", token=ADMIN)
    assert r.status == 200 and r.json()["state"] == "draining"
    assert "g3" not in await primaries()
    r = await call_router(app, "POST", "/v1/gateways/g3/undrain", token=ADMIN)
    assert r.status == 200 and r.json()["state"] == "up"
    assert (await primaries())["g3"] > 0

    r = await call_router(app, "PATCH", "/v1/gateways/g1", json_doc={"weight": 0}, token=ADMIN)
    assert r.status == 200 and r.json()["weight"] == 0
    assert "g1" not in await primaries()

    r = await call_router(app, "DELETE", "/v1/gateways/g2", token=ADMIN)
    assert r.status == 200 and "g2" not in app.pool.gateways
    assert set(await primaries()) == {"g3", "g4"}
    listing = (await call_router(app, "GET", "/v1/gateways")).json()
    assert [g["id"] for g in listing["gateways"]] == ["g1", "g3", "g4"]
    assert (await call_router(app, "DELETE", "/v1/gateways/g2", token=ADMIN)).status == 404


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        (
            {"body": b"{not json", "headers": [(b"content-type", b"application/json")]},
            400,
            "bad_json",
        ),
        ({"body": b"[1,2]"}, 400, "bad_request"),
        ({"body": b""}, 400, "bad_request"),
        (
            {"body": b'{"id":"g9"}', "headers": [(b"content-type", b"text/plain")]},
            415,
            "unsupported_media_type",
        ),
        (
            {"json_doc": {"id": "g9", "address": "127.0.0.1:1", "weight": -3}},
            400,
            "bad_gateway_spec",
        ),
        (
            {"json_doc": {"id": "g9", "address": "127.0.0.1:1", "colour": "red"}},
            400,
            "bad_gateway_spec",
        ),
        ({"body": b'{"id":"' + b"x" * 80000 + b'"}'}, 413, "body_too_large"),
    ],
)
async def test_malformed_admin_bodies_change_nothing(
    make_app: Any, call_router: Any, kwargs: dict, status: int, error: str
) -> None:
    app = make_app()
    before = sorted(app.pool.gateways)
    r = await call_router(app, "POST", "/v1/gateways", token=ADMIN, **kwargs)
    assert r.status == status, r.body
    assert r.json()["error"] == error and r.json()["detail"]
    assert sorted(app.pool.gateways) == before


async def test_patch_validation(make_app: Any, call_router: Any) -> None:
    app = make_app()
    r = await call_router(app, "PATCH", "/v1/gateways/g1", json_doc={"weight": "x"}, token=ADMIN)
    assert r.status == 400 and "weight" in r.json()["detail"]
    r = await call_router(app, "PATCH", "/v1/gateways/g1", json_doc={"capacity": 3}, token=ADMIN)
    assert r.status == 400 and "capacity" in r.json()["detail"]
    r = await call_router(app, "PATCH", "/v1/gateways/zz", json_doc={"weight": 1}, token=ADMIN)
    assert r.status == 404 and r.json()["error"] == "unknown_gateway"
    assert app.pool.gateways["g1"].config.weight == 1


async def test_passive_report_counts_but_never_keeps_down(make_app: Any, call_router: Any) -> None:
    app = make_app()
    called: list[str] = []
    app.router.on_passive = called.append
    for _ in range(5):
        r = await call_router(
            app, "POST", "/v1/report", json_doc={"gateway_id": "g1", "error": "refused"}
        )
        assert r.status == 202
    assert called == ["g1"] * 5
    assert app.pool.gateways["g1"].health.up  # at most one passive failure counts between probes
    app.pool.on_result("g1", ProbeResult(ok=False, detail="refused"))
    await call_router(app, "POST", "/v1/report", json_doc={"gateway_id": "g1"})
    assert not app.pool.gateways["g1"].health.up
    assert (
        await call_router(app, "POST", "/v1/report", json_doc={"gateway_id": "nope"})
    ).status == 404
    assert (await call_router(app, "POST", "/v1/report", json_doc={"gateway_id": 5})).status == 400
    assert (
        await call_router(app, "POST", "/v1/report", json_doc={"gateway_id": "g2", "error": 1})
    ).status == 400


def _status(gid: str, **kw: Any) -> dict[str, Any]:
    return {
        "id": gid,
        "state": "serving",
        "connections": 0,
        "capacity": 100,
        "cpu": 0.1,
        "address": "127.0.0.1:9100",
        **kw,
    }


async def test_push_heartbeats(make_app: Any, call_router: Any) -> None:
    from tcpdispatch.health import PushTracker

    app = make_app(
        [
            {"id": "p1", "address": "127.0.0.1:9100", "check": "push"},
            {"id": "h1", "address": "127.0.0.1:9101"},
        ],
        up=False,
    )
    app.router.tracker = PushTracker(3.0)
    assert (await call_router(app, "POST", "/v1/heartbeat", json_doc=_status("p1"))).status == 401
    assert (
        await call_router(app, "POST", "/v1/heartbeat", json_doc=_status("p1"), token="bad-token")
    ).status == 401
    for _ in range(2):  # rise = 2
        r = await call_router(
            app, "POST", "/v1/heartbeat", json_doc=_status("p1", connections=7), token=ADMIN
        )
        assert r.status == 204 and r.body == b""
    gw = app.pool.gateways["p1"]
    assert gw.health.up and gw.load.reported == 7 and gw.reported_capacity == 100
    assert app.router.tracker.alive("p1")
    r = await call_router(
        app, "POST", "/v1/heartbeat", json_doc=_status("p1", state="draining"), token=ADMIN
    )
    assert r.status == 204 and app.pool.gateways["p1"].state() == "draining"
    r = await call_router(app, "POST", "/v1/heartbeat", json_doc=_status("h1"), token=ADMIN)
    assert r.status == 409  # actively checked gateways do not take heartbeats
    r = await call_router(app, "POST", "/v1/heartbeat", json_doc=_status("new"), token=ADMIN)
    assert r.status == 404 and "register_unknown" in r.json()["detail"]
    r = await call_router(
        app, "POST", "/v1/heartbeat", json_doc=_status("p1", connections=-1), token=ADMIN
    )
    assert r.status == 400 and "connections" in r.json()["detail"]
    app.pool.push_expired("p1")
    assert not app.pool.gateways["p1"].health.up


async def test_push_registration_of_unknown_gateways(make_app: Any, call_router: Any) -> None:
    app = make_app([], dispatcher={"register_unknown": True})
    for _ in range(2):
        assert (
            await call_router(
                app,
                "POST",
                "/v1/heartbeat",
                json_doc=_status("auto", address="127.0.0.1:9300"),
                token=ADMIN,
            )
        ).status == 204
    gw = app.pool.gateways["auto"]
    assert gw.source == "push" and gw.config.port == 9300 and gw.health.up
    r = await call_router(app, "GET", "/v1/dispatch", b"client_id=x")
    assert r.json()["gateway"] == {"id": "auto", "host": "127.0.0.1", "port": 9300}


async def test_x_forwarded_for_only_from_trusted_proxies(make_app: Any) -> None:
    app = make_app(dispatcher={"trusted_proxies": ["10.0.0.0/8", "::1/128"]})
    xff = [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.7")]
    assert app.service.client_ip("10.0.0.1", xff) == "203.0.113.9"
    assert app.service.client_ip("192.0.2.1", xff) == "192.0.2.1"  # untrusted peer: header ignored
    assert app.service.client_ip("10.0.0.1", []) == "10.0.0.1"
    assert (
        app.service.client_ip("10.0.0.1", [(b"x-forwarded-for", b"1.2.3.4, garbage")]) == "10.0.0.1"
    )
    assert (
        app.service.client_ip("10.0.0.1", [(b"x-forwarded-for", b"spoofed, 198.51.100.1")])
        == "198.51.100.1"
    )


async def test_ip_hash_uses_forwarded_address(make_app: Any, call_router: Any) -> None:
    app = make_app(dispatcher={"policy": "ip_hash", "trusted_proxies": ["10.0.0.0/8"]})
    picks = set()
    for i in range(20):
        r = await call_router(
            app,
            "GET",
            "/v1/dispatch",
            f"client_id=c{i}".encode(),
            client=("10.0.0.1", 1000 + i),
            headers=[(b"x-forwarded-for", b"198.51.100.77")],
        )
        picks.add(r.json()["gateway"]["id"])
    assert len(picks) == 1


async def test_metrics_and_healthz(make_app: Any, call_router: Any) -> None:
    app = make_app()
    await call_router(app, "GET", "/v1/dispatch", b"client_id=a")
    await call_router(app, "GET", "/v1/dispatch", b"")
    r = await call_router(app, "GET", "/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.body.decode()
    assert 'tcpdispatch_dispatch_requests_total{outcome="ok"} 1.0' in text
    assert 'tcpdispatch_dispatch_requests_total{outcome="bad_request"} 1.0' in text
    assert 'tcpdispatch_gateways{state="up"} 3.0' in text
    r = await call_router(app, "GET", "/healthz")
    assert r.status == 200 and r.json()["gateways"] == {"up": 3, "down": 0, "draining": 0}


@pytest.mark.usefixtures("hot_path")
@pytest.mark.parametrize("policy", ["p2c", "round_robin", "random", "least_conn"])
async def test_weighted_shares_over_60000_dispatches(
    make_app: Any, call_router: Any, up: Any, policy: str
) -> None:
    """Weights 1:2:3 give 1/6, 2/6, 3/6 of new connections (within 2 points)."""
    app = make_app(dispatcher={"policy": policy, "alternates": 0}, up=False)
    app.pool.rng.seed(11)
    up(app.pool, capacity=1_000_000)
    n = (
        60_000 if policy == "p2c" else 12_000
    )  # the full run through the ASGI app once; pickers are shared
    for i in range(n):
        r = await call_router(app, "GET", "/v1/dispatch", b"client_id=c%d" % i)
        assert r.status == 200
    per = app.stats.per_gateway
    assert sum(per.values()) == n
    for gid, weight in (("g1", 1), ("g2", 2), ("g3", 3)):
        assert abs(per[gid] / n - weight / 6) < 0.02, (policy, dict(per))


def test_random_is_injected(make_app: Any) -> None:
    app = make_app()
    assert isinstance(app.service.rng, random.Random)
