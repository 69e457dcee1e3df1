"""``tcpdispatch dispatcher`` argument handling and config errors at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tcpdispatch.cli import main
from tcpdispatch.dispatcher.config_writer import write_dispatcher_toml


def write(tmp_path: Path, **dispatcher: Any) -> Path:
    (tmp_path / "ticket.secret").write_text("test-secret-0123456789abcdef\n")
    return write_dispatcher_toml(
        tmp_path / "d.toml",
        secret_file="ticket.secret",
        dispatcher=dispatcher,
        gateways=[{"id": "g1", "address": "127.0.0.1:9001"}],
    )


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dispatcher", "--config", str(write(tmp_path)), "--check-config"]) == 0
    assert "OK (1 gateways, policy p2c)" in capsys.readouterr().out


def test_bad_config_exits_2_naming_file_key_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write(tmp_path, alternates="two")
    assert main(["dispatcher", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "dispatcher.alternates" in err and "must be an integer" in err


def test_bad_listen_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dispatcher", "--config", str(write(tmp_path)), "--listen", "nope"]) == 2
    assert "--listen" in capsys.readouterr().err
