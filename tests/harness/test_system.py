"""The harness's config path: gateway handles become ``[[gateways]]`` entries in a file the
dispatcher loads; a restarted gateway keeps its command line."""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import GatewayHandle, Proc, restart_gateway, write_dispatcher_config
from tcpdispatch.config import load_config


def test_handles_become_gateway_entries_the_dispatcher_loads(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("test-secret-0123456789abcdef\n")
    g1 = GatewayHandle("g1", 7001, 8001, proc=None, weight=3)
    g2 = GatewayHandle("g2", 7002, 8002, proc=None)
    g2.check = "tcp://127.0.0.1:7002"
    port, path = write_dispatcher_config(
        tmp_path,
        [g1, g2, {"id": "g3", "address": "127.0.0.1:7003"}],
        secret_file="s",
        dispatcher={"policy": "round_robin"},
        extra="[health]\ninterval = 0.3",
    )
    assert path == tmp_path / f"dispatcher-{port}.toml"
    cfg = load_config(path)
    assert (cfg.listen, cfg.policy, cfg.health.interval) == (
        f"127.0.0.1:{port}",
        "round_robin",
        0.3,
    )
    assert [(g.id, g.address, g.check, g.weight) for g in cfg.gateways] == [
        ("g1", "127.0.0.1:7001", "http://127.0.0.1:8001/status", 3.0),
        ("g2", "127.0.0.1:7002", "tcp://127.0.0.1:7002", 1.0),
        ("g3", "127.0.0.1:7003", "tcp://127.0.0.1:7003", 1.0),
    ]


def test_restart_gateway_runs_the_same_command_line_again(procs: Callable[..., Proc]) -> None:
    args = [sys.executable, "-c", "import time; print('READY', flush=True); time.sleep(60)"]
    started: list[list[str]] = []

    def start(argv: list[str], name: str) -> Proc:
        started.append(argv)
        return procs(argv, name=name)

    gw = GatewayHandle("g1", 7001, 8001, proc=start(args, "g1"))
    first = gw.proc
    first.stop()
    restart_gateway(start, gw)
    assert started == [args, args] and gw.proc is not first and gw.proc.alive


ROOT = Path(__file__).resolve().parents[2]
EXEMPT = {
    "src/tcpdispatch/dispatcher/config_writer.py",  # the writer itself
    "tests/dispatcher/test_config.py",  # the loader's tests feed it TOML text, valid and broken
    # the declarations' tests feed the loader text, in range and out of it
    "tests/test_settings.py",
    "tests/harness/test_system.py",  # the samples below
}


def toml_tables_written_by_hand(source: str) -> list[int]:
    """Lines of ``source`` whose string literals open a ``[dispatcher]`` or ``[[gateways]]``
    table."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if text.strip() in ("[dispatcher]", "[[gateways]]") or any(
                f"{t}\n" in text for t in ("[dispatcher]", "[[gateways]]")
            ):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    "source",
    [
        "cfg.write_text('[dispatcher]\\nlisten = \"x\"')",
        "lines = ['[dispatcher]', f'listen = {x}']",
        "text = f'[[gateways]]\\nid = \"{gid}\"\\n'",
    ],
)
def test_the_scan_sees_hand_written_dispatcher_toml(source: str) -> None:
    assert toml_tables_written_by_hand(source)


def test_dispatcher_toml_is_written_only_through_the_writer() -> None:
    files = [f for d in ("src", "tests", "bench") for f in (ROOT / d).rglob("*.py")]
    assert len(files) > 150
    found = {
        rel: lines
        for f in files
        if (rel := str(f.relative_to(ROOT))) not in EXEMPT
        and (lines := toml_tables_written_by_hand(f.read_text()))
    }
    assert found == {}, "write dispatcher configs with tcpdispatch.dispatcher.config_writer"
