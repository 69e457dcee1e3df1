"""Config validation: every error names the file, the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcpdispatch.config import ADMIN_TOKEN_ENV, load_config, parse_gateway
from tcpdispatch.errors import ConfigError

BASE = """
[dispatcher]
listen = "127.0.0.1:8080"
policy = "p2c"
secret_file = "ticket.secret"
admin_token_file = "admin.token"

[[gateways]]
id = "g1"
address = "127.0.0.1:9001"
check = "http://127.0.0.1:9101/status"
weight = 1
"""


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    (tmp_path / "ticket.secret").write_text("test-secret-0123456789abcdef\n")
    (tmp_path / "admin.token").write_text("admin-token-123\n")
    return tmp_path


def write(d: Path, text: str) -> Path:
    p = d / "dispatcher.toml"
    p.write_text(text)
    return p


def test_minimal_config_and_defaults(cfgdir: Path) -> None:
    cfg = load_config(write(cfgdir, BASE), env={})
    assert cfg.listen == "127.0.0.1:8080"
    assert cfg.policy == "p2c"
    assert cfg.admin_token == "admin-token-123"
    assert cfg.push_token == cfg.admin_token  # push token defaults to the admin token
    assert cfg.secrets == (b"test-secret-0123456789abcdef",)
    assert cfg.alternates == 2 and cfg.ticket_lifetime == 60
    assert cfg.health.interval == 0.25 and cfg.health.rise == 2 and cfg.health.fall == 2
    assert cfg.balancing.panic_threshold == 0.5
    (gw,) = cfg.gateways
    assert (gw.id, gw.host, gw.port, gw.weight, gw.capacity) == ("g1", "127.0.0.1", 9001, 1.0, None)


def test_relative_paths_resolve_against_config_dir(
    cfgdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(write(cfgdir, BASE), env={}).admin_token == "admin-token-123"


def test_admin_token_from_env_when_no_file(cfgdir: Path) -> None:
    text = BASE.replace('admin_token_file = "admin.token"\n', "")
    cfg = load_config(write(cfgdir, text), env={ADMIN_TOKEN_ENV: "from-env-token"})
    assert cfg.admin_token == "from-env-token"
    assert load_config(write(cfgdir, text), env={}).admin_token is None


def test_default_check_is_tcp_to_the_address(cfgdir: Path) -> None:
    text = BASE.replace('check = "http://127.0.0.1:9101/status"\n', "")
    assert load_config(write(cfgdir, text), env={}).gateways[0].check == "tcp://127.0.0.1:9001"


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        ("weight = 1", "weight = -1", "gateways[0].weight", ">= 0.0"),
        ("weight = 1", 'weight = "heavy"', "gateways[0].weight", "must be a number"),
        ("weight = 1", "weight = 1\ncapacity = -5", "gateways[0].capacity", "between"),
        ("weight = 1", "weight = 1\nwieght = 2", "gateways[0].wieght", "unknown key"),
        ('address = "127.0.0.1:9001"', 'address = "nowhere"', "gateways[0].address", "HOST:PORT"),
        (
            'check = "http://127.0.0.1:9101/status"',
            'check = "ftp://x:1"',
            "gateways[0].check",
            "ftp",
        ),
        (
            'check = "http://127.0.0.1:9101/status"',
            'check = "agent://h"',
            "gateways[0].check",
            "port",
        ),
        ('id = "g1"', 'id = "has space"', "gateways[0].id", "printable"),
        (
            'policy = "p2c"',
            'policy = "fastest"',
            "dispatcher.policy",
            "must be one of round_robin,",
        ),
        (
            'listen = "127.0.0.1:8080"',
            'listen = "127.0.0.1:http"',
            "dispatcher.listen",
            "non-numeric",
        ),
        (
            'secret_file = "ticket.secret"',
            'secret_file = "missing.secret"',
            "dispatcher.secret_file",
            "cannot read",
        ),
        (
            'admin_token_file = "admin.token"',
            'admin_token_file = "nope"',
            "dispatcher.admin_token_file",
            "cannot read",
        ),
        (
            "[dispatcher]",
            "[dispatcher]\nalternates = 99",
            "dispatcher.alternates",
            "between 0 and 16",
        ),
        (
            "[dispatcher]",
            '[dispatcher]\ntrusted_proxies = ["10.0.0.0/33"]',
            "dispatcher.trusted_proxies[0]",
            "not an IP network",
        ),
        (
            "[dispatcher]",
            "[dispatcher]\nretry_after_min = 9\nretry_after_max = 2",
            "dispatcher.retry_after_max",
            ">= retry_after_min",
        ),
        ("[dispatcher]", "[health]\nrise = 0\n[dispatcher]", "health.rise", "between 1 and 100"),
        (
            "[dispatcher]",
            "[health]\nintervall = 1\n[dispatcher]",
            "health.intervall",
            "unknown key",
        ),
        ("[dispatcher]", "[health]\nwatch = 1\n[dispatcher]", "health.watch", "true or false"),
        (
            "[dispatcher]",
            "[health]\noverload_busy = 0.5\n[dispatcher]",
            "health.overload_busy",
            "must not be below overload_busy_exit",
        ),
        (
            "[dispatcher]",
            "[balancing]\npanic_threshold = 2\n[dispatcher]",
            "balancing.panic_threshold",
            "<= 1.0",
        ),
        ("[dispatcher]", "[retry]\nmultiplier = 0.5\n[dispatcher]", "retry.multiplier", ">= 1.0"),
        ("[dispatcher]", "[nonsense]\n[dispatcher]", "nonsense", "unknown key"),
        (
            "[dispatcher]",
            '[dispatcher]\nserver = "uvloop"',
            "dispatcher.server",
            "only the built-in HTTP server",
        ),
    ],
)
def test_each_error_names_file_key_and_reason(
    cfgdir: Path, old: str, new: str, key: str, reason: str
) -> None:
    assert old in BASE
    path = write(cfgdir, BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    err = info.value
    assert err.file == str(path)
    assert err.key == key, str(err)
    assert reason in err.reason, str(err)
    assert str(path) in str(err) and key in str(err)


def test_duplicate_ids_and_missing_secret(cfgdir: Path) -> None:
    dup = BASE + '\n[[gateways]]\nid = "g1"\naddress = "127.0.0.1:9002"\n'
    with pytest.raises(ConfigError, match=r"gateways\[1\]\.id: duplicate gateway id 'g1'"):
        load_config(write(cfgdir, dup), env={})
    with pytest.raises(ConfigError, match=r"dispatcher\.secret_file: is required"):
        load_config(write(cfgdir, BASE.replace('secret_file = "ticket.secret"\n', "")), env={})


def test_unreadable_and_invalid_toml(cfgdir: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config") as info:
        load_config(cfgdir / "absent.toml")
    assert info.value.file == str(cfgdir / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(cfgdir, "[dispatcher\n"))


def test_health_watch_and_overload_keys(cfgdir: Path) -> None:
    cfg = load_config(
        write(cfgdir, BASE + "\n[health]\nwatch = false\noverload_lag = 0.2\n"), env={}
    )
    assert (
        cfg.health.watch is False and cfg.health.overload_lag == 0.2 and cfg.health.overload is True
    )


def test_parse_gateway_for_admin_bodies() -> None:
    gw = parse_gateway(
        {"id": "x", "address": "127.0.0.1:1", "weight": 2.5, "capacity": 10, "check": "push"}
    )
    assert (gw.weight, gw.capacity, gw.check) == (2.5, 10, "push")
    with pytest.raises(ConfigError) as info:
        parse_gateway({"id": "x"}, file="request body")
    assert info.value.key == "gateway.address" and "required" in info.value.reason
    with pytest.raises(ConfigError, match="must be a table"):
        parse_gateway(["x"])
