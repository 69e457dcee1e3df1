"""The C hot path (tcpdispatch._speedups) against the Python rules it stands in for.

Tickets must verify exactly like Python-issued ones, picks must honour weights,
capacity and headroom, and the request recogniser may only take requests that
httptools parses as the very same single plain dispatch.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httptools
import pytest
from dispatcher_stack import Stack
from helpers import require_speedups
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpdispatch.dispatcher import fastpath
from tcpdispatch.errors import TicketError
from tcpdispatch.tickets import TicketVerifier

from .conftest import SECRET, bring_up

pytestmark = pytest.mark.usefixtures("_needs_speedups")

PLAIN = b"GET /v1/dispatch?client_id=alice HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def _needs_speedups() -> None:
    require_speedups()


@pytest.fixture
def app(make_app: Callable[..., Stack]) -> Stack:
    a = make_app()
    assert a.service.fast is not None and a.service.fast.active, (
        "p2c with the real clock must use the C path"
    )
    a.service.set_date(b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n")
    return a


def verifier() -> TicketVerifier:
    return TicketVerifier([SECRET.encode()])


def answer_body(answer: bytes) -> dict[str, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(
        next(ln for ln in head.split(b"\r\n") if ln.startswith(b"content-length:")).split(b":")[1]
    )
    assert length == len(body)
    return json.loads(body)


# ------------------------------------------------------------------ tickets and answers


def test_c_ticket_verifies_at_every_named_gateway_and_nowhere_else(app: Stack) -> None:
    doc = json.loads(app.service.fast.body(b"alice"))
    ids = [doc["gateway"]["id"]] + [a["id"] for a in doc["alternates"]]
    assert sorted(ids) == ["g1", "g2", "g3"]
    assert all(a["ticket"] == doc["ticket"] for a in doc["alternates"])  # one signature for all
    for gid in ids:
        claims = verifier().verify(doc["ticket"], gid, "alice")
        assert claims.gateway_ids == tuple(ids) and claims.client_id == "alice"
        assert claims.expires_at - claims.issued_at == app.config.ticket_lifetime
        assert abs(claims.issued_at - time.time()) <= 2
    with pytest.raises(TicketError):
        verifier().verify(doc["ticket"], "g9", "alice")
    with pytest.raises(TicketError):
        verifier().verify(doc["ticket"], ids[0], "mallory")
    with pytest.raises(TicketError):
        TicketVerifier([b"another-secret-0123456789"]).verify(doc["ticket"], ids[0], "alice")


def test_c_answer_has_the_python_answer_shape(app: Stack, make_app: Callable[..., Stack]) -> None:
    c_doc = json.loads(app.service.fast.body(b"bob"))
    py = make_app(dispatcher={"speedups": False})
    assert py.service.fast is None
    status, _, body = py.service.dispatch_bytes(b"client_id=bob", "127.0.0.1", [])
    py_doc = json.loads(body)
    assert status == 200 and c_doc.keys() == py_doc.keys()
    assert {k: v for k, v in c_doc.items() if k not in ("gateway", "ticket", "alternates")} == {
        k: v for k, v in py_doc.items() if k not in ("gateway", "ticket", "alternates")
    }
    by_id = {g["id"]: g for g in [py_doc["gateway"], *py_doc["alternates"]]}
    for g in [c_doc["gateway"], *c_doc["alternates"]]:
        expected = {k: v for k, v in by_id[g["id"]].items() if k != "ticket"}
        assert {k: v for k, v in g.items() if k != "ticket"} == expected


def test_nonces_are_unique_and_stats_are_counted(app: Stack) -> None:
    nonces = set()
    for i in range(5000):
        doc = json.loads(app.service.fast.body(b"c%d" % i))
        nonces.add(verifier().verify(doc["ticket"], doc["gateway"]["id"], f"c{i}").nonce)
    assert len(nonces) == 5000
    assert app.stats.dispatched == 5000 and sum(app.stats.per_gateway.values()) == 5000


def test_issued_tickets_raise_the_primary_load(app: Stack) -> None:
    before = {gid: gw.load.issued for gid, gw in app.pool.gateways.items()}
    firsts = Counter(json.loads(app.service.fast.body(b"x"))["gateway"]["id"] for _ in range(300))
    after = {gid: gw.load.issued for gid, gw in app.pool.gateways.items()}
    assert {gid: after[gid] - before[gid] for gid in after} == {
        gid: firsts.get(gid, 0) for gid in after
    }


@pytest.mark.parametrize("policy", ["p2c", "random"])
def test_weights_1_2_3_give_shares_within_2_points(
    make_app: Callable[..., Stack], policy: str
) -> None:
    app = make_app(dispatcher={"policy": policy}, up=False)
    bring_up(app.pool, capacity=1_000_000)
    assert app.service.fast.active
    counts = Counter(
        json.loads(app.service.fast.body(b"c"))["gateway"]["id"] for _ in range(60_000)
    )
    for gid, weight in (("g1", 1), ("g2", 2), ("g3", 3)):
        assert abs(counts[gid] / 60_000 - weight / 6) < 0.02, (policy, counts)


def test_large_pool_alternates_are_distinct_and_weighted(make_app: Callable[..., Stack]) -> None:
    gws = [
        {"id": f"gw-{i}", "address": f"127.0.0.1:{9100 + i}", "weight": 1 + i % 4}
        for i in range(40)
    ]
    app = make_app(gws, dispatcher={"alternates": 4})
    seen: Counter[str] = Counter()
    for _ in range(4000):
        doc = json.loads(app.service.fast.body(b"c"))
        ids = [doc["gateway"]["id"]] + [a["id"] for a in doc["alternates"]]
        assert len(ids) == 5 and len(set(ids)) == 5
        seen[ids[0]] += 1
    heavy = sum(seen[f"gw-{i}"] for i in range(40) if i % 4 == 3)
    light = sum(seen[f"gw-{i}"] for i in range(40) if i % 4 == 0)
    assert 2.5 < heavy / light < 5.5  # weights 4 vs 1, loads rising with the picks


def test_full_gateways_are_never_handed_out(make_app: Callable[..., Stack]) -> None:
    app = make_app(up=False)
    bring_up(app.pool, capacity=10)  # 3 gateways x 10 connections (high-water mark 1.0 by default)
    assert app.service.fast.active
    limit = sum(c.limit for c in app.pool.picker.candidates)
    firsts = Counter()
    for _ in range(limit):
        doc = json.loads(app.service.fast.body(b"c"))
        firsts[doc["gateway"]["id"]] += 1
        for alt in doc["alternates"]:
            gw = app.pool.gateways[alt["id"]]
            assert gw.load.current < next(
                c.limit for c in app.pool.picker.candidates if c.id == alt["id"]
            )
    assert app.service.fast.body(b"c") is None  # all full: the Python path answers 503
    status, retry_after, _ = app.service.dispatch_bytes(b"client_id=c", "127.0.0.1", [])
    assert status == 503 and retry_after is not None
    assert all(app.pool.gateways[g].load.current <= 10 for g in firsts)


def test_headroom_from_an_agent_reply_caps_tickets(app: Stack) -> None:
    for gid, gw in app.pool.gateways.items():
        gw.load.report(0, headroom=2 if gid == "g3" else 0)
    firsts = Counter(json.loads(app.service.fast.body(b"c"))["gateway"]["id"] for _ in range(2))
    assert firsts == {"g3": 2}
    assert app.service.fast.body(b"c") is None


def test_keyed_policies_keep_the_python_path(make_app: Callable[..., Stack]) -> None:
    for policy in ("round_robin", "ip_hash", "consistent_hash", "least_conn", "load"):
        app = make_app(dispatcher={"policy": policy})
        assert app.service.fast is not None and not app.service.fast.active
        assert app.service.fast.request(PLAIN) is None
        assert app.service.dispatch_bytes(b"client_id=a", "127.0.0.1", [])[0] == 200


def test_reload_changes_the_c_signing_secret(app: Stack, make_config: Any, tmp_path: Any) -> None:
    (tmp_path / "new.secret").write_text("a-brand-new-secret-0123456789\n")
    app.configure(make_config(dispatcher={"secret_file": "new.secret"}))
    doc = json.loads(app.service.fast.body(b"alice"))
    TicketVerifier([b"a-brand-new-secret-0123456789"]).verify(
        doc["ticket"], doc["gateway"]["id"], "alice"
    )
    with pytest.raises(TicketError):
        verifier().verify(doc["ticket"], doc["gateway"]["id"], "alice")


def test_speedups_can_be_switched_off(make_app: Callable[..., Stack], monkeypatch: Any) -> None:
    assert make_app(dispatcher={"speedups": False}).service.fast is None
    monkeypatch.setenv(fastpath.ENV, "0")
    assert make_app().service.fast is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_issue_different_nonces(app: Stack) -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the next nonce and leave at once
        try:
            os.write(write, json.loads(app.service.fast.body(b"a"))["ticket"].encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 4096).decode()
    os.close(read)
    os.waitpid(pid, 0)
    mine = json.loads(app.service.fast.body(b"a"))["ticket"]
    assert (
        child
        and verifier().verify(child, "g1", "a").nonce != verifier().verify(mine, "g1", "a").nonce
    )


# ------------------------------------------------------------------ the request recogniser


def test_a_plain_request_is_answered_whole(app: Stack) -> None:
    answer, close = app.service.fast.request(PLAIN)
    assert not close and answer.startswith(b"HTTP/1.1 200 OK\r\ndate: Thu, 01 Jan 2026")
    assert answer_body(answer)["gateway"]["id"] in {"g1", "g2", "g3"}
    answer, close = app.service.fast.request(
        PLAIN.replace(b"\r\n\r\n", b"\r\nConnection:  Close \r\n\r\n")
    )
    assert close and b"\r\nconnection: close\r\n" in answer
    _, close = app.service.fast.request(
        PLAIN.replace(b"\r\n\r\n", b"\r\nconnection: keep-alive\r\n\r\n")
    )
    assert not close
    shortest = app.service.fast.request(b"GET /v1/dispatch?client_id=a HTTP/1.1\r\n\r\n")
    assert shortest is not None and answer_body(shortest[0])["gateway"]["id"] in {"g1", "g2", "g3"}


@pytest.mark.parametrize(
    "raw",
    [
        PLAIN.replace(b"Host: x", b"Content-Length: 0"),
        PLAIN.replace(b"Host: x", b"transfer-encoding: chunked"),
        PLAIN.replace(b"Host: x", b"Upgrade: websocket"),
        PLAIN.replace(b"Host: x", b"Expect: 100-continue"),
        PLAIN.replace(b"Host: x", b"Connection: keep-alive, Upgrade"),
        PLAIN.replace(b"Host: x", b"Proxy-Connection: close"),  # llhttp reads it as Connection
        PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"),
        PLAIN.replace(b"GET", b"get"),
        PLAIN + PLAIN,  # pipelined: httptools keeps the order
        PLAIN[:-2],  # incomplete
        PLAIN.replace(b"\r\n\r\n", b"\n\n"),
        PLAIN.replace(b"Host: x\r\n", b"Host: x\r\n folded\r\n"),
        PLAIN.replace(b"Host: x", b"Host : x"),
        PLAIN.replace(b"Host: x", b"Ho\x01st: x"),
        PLAIN.replace(b"Host: x", b"Host: x\ry"),
        PLAIN.replace(b"alice", b"al%20ice"),
        PLAIN.replace(b"alice", b"alice&x=1"),
        PLAIN.replace(b"alice", b"a#frag"),
        PLAIN.replace(b"client_id=alice", b"client_id="),
        PLAIN.replace(b"client_id=alice", b"x=1&client_id=alice"),
        PLAIN.replace(b"alice", b"a" * 129),  # over max_client_id (128)
        PLAIN.replace(b"Host: x\r\n", b"H: v\r\n" * 101),  # over 100 header fields
        PLAIN.replace(b"Host: x", b"Host: " + b"x" * 17000),  # over the 16 KiB head limit
        # 16,384 bytes raw but over 16 KiB as the Python path counts it (name + value + 4 per field)
        PLAIN.replace(
            b"Host: x\r\n", b"a:b\r\n" * 99 + b"h:" + b"x" * (16384 - 45 - 99 * 5 - 4) + b"\r\n"
        ),
        b"GET /v1/dispatchx?client_id=alice HTTP/1.1\r\n\r\n",
        b"POST /v1/dispatch?client_id=alice HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_anything_unusual_is_left_to_the_python_path(app: Stack, raw: bytes) -> None:
    before = app.stats.dispatched
    assert app.service.fast.request(raw) is None
    assert app.stats.dispatched == before  # nothing picked, no ticket counted


class _Parsed:
    def __init__(self) -> None:
        self.url = b""
        self.complete = 0
        self.begun = 0
        self.parser: httptools.HttpRequestParser | None = None
        self.keep_alive: bool | None = None
        self.upgrade: bool | None = None

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        self.complete += 1
        assert self.parser is not None  # llhttp resets these flags once the callback returns
        self.keep_alive = self.parser.should_keep_alive()
        self.upgrade = self.parser.should_upgrade()


_token = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$'*.^_`|~",
    min_size=1,
    max_size=12,
)
_keyword = st.sampled_from(
    [b"close", b" Close ", b"keep-alive", b"Keep-Alive", b"upgrade", b"close, upgrade"]
)
_value = st.one_of(
    _keyword,
    _keyword,  # listed twice: drawn half of the time
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20).map(str.encode),
    st.binary(max_size=20).map(lambda b: bytes(c for c in b if c not in b"\r\n")),
)
_special = st.sampled_from(
    [
        "Connection",
        "connection",
        "Proxy-Connection",
        "content-length",
        "Transfer-Encoding",
        "Upgrade",
        "Expect",
        "Host",
        "X-Forwarded-For",
    ]
)
_name = st.one_of(_special, _special, _token)
_cid = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20),
    st.text("abcXYZ019-_.:~", min_size=1, max_size=20),
)


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cid=_cid,
    headers=st.lists(st.tuples(_name, _value), max_size=4),
    version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    tail=st.sampled_from([b"", b"GET / HTTP/1.1\r\n"]),
)
def test_whatever_the_recogniser_takes_httptools_reads_the_same_way(
    app: Stack, cid: str, headers: list[tuple[str, bytes]], version: bytes, tail: bytes
) -> None:
    raw = b"GET /v1/dispatch?client_id=%b %b\r\n" % (cid.encode(), version)
    raw += b"".join(b"%b: %b\r\n" % (n.encode(), v) for n, v in headers) + b"\r\n" + tail
    result = app.service.fast.request(raw)
    if result is None:
        return
    answer, close = result
    parsed = _Parsed()
    parser = parsed.parser = httptools.HttpRequestParser(parsed)
    parser.feed_data(raw)  # must not raise: the recogniser took only valid requests
    assert parsed.begun == parsed.complete == 1  # exactly one whole request, nothing after it
    assert parser.get_method() == b"GET" and parser.get_http_version() == "1.1"
    assert parsed.url == b"/v1/dispatch?client_id=" + cid.encode()
    assert close == (not parsed.keep_alive) and not parsed.upgrade
    names = {n.lower() for n, _ in headers}
    assert not names & {"content-length", "transfer-encoding", "upgrade", "expect"}
    assert set(cid).isdisjoint("&%#")  # '+' is a literal plus: nothing to decode
    doc = answer_body(answer)
    verifier().verify(doc["ticket"], doc["gateway"]["id"], cid)


def test_random_chunks_never_crash_the_recogniser(app: Stack) -> None:
    rng = random.Random(5)
    pieces = [
        PLAIN,
        b"\r\n",
        b"GET ",
        b"/v1/dispatch?client_id=",
        b"\x00",
        b"\xff",
        b":",
        b" HTTP/1.1",
    ]
    for _ in range(3000):
        raw = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        result = app.service.fast.request(raw)
        assert result is None or result[0].startswith(b"HTTP/1.1 200 OK\r\n")


async def test_healthz_and_metrics_tell_which_hot_path_answers(
    app: Stack, make_app: Callable[..., Stack], call_router: Any
) -> None:
    assert (await call_router(app, "GET", "/healthz")).json()["hot_path"] == "c"
    assert "tcpdispatch_speedups 1.0" in (await call_router(app, "GET", "/metrics")).body.decode()
    for python_app in (
        make_app(dispatcher={"speedups": False}),
        make_app(dispatcher={"policy": "least_conn"}),
    ):
        assert (await call_router(python_app, "GET", "/healthz")).json()["hot_path"] == "python"
        assert (
            "tcpdispatch_speedups 0.0"
            in (await call_router(python_app, "GET", "/metrics")).body.decode()
        )


def test_an_empty_pool_is_not_reported_as_a_policy_without_c_picker(
    make_app: Callable[..., Stack], caplog: pytest.LogCaptureFixture
) -> None:
    from tcpdispatch.config import parse_gateway

    app = make_app(gateways=[], up=False)  # p2c, no gateway configured yet
    assert app.service.hot_path == "python"
    caplog.set_level("INFO", logger="tcpdispatch.dispatcher")
    app.service.announce_hot_path()
    assert "no C picker" not in caplog.text
    assert "dispatch hot path: python (no gateway can be handed out yet" in caplog.text
    caplog.clear()
    app.pool.add(parse_gateway({"id": "g1", "address": "127.0.0.1:9001"}))
    bring_up(app.pool)  # the first gateway: C takes over, and the log says so once
    assert app.service.hot_path == "c"
    assert [r.getMessage() for r in caplog.records if "hot path" in r.getMessage()] == [
        "dispatch hot path: c"
    ]
    assert "no C picker" in make_app(dispatcher={"policy": "least_conn"}).service.hot_path_reason()
