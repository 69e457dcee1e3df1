"""``tcpdispatch simulate`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcpdispatch.cli import main
from tcpdispatch.sim.run import JSON_FIELDS

ARGS = ["--clients", "600", "--gateways", "3", "--replicas", "1"]


def test_json_has_exactly_the_documented_fields_and_a_plot_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    assert (
        main(
            [
                "simulate",
                "gateway-crash",
                *ARGS,
                "--seed",
                "3",
                "--json",
                str(out),
                "--plot",
                str(png),
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    assert tuple(doc) == JSON_FIELDS
    assert doc["scenario"] == "gateway-crash" and doc["clients"] == 600 and doc["lost"] == 0
    assert doc["moves"] > 0 and doc["wall_s"] >= 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "re-homed" in text and "peak gateway load" in text


def test_same_seed_same_json_but_wall_time(tmp_path: Path) -> None:
    docs = []
    for k in range(2):
        path = tmp_path / f"{k}.json"
        assert main(["simulate", "steady", *ARGS, "--seed", "5", "--json", str(path)]) == 0
        doc = json.loads(path.read_text())
        doc.pop("wall_s")
        docs.append(doc)
    assert docs[0] == docs[1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["zone-outage", "--zones", "1"], "needs --zones >= 2"),
        (["steady", "--clients", "0"], "--clients must be between"),
        (["steady", "--clients", "many"], "is not a whole number"),
        (["steady", "--gateways", "3", "--zones", "4"], "cannot exceed"),
        (["steady", "--baseline", "nginx"], "invalid choice"),
        (["storm"], "invalid choice"),
    ],
)
def test_bad_input_is_one_clear_line_and_a_non_zero_exit(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["simulate", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_unwritable_json_path_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["simulate", "steady", *ARGS, "--json", str(tmp_path / "missing" / "r.json")])
    assert code == 1
    assert "cannot write output" in capsys.readouterr().err


def test_progress_bar_goes_to_stderr_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "rolling-restart", *ARGS, "--progress", "on"]) == 0
    captured = capsys.readouterr()
    assert "rolling-restart [" in captured.err
    assert "[" not in captured.out.splitlines()[0]
