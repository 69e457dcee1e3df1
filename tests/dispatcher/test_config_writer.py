"""The one dispatcher config writer: what it writes parses back to the same description, and the
dispatcher's own loader accepts it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from tcpdispatch.config import load_config
from tcpdispatch.dispatcher.config_writer import dispatcher_toml, toml_value, write_dispatcher_toml

GATEWAYS = [
    {"id": "g1", "address": "127.0.0.1:7001", "check": "http://127.0.0.1:8001/status", "weight": 2},
    {"id": "g2", "address": "127.0.0.1:7002", "check": "push", "capacity": 10},
]


def test_the_text_parses_back_to_the_description() -> None:
    text = dispatcher_toml(
        listen="127.0.0.1:9000",
        gateways=GATEWAYS,
        secret_file="ticket.secret",
        admin_token_file=Path("/tmp/admin.token"),
        dispatcher={"policy": "p2c", "register_unknown": True, "trusted_proxies": ["127.0.0.1/32"]},
        sections={"health": {"interval": 0.25, "rise": 2}, "balancing": {"slow_start_s": 0}},
    )
    assert tomllib.loads(text) == {
        "dispatcher": {
            "listen": "127.0.0.1:9000",
            "secret_file": "ticket.secret",
            "admin_token_file": "/tmp/admin.token",
            "policy": "p2c",
            "register_unknown": True,
            "trusted_proxies": ["127.0.0.1/32"],
        },
        "health": {"interval": 0.25, "rise": 2},
        "balancing": {"slow_start_s": 0},
        "gateways": GATEWAYS,
    }


def test_the_dispatcher_loads_what_it_writes(tmp_path: Path) -> None:
    (tmp_path / "ticket.secret").write_text("test-secret-0123456789abcdef\n")
    path = write_dispatcher_toml(
        tmp_path / "d.toml",
        listen="127.0.0.1:9000",
        gateways=GATEWAYS,
        secret_file="ticket.secret",
        dispatcher={"alternates": 1},
        sections={"health": {"interval": 0.5}},
    )
    cfg = load_config(path)
    assert (cfg.listen, cfg.alternates, cfg.health.interval) == ("127.0.0.1:9000", 1, 0.5)
    assert [(g.id, g.address, g.check, g.weight, g.capacity) for g in cfg.gateways] == [
        ("g1", "127.0.0.1:7001", "http://127.0.0.1:8001/status", 2.0, None),
        ("g2", "127.0.0.1:7002", "push", 1.0, 10),
    ]


def test_zones_are_written_as_an_array_of_tables(tmp_path: Path) -> None:
    (tmp_path / "ticket.secret").write_text("test-secret-0123456789abcdef\n")
    zones = [{"name": "a", "cidrs": ["10.1.0.0/16"], "spill_to": ["b"]}, {"name": "b"}]
    path = write_dispatcher_toml(
        tmp_path / "d.toml",
        secret_file="ticket.secret",
        zones=zones,
        gateways=[{**GATEWAYS[0], "zone": "a"}, {**GATEWAYS[1], "zone": "b"}],
    )
    cfg = load_config(path)
    assert [(z.name, [str(n) for n in z.cidrs], z.spill_to) for z in cfg.zones] == [
        ("a", ["10.1.0.0/16"], ("b",)),
        ("b", [], ()),
    ]
    assert [g.zone for g in cfg.gateways] == ["a", "b"]
    with pytest.raises(ValueError, match="own argument"):
        dispatcher_toml(sections={"zones": {"name": "a"}})


def test_a_fragment_merges_bare_keys_into_dispatcher_and_tables_into_sections() -> None:
    text = dispatcher_toml(
        listen="127.0.0.1:1",
        sections={"balancing": {"slow_start_s": 0}},
        extra='policy = "least_conn"\n[balancing]\npanic_threshold = 0.3\n[store]\nprefix = "x:"',
    )
    doc = tomllib.loads(text)
    assert doc["dispatcher"] == {"listen": "127.0.0.1:1", "policy": "least_conn"}
    assert doc["balancing"] == {"slow_start_s": 0, "panic_threshold": 0.3}
    assert doc["store"] == {"prefix": "x:"}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"dispatcher": {"listen": "127.0.0.1:2"}}, "dispatcher.listen given twice"),
        ({"extra": "secret_file = 'b'", "secret_file": "a"}, "dispatcher.secret_file given twice"),
        (
            {"sections": {"health": {"rise": 2}}, "extra": "[health]\nrise = 3"},
            "health.rise given twice",
        ),
        ({"sections": {"gateways": {"id": "g"}}}, r"\[gateways\] is written from its own argument"),
    ],
)
def test_a_key_given_twice_is_refused_by_name(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dispatcher_toml(listen="127.0.0.1:1", **kw)


def test_strings_survive_quotes_backslashes_and_unicode() -> None:
    tricky = 'a "quoted" \\ back\tslash, 直通车, \x01'
    assert tomllib.loads(f"k = {toml_value(tricky)}")["k"] == tricky


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (float("inf"), ValueError),
        (float("nan"), ValueError),
        (None, TypeError),
        ({"a": 1}, TypeError),
    ],
)
def test_values_toml_cannot_hold_are_refused(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="TOML value"):
        toml_value(value)
