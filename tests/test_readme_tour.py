"""The README's Quick tour is runnable as written: every command parses, its config loads,
what it creates is gitignored, and it says how to quit the client and stop the jobs."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tcpdispatch.cli import build_parser
from tcpdispatch.config import load_config
from tcpdispatch.tickets import generate_secret

ROOT = Path(__file__).resolve().parents[1]


def _tour() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Quick tour")
    return text[start : text.index("\n## ", start + 1)]


def _shell_lines(tour: str) -> list[str]:
    """The shell commands of the tour's code blocks, continuation lines joined, heredocs skipped."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", tour, re.DOTALL):
        block = re.sub(r"<<'EOF'\n.*?\nEOF\n", "\n", block, flags=re.DOTALL).replace("\\\n", " ")
        for line in block.splitlines():
            code = line.split(" # ", 1)[0].strip()
            if code and not code.startswith("#"):
                lines.append(code)
    return lines


def test_every_tcpdispatch_command_in_the_tour_parses() -> None:
    commands = [
        ln.rstrip("&").strip() for ln in _shell_lines(_tour()) if ln.startswith("tcpdispatch ")
    ]
    assert len(commands) >= 6, commands  # secrets, two gateways, dispatcher, client, loadgen
    for line in commands:
        argv = shlex.split(line)[1:]
        try:
            build_parser(argv).parse_args(argv)
        except SystemExit as exc:  # argparse refused the line
            pytest.fail(f"README tour command does not parse (exit {exc.code}): {line}")


def test_the_tours_dispatcher_config_loads(tmp_path: Path) -> None:
    toml = re.search(r"cat > dispatcher.toml <<'EOF'\n(.*?)\nEOF\n", _tour(), re.DOTALL)
    assert toml, "the tour writes dispatcher.toml with a heredoc"
    for name in ("ticket.secret", "admin.token"):
        (tmp_path / name).write_text(generate_secret() + "\n")
    (tmp_path / "dispatcher.toml").write_text(toml.group(1))
    cfg = load_config(tmp_path / "dispatcher.toml")
    assert [g.id for g in cfg.gateways] == ["g1", "g2"]


def test_files_the_tour_creates_are_gitignored() -> None:
    tour = _tour()
    created = set(re.findall(r"tcpdispatch secret (\S+)", tour)) | set(
        re.findall(r"cat > (\S+) <<", tour)
    )
    assert created >= {"ticket.secret", "admin.token", "dispatcher.toml"}, created
    res = subprocess.run(
        ["git", "check-ignore", "--no-index", *sorted(created)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert sorted(res.stdout.split()) == sorted(created), (
        f"not ignored: {created - set(res.stdout.split())}"
    )


def test_the_tour_says_which_terminal_how_to_quit_and_how_to_stop() -> None:
    tour = _tour()
    assert "Terminal 1" in tour and "Terminal 2" in tour
    assert "Ctrl-D" in tour
    assert "kill $(jobs -p)" in _shell_lines(tour)[-1]
