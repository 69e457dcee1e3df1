"""The dispatcher as a real process with real ``tcpdispatch gateway`` processes on loopback.

Health (SIGKILL, SIGSTOP/SIGCONT, push TTL), SIGHUP reload, the admin API,
tickets checked by real gateways over the wire protocol, overload (503) and
bad input, and weighted shares over real HTTP.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import pytest
from harness import dispatcher_toml
from helpers import (
    Proc,
    free_port,
    named_gateways,
    require_speedups,
    scaled,
    wait_until,
)

from tcpdispatch.errors import ErrorCode
from tcpdispatch.protocol import Connection, Error, Hello, Role, Welcome

pytestmark = pytest.mark.integration

ADMIN = "admin-token-for-tests"


class Gateway:
    def __init__(self, gid: str, proc: Proc, port: int, status: int) -> None:
        self.id, self.proc, self.port, self.status = gid, proc, port, status


class Dispatcher:
    def __init__(self, proc: Proc, port: int, config: Path) -> None:
        self.proc, self.port, self.config = proc, port, config

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(5))
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            return (
                resp.status,
                {k.lower(): v for k, v in resp.getheaders()},
                json.loads(raw) if raw else None,
            )
        finally:
            conn.close()

    def dispatch(self, client_id: str = "c1") -> dict[str, Any]:
        status, _, doc = self.request("GET", f"/v1/dispatch?client_id={client_id}")
        assert status == 200, doc
        return doc

    def states(self) -> dict[str, str]:
        return {g["id"]: g["state"] for g in self.request("GET", "/v1/gateways")[2]["gateways"]}

    def handed_out(self, n: int = 20) -> set[str]:
        return named_gateways(self.dispatch, n)


@pytest.fixture
def env(tmp_path: Path, procs: Callable[..., Proc], secret_file: Path) -> dict[str, Any]:
    (tmp_path / "admin.token").write_text(ADMIN + "\n")
    return {"tmp": tmp_path, "procs": procs, "secret": secret_file}


def wait_ready(proc: Proc, timeout: float = 20.0) -> None:
    wait_until(
        lambda: "READY" in proc.output() or proc.popen.poll() is not None,
        timeout,
        0.05,
        what=f"READY from {proc.args[3:5]}",
    )
    assert proc.popen.poll() is None, proc.output()


def start_gateway(env: dict[str, Any], gid: str, *extra: str) -> Gateway:
    gw = harness.start_gateway(env["procs"], gid, *extra, secret_file=env["secret"], wait=False)
    return Gateway(gid, gw.proc, gw.port, gw.status_port)


def gateway_entry(
    gw: Gateway, weight: float | str = 1, check: str | None = None, **extra: Any
) -> dict[str, Any]:
    """One ``[[gateways]]`` entry."""
    check = check or f"http://127.0.0.1:{gw.status}/status"
    return {
        "id": gw.id,
        "address": f"127.0.0.1:{gw.port}",
        "check": check,
        "weight": weight,
        **extra,
    }


def config_text(
    port: int,
    gateways: list[dict[str, Any]],
    *,
    dispatcher: dict[str, Any] | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
) -> str:
    sections = sections or {}
    return dispatcher_toml(
        listen=f"127.0.0.1:{port}",
        gateways=gateways,
        secret_file="ticket.secret",
        admin_token_file="admin.token",
        dispatcher=dispatcher,
        sections={**sections, "balancing": {"slow_start_s": 0, **sections.get("balancing", {})}},
    )


@pytest.fixture(params=["c", "python"])
def env_both(env: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """``env`` with dispatches answered by each hot path in turn (``[dispatcher] speedups``)."""
    return {**env, "speedups": request.param == "c"}


def start_dispatcher(env: dict[str, Any], gateways: list[dict[str, Any]], **kw: Any) -> Dispatcher:
    port = free_port()
    cfg = env["tmp"] / "dispatcher.toml"
    if "speedups" in env:
        kw["dispatcher"] = {"speedups": env["speedups"], **kw.get("dispatcher", {})}
    cfg.write_text(config_text(port, gateways, **kw))
    proc = harness.launch_dispatcher(env["procs"], port, cfg).proc
    wait_ready(proc)
    assert f"READY http://127.0.0.1:{port}" in proc.output()
    return Dispatcher(proc, port, cfg)


def wait_states(d: Dispatcher, want: dict[str, str], timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    wait_until(
        lambda: all(d.states().get(k) == v for k, v in want.items()),
        timeout,
        0.02,
        what=f"states {want}",
    )
    return time.monotonic() - t0


def hello(gw: Gateway, ticket: str, client_id: str) -> tuple[socket.socket, Any]:
    """Open a real connection to ``gw`` and send HELLO; returns (socket, first frame)."""
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    conn = Connection(Role.CLIENT)
    conn.send(Hello(ticket=ticket, client_id=client_id))
    sock.sendall(conn.data_to_send())
    deadline = time.monotonic() + scaled(5)
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            conn.receive_eof()
            break
        try:
            frames = conn.receive_data(data)
        except Exception:  # noqa: BLE001 - a refused HELLO ends the connection with ERROR
            frames = []
        if frames:
            return sock, frames[0]
    raise AssertionError("no answer to HELLO")


# ---------------------------------------------------------------------------- health


def test_killed_gateway_out_within_1s_stopped_within_2s_and_back_after_rise(
    env: dict[str, Any],
) -> None:
    gws = [start_gateway(env, f"g{i}") for i in (1, 2, 3)]
    for g in gws:
        wait_ready(g.proc)
    # panic_threshold 0.3 so that 1 of 3 up still is "normal" (not panic) after both faults
    d = start_dispatcher(
        env, [gateway_entry(g) for g in gws], sections={"balancing": {"panic_threshold": 0.3}}
    )
    wait_states(d, {"g1": "up", "g2": "up", "g3": "up"})
    assert d.handed_out() == {"g1", "g2", "g3"}

    gws[0].proc.signal(signal.SIGKILL)
    took = wait_states(d, {"g1": "down"}, timeout=5)
    assert took <= scaled(1.0), f"SIGKILLed gateway still handed out after {took:.2f}s"
    assert "g1" not in d.handed_out()

    gws[1].proc.signal(signal.SIGSTOP)
    took = wait_states(d, {"g2": "down"}, timeout=6)
    assert took <= scaled(2.0), f"SIGSTOPped gateway still handed out after {took:.2f}s"
    assert d.handed_out() == {"g3"}

    gws[1].proc.signal(signal.SIGCONT)
    took = wait_states(d, {"g2": "up"}, timeout=6)
    assert took <= scaled(2.0)
    assert d.handed_out(30) == {"g2", "g3"}


def test_push_mode_detects_missing_heartbeats_within_ttl(env: dict[str, Any]) -> None:
    port = free_port()
    gw = start_gateway(
        env,
        "p1",
        "--report-to",
        f"http://127.0.0.1:{port}",
        "--report-token-file",
        str(env["tmp"] / "admin.token"),
        "--report-interval",
        "0.2",
    )
    cfg = env["tmp"] / "dispatcher.toml"
    cfg.write_text(
        config_text(port, [gateway_entry(gw, check="push")], sections={"health": {"ttl": 1.0}})
    )
    d = Dispatcher(harness.launch_dispatcher(env["procs"], port, cfg).proc, port, cfg)
    wait_ready(d.proc)
    wait_ready(gw.proc)
    wait_states(d, {"p1": "up"}, timeout=10)
    assert d.dispatch()["gateway"]["port"] == gw.port
    gw.proc.signal(signal.SIGSTOP)  # heartbeats stop, the process stays
    took = wait_states(d, {"p1": "down"}, timeout=6)
    assert took <= scaled(1.0 + 0.5), f"missing heartbeats noticed after {took:.2f}s (ttl 1.0)"
    gw.proc.signal(signal.SIGCONT)
    wait_states(d, {"p1": "up"}, timeout=6)


# ---------------------------------------------------------------------------- reload and admin


def test_sighup_reload_adds_a_gateway_and_a_bad_reload_keeps_serving(env: dict[str, Any]) -> None:
    g1, g2 = start_gateway(env, "g1"), start_gateway(env, "g2")
    wait_ready(g1.proc)
    wait_ready(g2.proc)
    d = start_dispatcher(env, [gateway_entry(g1)])
    wait_states(d, {"g1": "up"})
    good = d.config.read_text()

    d.config.write_text(config_text(d.port, [gateway_entry(g1), gateway_entry(g2, weight=3)]))
    d.proc.signal(signal.SIGHUP)
    wait_states(d, {"g1": "up", "g2": "up"})
    assert d.handed_out(30) == {"g1", "g2"}

    d.config.write_text(config_text(d.port, [gateway_entry(g1), gateway_entry(g2, weight="heavy")]))
    d.proc.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in d.proc.output(), 5, what="reload refused in the log")
    out = d.proc.output()
    assert "gateways[1].weight" in out and str(d.config) in out
    assert d.states() == {"g1": "up", "g2": "up"}  # the running pool is untouched
    assert d.handed_out(30) == {"g1", "g2"}

    d.config.write_text(good)  # a valid reload removes g2
    d.proc.signal(signal.SIGHUP)
    wait_until(lambda: set(d.states()) == {"g1"}, 5, what="g2 removed")


def test_admin_api_changes_apply_at_once_and_require_the_token(env_both: dict[str, Any]) -> None:
    env = env_both
    g1, g2 = start_gateway(env, "g1"), start_gateway(env, "g2")
    wait_ready(g1.proc)
    wait_ready(g2.proc)
    d = start_dispatcher(env, [gateway_entry(g1)])
    wait_states(d, {"g1": "up"})
    body = {
        "id": "g2",
        "address": f"127.0.0.1:{g2.port}",
        "check": f"http://127.0.0.1:{g2.status}/status",
    }

    for token in (None, "not-the-token"):
        status, _, doc = d.request("POST", "/v1/gateways", body, token=token)
        assert status == 401 and doc["error"] == "unauthorized"
    assert d.request("DELETE", "/v1/gateways/g1")[0] == 401
    assert d.request("POST", "/v1/gateways/g1/drain")[0] == 401
    assert d.request("PATCH", "/v1/gateways/g1", {"weight": 5})[0] == 401
    assert set(d.states()) == {"g1"}

    assert d.request("POST", "/v1/gateways", body, token=ADMIN)[0] == 201
    wait_states(d, {"g2": "up"})
    assert d.handed_out(30) == {"g1", "g2"}

    assert d.request("POST", "/v1/gateways/g1/drain", token=ADMIN)[0] == 200
    assert {d.dispatch(f"x{i}")["gateway"]["id"] for i in range(20)} == {
        "g2"
    }  # the very next request
    assert d.request("POST", "/v1/gateways/g1/undrain", token=ADMIN)[0] == 200
    assert "g1" in {d.dispatch(f"x{i}")["gateway"]["id"] for i in range(30)}

    assert d.request("PATCH", "/v1/gateways/g2", {"weight": 0}, token=ADMIN)[0] == 200
    assert {d.dispatch(f"y{i}")["gateway"]["id"] for i in range(20)} == {"g1"}
    assert d.request("PATCH", "/v1/gateways/g2", {"weight": 2}, token=ADMIN)[0] == 200

    assert d.request("DELETE", "/v1/gateways/g1", token=ADMIN)[0] == 200
    assert d.handed_out(20) == {"g2"}
    assert d.request("DELETE", "/v1/gateways/g1", token=ADMIN)[0] == 404


# ----------------------------------------------------------------- tickets, overload, bad input


def test_tickets_accepted_by_named_gateway_refused_by_others_and_503_when_full(
    env_both: dict[str, Any],
) -> None:
    env = env_both
    gws = [start_gateway(env, f"g{i}", "--capacity", "1") for i in (1, 2, 3)]
    for g in gws:
        wait_ready(g.proc)
    by_id = {g.id: g for g in gws}
    d = start_dispatcher(
        env, [gateway_entry(g) for g in gws], dispatcher={"alternates": 0, "retry_after_max": 4}
    )
    wait_states(d, {"g1": "up", "g2": "up", "g3": "up"})

    held = []
    doc = d.dispatch("alice")
    named = doc["gateway"]["id"]
    for other in sorted(set(by_id) - {named}):
        sock, frame = hello(by_id[other], doc["ticket"], "alice")
        sock.close()
        assert isinstance(frame, Error) and frame.code == ErrorCode.TICKET_WRONG_GATEWAY, frame
    sock, frame = hello(by_id[named], doc["ticket"], "mallory")
    sock.close()
    assert isinstance(frame, Error) and frame.code == ErrorCode.TICKET_WRONG_CLIENT
    sock, frame = hello(by_id[named], doc["ticket"], "alice")
    assert isinstance(frame, Welcome), frame
    held.append(sock)

    # fill the other two (capacity 1 each) with real connections
    for i in range(2):
        path = f"/v1/gateways/{named}"
        wait_until(lambda p=path: d.request("GET", p)[2]["connections"] == 1, 5)
        doc = d.dispatch(f"filler{i}")
        sock, frame = hello(by_id[doc["gateway"]["id"]], doc["ticket"], f"filler{i}")
        assert isinstance(frame, Welcome), frame
        held.append(sock)
        named = doc["gateway"]["id"]
    wait_until(
        lambda: all(g["connections"] == 1 for g in d.request("GET", "/v1/gateways")[2]["gateways"]),
        5,
    )
    for _ in range(5):
        status, headers, doc = d.request("GET", "/v1/dispatch?client_id=late")
        assert status == 503, doc
        assert doc["error"] == "no_gateway_available"
        assert (
            1 <= int(headers["retry-after"]) <= 4
            and int(headers["retry-after"]) == doc["retry_after_s"]
        )
    held.pop().close()  # one slot frees: dispatching works again after the next report
    wait_until(lambda: d.request("GET", "/v1/dispatch?client_id=late")[0] == 200, 5)
    for s in held:
        s.close()


def test_bad_requests_get_clear_json_errors(env_both: dict[str, Any]) -> None:
    env = env_both
    g1 = start_gateway(env, "g1")
    wait_ready(g1.proc)
    d = start_dispatcher(env, [gateway_entry(g1)])
    cases = [
        ("GET", "/v1/dispatch", None, 400, "bad_request"),
        ("GET", "/v1/dispatch?client_id=" + "x" * 300, None, 400, "bad_request"),
        ("GET", "/v1/dispatch?client_id=%01", None, 400, "bad_request"),
        ("DELETE", "/v1/dispatch?client_id=a", None, 405, "method_not_allowed"),
        ("GET", "/v2/nothing", None, 404, "not_found"),
        ("POST", "/v1/report", b"{oops", 400, "bad_json"),
        ("POST", "/v1/report", {"gateway_id": "nope"}, 404, "unknown_gateway"),
        ("POST", "/v1/heartbeat", {"id": "g1"}, 401, "unauthorized"),
    ]
    for method, path, body, status, error in cases:
        got, headers, doc = d.request(method, path, body)
        assert (got, doc["error"]) == (status, error), (method, path, doc)
        assert headers["content-type"] == "application/json" and doc["detail"]
    assert d.request("POST", "/v1/report", {"gateway_id": "g1", "error": "refused"})[0] == 202
    # Nesting deep enough to overflow the JSON decoder is bad JSON, not a 500.
    got, _, doc = d.request("POST", "/v1/report", b"[" * 20_000)
    assert (got, doc["error"]) == (400, "bad_json"), doc
    # HEAD must not dispatch (it would issue a ticket and count towards the gateway's load).
    status, headers, _ = d.request("HEAD", "/v1/dispatch?client_id=head")
    assert status == 405 and headers["allow"] == "GET"
    status, headers, _ = d.request("GET", "/healthz")
    assert status == 200
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=scaled(5))
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    text = resp.read()
    assert resp.status == 200 and b"tcpdispatch_dispatch_requests_total" in text
    conn.close()
    # No request above dispatched anything (the HEAD in particular).
    assert b'tcpdispatch_dispatch_requests_total{outcome="ok"} 0.0' in text, text[:600]
    d.proc.signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0


def test_weighted_shares_over_real_http(env_both: dict[str, Any]) -> None:
    """1:2:3 over real HTTP (keep-alive); the 60,000-dispatch check runs in-process
    (tests/dispatcher).

    tcp:// checks: status reports reset each gateway's issued count at its own
    moment, which over the one or two report intervals these 1,500 requests
    span (fewer the faster the server) skews shares by several points.
    """
    env = env_both
    gws = [start_gateway(env, f"g{i}") for i in (1, 2, 3)]
    for g in gws:
        wait_ready(g.proc)
    d = start_dispatcher(
        env,
        [
            gateway_entry(g, weight=w, check=f"tcp://127.0.0.1:{g.port}")
            for g, w in zip(gws, (1, 2, 3))
        ],
    )
    wait_states(d, {"g1": "up", "g2": "up", "g3": "up"})
    n = 1500
    counts: Counter[str] = Counter()
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=scaled(5))
    for i in range(n):
        conn.request("GET", f"/v1/dispatch?client_id=c{i}")
        resp = conn.getresponse()
        assert resp.status == 200
        counts[json.loads(resp.read())["gateway"]["id"]] += 1
    conn.close()
    for gid, w in (("g1", 1), ("g2", 2), ("g3", 3)):
        assert abs(counts[gid] / n - w / 6) < 0.04, dict(counts)


@pytest.mark.parametrize("speedups", [True, False])
def test_c_and_python_hot_paths_issue_tickets_the_gateway_accepts(
    env: dict[str, Any], speedups: bool
) -> None:
    if speedups:
        require_speedups()
    g1 = start_gateway(env, "g1")
    wait_ready(g1.proc)
    d = start_dispatcher(env, [gateway_entry(g1)], dispatcher={"speedups": speedups})
    wait_states(d, {"g1": "up"})
    assert d.request("GET", "/healthz")[2]["hot_path"] == ("c" if speedups else "python")
    assert f"dispatch hot path: {'c' if speedups else 'python'}" in d.proc.output()
    for i in range(3):
        doc = d.dispatch(f"client-{i}")
        sock, frame = hello(g1, doc["ticket"], f"client-{i}")
        sock.close()
        assert isinstance(frame, Welcome), frame
