"""Key files, the public key text, `tcpdispatch keygen` and the gateway's key flags."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from tcpdispatch.cli import main
from tcpdispatch.errors import ConfigError
from tcpdispatch.gateway.cli import add_parser
from tcpdispatch.gateway.config import from_args
from tcpdispatch.secure.keys import StaticKey, load_key_file, parse_public_key


def test_keygen_writes_a_private_file_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "g.key"
    assert main(["keygen", str(path)]) == 0
    printed = capsys.readouterr().out.strip()
    assert os.stat(path).st_mode & 0o777 == 0o600
    [key] = load_key_file(path)
    assert key.public.text == printed == (tmp_path / "g.key.pub").read_text().strip()
    assert main(["keygen", str(path)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["keygen", "--show", str(path)]) == 0
    assert capsys.readouterr().out.strip() == printed


@pytest.mark.parametrize(
    "text,why",
    [
        ("", "holds no key"),
        ("# only a comment\n", "holds no key"),
        ("not-base64!\n", "line 1"),
        ("QUJD\n", "line 1: private key must be 32 bytes"),
    ],
)
def test_bad_key_files_name_the_file_and_line(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(text)
    with pytest.raises(ConfigError, match=why) as err:
        load_key_file(path)
    assert err.value.file == str(path)


def test_same_key_twice_and_missing_file(tmp_path: Path) -> None:
    k = StaticKey.generate().private_text
    (tmp_path / "dup.key").write_text(f"{k}\n{k}\n")
    with pytest.raises(ConfigError, match="twice"):
        load_key_file(tmp_path / "dup.key")
    with pytest.raises(ConfigError, match="cannot read"):
        load_key_file(tmp_path / "missing.key")


def test_public_key_text_round_trip_and_errors() -> None:
    key = StaticKey.generate()
    assert parse_public_key(key.public.text) == key.public and len(key.public.text) == 43
    with pytest.raises(ValueError, match="43 characters"):
        parse_public_key(key.public.text[:-1])
    with pytest.raises(ValueError):
        parse_public_key(key.public.text + "=")


def _gateway_args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(
        [
            "gateway",
            "--id",
            "g1",
            "--listen",
            "127.0.0.1:1",
            "--status",
            "127.0.0.1:2",
            "--no-ticket",
            *extra,
        ]
    )


def test_gateway_key_flags(tmp_path: Path) -> None:
    path = tmp_path / "g.key"
    path.write_text(StaticKey.generate().private_text + "\n")
    cfg = from_args(
        _gateway_args("--key-file", str(path), "--allow-plain", "--resume-lifetime", "60")
    )
    assert (cfg.key_file, cfg.allow_plain, cfg.resume_lifetime) == (str(path), True, 60)
    with pytest.raises(ConfigError, match="--allow-plain"):
        from_args(_gateway_args("--allow-plain"))
    with pytest.raises(ConfigError, match="--resume-lifetime"):
        from_args(_gateway_args("--key-file", str(path), "--resume-lifetime", "-1"))
    path.write_text("garbage\n")
    with pytest.raises(ConfigError, match="line 1"):
        from_args(_gateway_args("--key-file", str(path)))
