"""Each setting is declared once: the config loader, the gateway's flags and the docs' tables
are all read from that declaration, and a bad value is refused in the same words everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from tcpdispatch import config_reference
from tcpdispatch.backoff import BackoffConfig
from tcpdispatch.balancing.snapshot import BalancerSettings
from tcpdispatch.client.policy import BackoffConfig as ClientBackoffConfig
from tcpdispatch.config import DispatcherConfig, GatewayEntry, StoreConfig, load_config
from tcpdispatch.errors import ConfigError
from tcpdispatch.gateway import config as gateway_config
from tcpdispatch.gateway.cli import add_parser
from tcpdispatch.gateway.config import GatewayConfig, from_args
from tcpdispatch.health import CHECK_KINDS, HealthSettings
from tcpdispatch.httputil import MIN_TOKEN_LEN
from tcpdispatch.rebalance.settings import RebalanceSettings
from tcpdispatch.settings import Setting, SettingError, flag, settings_of

ROOT = Path(__file__).resolve().parents[1]
SECTIONS: list[Any] = [
    HealthSettings,
    BalancerSettings,
    RebalanceSettings,
    StoreConfig,
    BackoffConfig,
    DispatcherConfig,
    GatewayEntry,
    GatewayConfig,
]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers())
    return p


def _args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(
        ["gateway", "--id", "g1", "--listen", "127.0.0.1:1", "--status", "127.0.0.1:2", *argv]
    )


# -- one declaration ----------------------------------------------------------
@pytest.mark.parametrize("cls", SECTIONS, ids=lambda c: c.__name__)
def test_every_declared_default_is_allowed_by_its_own_declaration(cls: Any) -> None:
    declared = list(settings_of(cls))
    assert declared, f"{cls.__name__} declares no setting"
    for name, spec in declared:
        assert spec.help.strip(), f"{cls.__name__}.{name} has no help"
        assert spec.check(spec.default) == spec.default, f"{cls.__name__}.{name}"


@pytest.mark.parametrize(
    "cls",
    [HealthSettings, BalancerSettings, RebalanceSettings, StoreConfig, BackoffConfig],
    ids=lambda c: c.__name__,
)
def test_a_section_built_without_arguments_holds_the_declared_defaults(cls: Any) -> None:
    obj = cls()
    for name, spec in settings_of(cls):
        assert getattr(obj, name) == spec.default, name


def test_an_empty_config_file_holds_every_declared_default(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("a-secret-of-enough-length\n")
    path = tmp_path / "d.toml"
    path.write_text('[dispatcher]\nsecret_file = "s"\n')
    cfg = load_config(path, env={})
    for section, cls in (
        ("health", HealthSettings),
        ("balancing", BalancerSettings),
        ("rebalance", RebalanceSettings),
        ("store", StoreConfig),
        ("retry", BackoffConfig),
    ):
        for name, spec in settings_of(cls):
            if spec.key:
                assert getattr(getattr(cfg, section), name) == spec.default, f"{section}.{name}"
    for name, spec in settings_of(DispatcherConfig):
        assert getattr(cfg, name) == spec.default, name


def test_generated_gateway_flags_have_the_declared_defaults() -> None:
    """Each GatewayConfig setting is a flag whose argparse default is the declared default, and
    a node built from no flags at all holds exactly those defaults."""
    actions = {
        a.dest: a for a in _parser()._subparsers._group_actions[0].choices["gateway"]._actions
    }  # type: ignore[union-attr]
    declared = dict(settings_of(GatewayConfig))
    assert set(declared) <= set(actions), set(declared) - set(actions)
    for name, spec in declared.items():
        action = actions[name]
        assert action.option_strings == [flag(spec)], name
        assert action.default == spec.default, name
        if spec.kind is not bool:
            assert action.type is spec.kind, name
        if spec.kind not in (bool, str):
            assert spec.allowed() in " ".join(str(action.help).split()), name
    cfg = from_args(_args("--no-ticket"))
    for name, spec in declared.items():
        want = 3 * cfg.heartbeat if name == "idle_timeout" else spec.default
        assert getattr(cfg, name) == want, name


def test_gateway_config_built_directly_has_the_cli_defaults() -> None:
    """The dataclass and the command line no longer keep their own copies of the defaults."""
    direct = GatewayConfig(id="g1", listen=("127.0.0.1", 1), status=("127.0.0.1", 2))
    assert direct == from_args(_args("--no-ticket"))
    assert (
        GatewayConfig(id="g", listen=("h", 1), status=("h", 2), heartbeat=2.0).idle_timeout == 6.0
    )


# -- the docs tables ----------------------------------------------------------
def test_docs_configuration_tables_match_the_declarations() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert config_reference.generated_part(text) == config_reference.markdown().strip("\n"), (
        "docs/configuration.md is stale: run python -m tcpdispatch.config_reference "
        "--write docs/configuration.md"
    )


def test_docs_tables_list_every_key_the_loader_accepts() -> None:
    text = config_reference.markdown()
    for _, specs in config_reference.sections():
        for spec in specs:
            assert f"| `{spec.key}` |" in text or f"| `{flag(spec)}` |" in text, spec.key
    assert "`server`" not in text  # removed: only the built-in server remains


def test_reference_tool_writes_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "c.md"
    doc.write_text(f"intro\n{config_reference.BEGIN}\nstale\n{config_reference.END}\noutro\n")
    assert config_reference.main(["--write", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "stale" not in text
    assert config_reference.generated_part(text) == config_reference.markdown().strip("\n")


# -- one refusal style --------------------------------------------------------
_MIN = "base"
_OUT_OF_RANGE = [
    # (TOML section text, key, the value, the declaration)
    (
        "[dispatcher]\nalternates = 17",
        "dispatcher.alternates",
        17,
        dict(settings_of(DispatcherConfig))["alternates"],
    ),
    ("[health]\nrise = 0", "health.rise", 0, dict(settings_of(HealthSettings))["rise"]),
    (
        "[balancing]\nhigh_water = 11",
        "balancing.high_water",
        11,
        dict(settings_of(BalancerSettings))["high_water"],
    ),
    (
        "[rebalance]\nlease_ttl_s = 0.1",
        "rebalance.lease_ttl_s",
        0.1,
        dict(settings_of(RebalanceSettings))["lease_ttl_s"],
    ),
    ("[store]\ntimeout = 0", "store.timeout", 0, dict(settings_of(StoreConfig))["timeout"]),
    (
        "[retry]\ninitial_s = 0.001",
        "retry.initial_s",
        0.001,
        dict(settings_of(BackoffConfig))["initial"],
    ),
    (
        '[[gateways]]\nid = "g"\naddress = "127.0.0.1:1"\nweight = -1',
        "gateways[0].weight",
        -1,
        dict(settings_of(GatewayEntry))["weight"],
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "value", "spec"), _OUT_OF_RANGE, ids=[c[1] for c in _OUT_OF_RANGE]
)
def test_out_of_range_config_values_are_refused_in_one_style(
    tmp_path: Path, text: str, key: str, value: Any, spec: Setting
) -> None:
    (tmp_path / "s").write_text("a-secret-of-enough-length\n")
    path = tmp_path / "d.toml"
    body = text if text.startswith("[dispatcher]") else f"[dispatcher]\n\n{text}"
    path.write_text(body.replace("[dispatcher]", '[dispatcher]\nsecret_file = "s"', 1))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert (info.value.file, info.value.key) == (str(path), key)
    assert info.value.reason == f"must be {spec.allowed()}, got {value!r}"


@pytest.mark.parametrize(
    ("flag_", "value", "name"),
    [
        ("--workers", "65", "workers"),
        ("--capacity", "0", "capacity"),
        ("--max-frame", "10", "max_frame"),
        ("--heartbeat", "0", "heartbeat"),
        ("--resume-lifetime", "-1", "resume_lifetime"),
        ("--idle-timeout", "-1", "idle_timeout"),
        ("--backlog", "0", "backlog"),
    ],
)
def test_out_of_range_gateway_flags_are_refused_in_the_same_style(
    flag_: str, value: str, name: str
) -> None:
    spec = dict(settings_of(GatewayConfig))[name]
    with pytest.raises(ConfigError) as info:
        from_args(_args("--no-ticket", flag_, value))
    assert info.value.key == flag_
    assert info.value.reason == f"must be {spec.allowed()}, got {spec.kind(value)!r}"


def test_sections_built_in_code_refuse_in_the_same_words() -> None:
    with pytest.raises(SettingError) as info:
        HealthSettings(rise=0)
    assert (info.value.key, info.value.reason) == (
        "rise",
        "must be an integer between 1 and 1000, got 0",
    )
    with pytest.raises(SettingError) as info:
        RebalanceSettings(mode="sometimes")
    assert info.value.reason == "must be one of auto, manual, off, got 'sometimes'"
    with pytest.raises(SettingError, match="high_water: must be a number > 0.0 and <= 10.0, got 0"):
        BalancerSettings(high_water=0)


# -- the removed key, one token minimum, one backoff, one CHECK_KINDS -----------
def test_server_key_is_refused_saying_only_the_built_in_server_remains(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("a-secret-of-enough-length\n")
    path = tmp_path / "d.toml"
    path.write_text('[dispatcher]\nsecret_file = "s"\nserver = "granian"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert (
        info.value.key == "dispatcher.server"
        and "only the built-in HTTP server remains" in info.value.reason
    )


SHORT = "x" * (MIN_TOKEN_LEN - 1)
ENOUGH = "x" * MIN_TOKEN_LEN


@pytest.mark.parametrize("key", ["admin_token_file", "push_token_file", "read_token_file"])
def test_every_dispatcher_token_has_the_one_minimum(tmp_path: Path, key: str) -> None:
    (tmp_path / "s").write_text("a-secret-of-enough-length\n")
    path = tmp_path / "d.toml"
    for token, ok in ((SHORT, False), (ENOUGH, True)):
        (tmp_path / "t").write_text(token + "\n")
        path.write_text(f'[dispatcher]\nsecret_file = "s"\n{key} = "t"\n')
        if ok:
            load_config(path, env={})
            continue
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        assert (
            info.value.key == f"dispatcher.{key}"
            and f"shorter than {MIN_TOKEN_LEN}" in info.value.reason
        )


def test_rebalance_and_env_tokens_have_the_one_minimum(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("a-secret-of-enough-length\n")
    (tmp_path / "t").write_text(SHORT + "\n")
    path = tmp_path / "d.toml"
    path.write_text(
        '[dispatcher]\nsecret_file = "s"\n[rebalance]\ngateway_admin_token_file = "t"\n'
    )
    with pytest.raises(ConfigError, match=f"shorter than {MIN_TOKEN_LEN}"):
        load_config(path, env={})
    path.write_text('[dispatcher]\nsecret_file = "s"\n')
    with pytest.raises(ConfigError, match=f"shorter than {MIN_TOKEN_LEN}"):
        load_config(path, env={"TCPDISPATCH_ADMIN_TOKEN": SHORT})


@pytest.mark.parametrize("flag_", ["--admin-token-file", "--report-token-file"])
def test_gateway_tokens_have_the_same_minimum_as_the_dispatcher(tmp_path: Path, flag_: str) -> None:
    """The gateway used to accept a one-character token (the dispatcher asked for 8)."""
    token = tmp_path / "t"
    extra = ["--report-to", "http://127.0.0.1:1"] if flag_ == "--report-token-file" else []
    token.write_text(SHORT + "\n")
    with pytest.raises(ConfigError, match=f"shorter than {MIN_TOKEN_LEN}") as info:
        from_args(_args("--no-ticket", *extra, flag_, str(token)))
    assert info.value.file == str(token)
    token.write_text(ENOUGH + "\n")
    cfg = from_args(_args("--no-ticket", *extra, flag_, str(token)))
    assert ENOUGH in (cfg.admin_token, cfg.report_token)


def test_one_backoff_class_for_retry_hints_and_the_client(tmp_path: Path) -> None:
    assert ClientBackoffConfig is BackoffConfig
    (tmp_path / "s").write_text("a-secret-of-enough-length\n")
    path = tmp_path / "d.toml"
    path.write_text('[dispatcher]\nsecret_file = "s"\n[retry]\ninitial_s = 0.5\nmax_s = 30\n')
    retry = load_config(path, env={}).retry
    assert isinstance(retry, BackoffConfig) and retry.as_hints() == {
        "initial_s": 0.5,
        "multiplier": 1.6,
        "jitter": 0.2,
        "max_s": 30.0,
    }
    # what the dispatcher sends is what the client reads back
    assert BackoffConfig().with_hints(retry.as_hints()) == BackoffConfig(initial=0.5, max=30.0)
    # the client clamps a hint into the range the dispatcher enforces
    initial = dict(settings_of(BackoffConfig))["initial"]
    assert BackoffConfig().with_hints({"initial_s": 1e-9}).initial == initial.ge
    path.write_text('[dispatcher]\nsecret_file = "s"\n[retry]\ninitial_s = 5\nmax_s = 2\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == "retry.max_s" and "initial_s" in info.value.reason


def test_names_say_what_they_hold() -> None:
    import tcpdispatch.config as dispatcher_config

    assert not hasattr(dispatcher_config, "GatewayConfig")  # the pool entry is GatewayEntry
    assert not hasattr(dispatcher_config, "CHECK_KINDS") and not hasattr(
        dispatcher_config, "RetryConfig"
    )
    assert CHECK_KINDS == (
        "http",
        "agent",
        "tcp",
        "push",
    )  # the kinds of a CheckSpec, the one meaning
    assert gateway_config.GatewayConfig is GatewayConfig


def test_client_backoff_flags_take_defaults_and_ranges_from_the_one_backoff() -> None:
    from tcpdispatch.client.cli import add_common_arguments, backoff_from

    p = argparse.ArgumentParser()
    add_common_arguments(p)
    args = p.parse_args([])
    assert backoff_from(args) == BackoffConfig()
    args = p.parse_args(["--backoff-max", "7200"])
    with pytest.raises(ConfigError) as info:
        backoff_from(args)
    longest = dict(settings_of(BackoffConfig))["max"]
    assert info.value.key == "--backoff-max"
    assert info.value.reason == f"must be {longest.allowed()}, got 7200.0"
