"""``tcpdispatch secret FILE``: creates 0600 files, refuses to clobber, one-line errors."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from helpers import TCPDISPATCH, scaled

from tcpdispatch.cli import main


def test_writes_a_fresh_0600_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ticket.secret"
    assert main(["secret", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) >= 40 and capsys.readouterr().out == f"wrote {path}\n"


def test_existing_file_is_kept_unless_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "admin.token"
    path.write_text("keep-me\n")
    assert main(["secret", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"tcpdispatch secret: {path} already exists; pass --force to replace it\n"
    assert path.read_text() == "keep-me\n"
    assert main(["secret", "--force", str(path)]) == 0
    assert path.read_text() != "keep-me\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["admin.token"]  # no temporary file left


@pytest.mark.parametrize("where", ["missing-dir/x.secret", "."])
def test_bad_paths_get_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    assert main(["secret", str(tmp_path / where)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tcpdispatch secret: cannot create ") and err.count("\n") == 1, err


def test_as_a_process_no_traceback(tmp_path: Path) -> None:
    res = subprocess.run(
        [*TCPDISPATCH, "secret", str(tmp_path / "nope" / "f")],
        capture_output=True,
        text=True,
        check=False,
        timeout=scaled(30),
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert (
        res.stderr.strip() == f"tcpdispatch secret: cannot create {tmp_path / 'nope' / 'f'}: "
        f"directory {tmp_path / 'nope'} does not exist"
    )
