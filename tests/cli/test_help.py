"""Every subcommand's help: one formatter, a description, help text for every flag, no reST
markup, and the global ``--log-level`` accepted before or after the subcommand."""

from __future__ import annotations

import argparse
import re

import pytest

from tcpdispatch.cli import SUBCOMMANDS, HelpFormatter, build_parser

REST = re.compile(r"``|:(func|class|mod|meth|attr|data|exc|ref|doc):`")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_subcommand_is_listed_with_help() -> None:
    parser = build_parser([])
    text = parser.format_help()
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", text, re.MULTILINE), (
            f"{name} has no one-line help:\n{text}"
        )


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_subcommand_help_is_complete_and_plain(name: str) -> None:
    parser = build_parser([])
    sub = _subparsers(parser)[name]
    assert sub.formatter_class is HelpFormatter, f"{name} uses {sub.formatter_class.__name__}"
    assert sub.description and len(sub.description) > 40, f"{name} has no description"
    missing = [
        a.option_strings[0] if a.option_strings else a.dest
        for a in sub._actions
        if not isinstance(a, argparse._HelpAction) and not (a.help and a.help.strip())
    ]
    assert not missing, f"{name}: flags without help: {missing}"
    texts = [sub.description, sub.epilog or "", *(a.help or "" for a in sub._actions)]
    marked = [t for t in texts if REST.search(t)]
    assert not marked, f"{name}: reST markup in help: {marked}"
    rendered = sub.format_help()  # raises on a stray '%' in a help string
    assert not REST.search(rendered)
    assert "(default: None)" not in rendered and "default: default" not in rendered


def test_the_formatter_shows_real_defaults_once() -> None:
    gw = _subparsers(build_parser(["gateway"]))["gateway"].format_help()
    assert "(default: 10000)" in re.sub(r"\s+", " ", gw)  # --capacity
    assert gw.count("default: 3 x --heartbeat") == 0 and "default 3 x --heartbeat" in re.sub(
        r"\s+", " ", gw
    )


@pytest.mark.parametrize(
    "argv, level",
    [
        (["secret", "f"], "info"),
        (["--log-level", "warning", "secret", "f"], "warning"),
        (["secret", "f", "--log-level", "debug"], "debug"),
        (
            ["gateway", "--log-level", "error", "--id", "g", "--listen", "h:1", "--status", "h:2"],
            "error",
        ),
    ],
)
def test_log_level_before_or_after_the_subcommand(argv: list[str], level: str) -> None:
    assert build_parser(argv).parse_args(argv).log_level == level


def test_bad_log_level_after_the_subcommand_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser(["secret"]).parse_args(["secret", "f", "--log-level", "loud"])
    assert exc.value.code == 2 and "--log-level" in capsys.readouterr().err


def test_client_zone_option(capsys: pytest.CaptureFixture[str]) -> None:
    """``client --zone`` reaches the SDK; a bad name is a one-line error and exit 2, no
    traceback."""
    from tcpdispatch.cli import main

    assert build_parser(["client"]).parse_args(["client", "--zone", "eu-1"]).zone == "eu-1"
    assert main(["client", "--dispatcher", "http://127.0.0.1:1", "--zone", "bad zone"]) == 2
    err = capsys.readouterr().err
    assert "zone may only contain" in err and "Traceback" not in err
