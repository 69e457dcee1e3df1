"""Every system binary a test or benchmark looks up is installed by `.ci/run`.

CI runs on a machine that may never have seen a developer's session, so a binary that a test
needs but `.ci/run` does not install fails there (issue 11: iptables). The scan reads the code
with ``ast``: calls to ``require_binary``, ``shutil.which``, ``bench.common.binary`` and the
first word of commands handed to ``subprocess``/``_run``, with loop variables over literal tuples
resolved, plus ``/usr/sbin/NAME``-style literals.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("tests", "bench", "src")
LOOKUPS = {"require_binary", "which", "binary"}
RUNNERS = {"run", "Popen", "check_output", "check_call", "_run", "create_subprocess_exec"}
# Always present where Python runs; not system packages the project installs.
IGNORED = {"python3", "python", "sh", "bash", "kill", "true", "false", "env"}
ABSOLUTE = re.compile(r"^/(?:usr/)?s?bin/([A-Za-z0-9_.+-]+)$")


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _loop_values(tree: ast.AST) -> dict[str, list[str]]:
    """``for tool in ("a", "b")`` -> {"tool": ["a", "b"]}."""
    found: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.For)
            and isinstance(node.target, ast.Name)
            and isinstance(node.iter, ast.Tuple | ast.List)
        ):
            values = [
                e.value
                for e in node.iter.elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            ]
            found.setdefault(node.target.id, []).extend(values)
    return found


def _strings(arg: ast.expr, loops: dict[str, list[str]]) -> list[str]:
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.Name):
        return loops.get(arg.id, [])
    if isinstance(arg, ast.List | ast.Tuple) and arg.elts:
        return _strings(arg.elts[0], loops)
    return []


def looked_up(source: str) -> Iterator[str]:
    """Names of the system binaries ``source`` looks up or runs."""
    tree = ast.parse(source)
    loops = _loop_values(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            name = _name(node.func)
            if name in LOOKUPS or name in RUNNERS:
                yield from (
                    s
                    for s in _strings(node.args[0], loops)
                    if re.fullmatch(r"[a-z][a-z0-9_+-]*", s)
                )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = ABSOLUTE.match(node.value)
            if m:
                yield m.group(1)


def binaries_the_code_needs() -> set[str]:
    found: set[str] = set()
    for top in SCANNED:
        for path in (ROOT / top).rglob("*.py"):
            found.update(looked_up(path.read_text(encoding="utf-8")))
    return found - IGNORED


def binaries_ci_installs() -> set[str]:
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    block = re.search(r"REQUIRED_BINARIES=\((.*?)\)", text, re.DOTALL)
    assert block, ".ci/run has no REQUIRED_BINARIES=( ... ) list"
    return {
        m.group(1)
        for m in re.finditer(r"^\s*([A-Za-z0-9_.+-]+):[a-z0-9.+-]+", block.group(1), re.MULTILINE)
    }


def test_scanner_sees_lookups_of_every_shape() -> None:
    sample = """
import shutil, subprocess
shutil.which('alpha')  # single quotes: the before-stop hook greps for which("...")
require_binary("beta")
for tool in ("gamma", "delta"):
    require_binary(tool)
subprocess.run(["epsilon", "-x"])
_run("zeta", "netns")
PATH = "/usr/sbin/eta"
shutil.which(variable_we_cannot_know)
"""
    assert set(looked_up(sample)) == {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"}


def test_the_scan_finds_the_known_integration_binaries() -> None:
    # Guards the scanner itself: if these vanish from the scan, it has gone blind.
    assert {
        "nginx",
        "haproxy",
        "redis-server",
        "wrk",
        "iptables",
        "ip",
    } <= binaries_the_code_needs()


def test_ci_run_installs_every_binary_the_tests_look_up() -> None:
    missing = sorted(binaries_the_code_needs() - binaries_ci_installs())
    assert not missing, (
        f"tests or benchmarks look up {missing}, but .ci/run does not install them: "
        "add BINARY:DEBIAN-PACKAGE lines to REQUIRED_BINARIES in .ci/run"
    )
