"""The package ships no test code, and nothing under src/ imports the test suite or its harness.

The test harness lives in ``tests/harness``; what the demo needs as well (processes, ports,
the dispatcher config writer) lives in the package under names that say so.
(tests/integration/test_base_install.py checks the same on a real installation.)
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]
TEST_ONLY = {"tests", "harness", "helpers", "conftest", "pytest", "_pytest", "hypothesis", "bench"}


def shipped_modules() -> list[str]:
    """Every module the wheel ships, found the way pyproject.toml tells setuptools to."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]
    (where,) = find["where"]
    modules = []
    for package in find_packages(
        where=str(ROOT / where),
        include=find.get("include", ("*",)),
        exclude=find.get("exclude", ()),
    ):
        folder = ROOT / where / package.replace(".", "/")
        modules += [f"{package}.{p.stem}" for p in sorted(folder.glob("*.py"))]
    return modules


def is_test_code(module: str) -> bool:
    name = module.rsplit(".", 1)[-1]
    return name in ("testing", "conftest") or name.startswith("test_")


def test_the_wheel_ships_no_test_module() -> None:
    modules = shipped_modules()
    assert {
        "tcpdispatch.procs",
        "tcpdispatch.cluster",
        "tcpdispatch.dispatcher.config_writer",
    } <= set(modules)
    assert [m for m in modules if is_test_code(m)] == []


def test_the_check_would_see_a_testing_module() -> None:
    assert is_test_code("tcpdispatch.testing") and is_test_code("tcpdispatch.gateway.testing")
    assert not is_test_code("tcpdispatch.procs")


def imports_of_test_code(source: str) -> list[str]:
    """Modules ``source`` imports that belong to the test suite (absolute imports only: a
    relative import stays inside the package)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        found += [n for n in names if n.split(".")[0] in TEST_ONLY or is_test_code(n)]
    return found


@pytest.mark.parametrize(
    "source",
    [
        "import pytest",
        "from tests.harness import start_gateway",
        "import harness.system",
        "from helpers import wait_until",
        "from tcpdispatch.testing import Proc",
        "from tcpdispatch import testing",
        "def f():\n    from harness import scaled\n",
    ],
)
def test_the_import_scan_sees_test_imports_of_every_shape(source: str) -> None:
    assert imports_of_test_code(source)


def test_nothing_under_src_imports_test_code() -> None:
    files = sorted((ROOT / "src").rglob("*.py"))
    assert len(files) > 50
    offenders = {
        str(f.relative_to(ROOT)): found
        for f in files
        if (found := imports_of_test_code(f.read_text()))
    }
    assert offenders == {}
