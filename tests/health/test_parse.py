"""Pure parts: HealthSettings validation, parse_check, agent replies, status documents."""

from __future__ import annotations

from typing import Any

import pytest

from tcpdispatch.health import (
    CheckSpec,
    HealthSettings,
    ProbeResult,
    parse_agent_reply,
    parse_check,
    status_to_result,
)

# ---------------------------------------------------------------- settings


def test_defaults_meet_the_detection_targets() -> None:
    s = HealthSettings()
    assert (s.interval, s.timeout, s.rise, s.fall, s.jitter, s.ttl) == (0.25, 0.5, 2, 2, 0.1, 3.0)
    assert s.worst_refused_detection() == pytest.approx(0.55)
    assert s.worst_hung_detection() == pytest.approx(1.275)
    assert s.worst_refused_detection() < 1.0
    assert s.worst_hung_detection() < 2.0
    assert s.worst_recovery() == pytest.approx(0.55)


def test_hung_bound_when_timeout_is_shorter_than_interval() -> None:
    s = HealthSettings(interval=1.0, timeout=0.2, jitter=0.0, fall=3)
    assert s.worst_hung_detection() == pytest.approx(1.0 + 2 * 1.0 + 0.2)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("interval", 0),
        ("interval", -1.0),
        ("interval", float("nan")),
        ("interval", float("inf")),
        ("interval", "1"),
        ("timeout", 0),
        ("ttl", -3),
        ("rise", 0),
        ("rise", 1.5),
        ("rise", True),
        ("fall", 0),
        ("fall", 10_000),
        ("jitter", -0.1),
        ("jitter", 1.0),
        ("jitter", None),
    ],
)
def test_settings_validation_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        HealthSettings(**{field: value})


def test_settings_accept_ints_for_seconds_and_zero_jitter() -> None:
    s = HealthSettings(interval=1, timeout=2, jitter=0, ttl=10)
    assert s.interval == 1 and s.jitter == 0


def test_settings_from_mapping() -> None:
    assert HealthSettings.from_mapping({"interval": 0.5, "fall": 3}) == HealthSettings(
        interval=0.5, fall=3
    )
    with pytest.raises(ValueError, match="intervall"):
        HealthSettings.from_mapping({"intervall": 1})
    with pytest.raises(ValueError, match="timeout"):
        HealthSettings.from_mapping({"timeout": -1})


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        HealthSettings().interval = 1  # type: ignore[misc]


# ---------------------------------------------------------------- parse_check


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://127.0.0.1:9101/status", CheckSpec("http", url="http://127.0.0.1:9101/status")),
        (
            "https://gw.example:443/status?x=1",
            CheckSpec("http", url="https://gw.example:443/status?x=1"),
        ),
        ("http://gw/status", CheckSpec("http", url="http://gw/status")),
        ("agent://127.0.0.1:9201", CheckSpec("agent", host="127.0.0.1", port=9201)),
        ("AGENT://Gw.Local:9201/", CheckSpec("agent", host="gw.local", port=9201)),
        ("tcp://[::1]:9001", CheckSpec("tcp", host="::1", port=9001)),
        ("push", CheckSpec("push")),
        ("  Push ", CheckSpec("push")),
    ],
)
def test_parse_check_accepts(text: str, expected: CheckSpec) -> None:
    assert parse_check(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("127.0.0.1:9001", "no scheme"),
        ("udp://h:1", "unknown scheme"),
        ("ftp://h:1/x", "unknown scheme"),
        ("tcp://h", "needs a port"),
        ("agent://:9000", "no host"),
        ("http:///status", "no host"),
        ("tcp://h:99999", "out of range"),
        ("tcp://h:port", "h:port"),
        ("tcp://h:0", "port 0"),
        ("tcp://h:1/path", "no path"),
        ("agent://h:1?x=1", "no path"),
        ("http://user:pw@h:1/status", "credentials"),
        ("http://h:1/status#frag", "fragment"),
        ("pushy", "no scheme"),
    ],
)
def test_parse_check_errors_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_check(text)


def test_parse_check_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="string"):
        parse_check(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ["http://127.0.0.1:9101/status", "agent://h:1", "tcp://[::1]:9", "push"]
)
def test_check_spec_str_round_trips(text: str) -> None:
    assert parse_check(str(parse_check(text))) == parse_check(text)


# ---------------------------------------------------------------- agent replies

AGENT_TABLE: list[tuple[str, dict[str, Any]]] = [
    # what tcpdispatch gateways send
    ("up 75% maxconn:30", {"ok": True, "weight_pct": 75, "utilization": 0.25, "capacity": 30}),
    ("up 0% maxconn:0", {"ok": True, "weight_pct": 0, "utilization": 1.0, "capacity": 0}),
    (
        "up 100% maxconn:10000",
        {"ok": True, "weight_pct": 100, "utilization": 0.0, "capacity": 10000},
    ),
    ("drain", {"ok": True, "draining": True}),
    # HAProxy agent-check vocabulary
    ("up", {"ok": True}),
    ("ready", {"ok": True, "draining": False}),
    ("READY,UP", {"ok": True}),
    ("maint", {"ok": True, "draining": True}),
    ("75%", {"ok": True, "weight_pct": 75, "utilization": 0.25}),
    ("50%,drain", {"ok": True, "draining": True, "weight_pct": 50}),
    ("drain ready", {"ok": True, "draining": False}),
    ("ready\tdrain", {"ok": True, "draining": True}),
    ("150%", {"ok": True, "weight_pct": 150, "utilization": 0.0}),
    ("maxconn:12", {"ok": True, "capacity": 12}),
    ("down", {"ok": False}),
    ("fail", {"ok": False}),
    ("failed", {"ok": False}),
    ("stopped", {"ok": False}),
    ("down#disk full", {"ok": False, "detail": "agent says disk full"}),
    ("stopped # going away", {"ok": False, "detail": "agent says going away"}),
    ("up down", {"ok": False}),
    ("down up", {"ok": True}),
    ("drain down", {"ok": False, "draining": True}),
    # unknown words are ignored; nothing recognisable is a failure
    ("up sparkly 80%", {"ok": True, "weight_pct": 80}),
    ("maxconn:abc up", {"ok": True, "capacity": None}),
    ("-5% up", {"ok": True, "weight_pct": None}),
    ("", {"ok": False, "detail": "agent sent an empty reply"}),
    ("   ", {"ok": False}),
    ("hello world", {"ok": False}),
    ("#only a comment", {"ok": False}),
]


@pytest.mark.parametrize(("line", "expected"), AGENT_TABLE)
def test_agent_reply_table(line: str, expected: dict[str, Any]) -> None:
    result = parse_agent_reply(line, latency_s=0.01)
    assert result.latency_s == 0.01
    for key, value in expected.items():
        got = getattr(result, key)
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, (
            key,
            result,
        )
    assert result.connections is None
    if not result.ok:
        assert result.detail


# ---------------------------------------------------------------- status documents


def doc(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "g1",
        "state": "serving",
        "connections": 12,
        "capacity": 100,
        "address": "127.0.0.1:9001",
        "cpu": 0.25,
        "accepted": 3,
        "rejected": {},
        "uptime_s": 1.0,
    }
    base.update(overrides)
    return base


def test_status_to_result_maps_fields() -> None:
    assert status_to_result(doc(), latency_s=0.002) == ProbeResult(
        ok=True,
        latency_s=0.002,
        connections=12,
        capacity=100,
        draining=False,
        utilization=0.25,
        address="127.0.0.1:9001",
    )


def test_status_draining_is_still_ok() -> None:
    r = status_to_result(doc(state="draining"))
    assert r.ok and r.draining


def test_status_optional_fields() -> None:
    minimal = {"state": "serving", "connections": 0, "capacity": 0}
    r = status_to_result(minimal)
    assert r.ok and r.utilization is None and r.address is None
    assert status_to_result(doc(cpu=1.7)).utilization == 1.0
    assert status_to_result(doc(cpu=-0.1)).utilization == 0.0
    assert status_to_result(doc(cpu=1)).utilization == 1.0


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (doc(state="sleeping"), "state"),
        ({k: v for k, v in doc().items() if k != "state"}, "state"),
        ({k: v for k, v in doc().items() if k != "connections"}, "connections"),
        ({k: v for k, v in doc().items() if k != "capacity"}, "capacity"),
        (doc(connections=-1), "connections"),
        (doc(connections="12"), "connections"),
        (doc(connections=True), "connections"),
        (doc(capacity=1.5), "capacity"),
        (doc(cpu="high"), "cpu"),
        (doc(cpu=float("nan")), "cpu"),
        (doc(address=""), "address"),
        (doc(address=9001), "address"),
        (doc(id=7), "id"),
        ([1, 2], "object"),
    ],
)
def test_status_to_result_rejects_bad_documents(bad: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        status_to_result(bad)
