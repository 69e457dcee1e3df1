"""`pip install tcpdispatch` (no extra) is the client SDK alone, and it works against a real system.

The package is installed into a fresh virtual environment (its own pip resolves the base
dependencies), then a client in that environment talks to a gateway and a dispatcher started
from the full install.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from harness import start_dispatcher, start_gateway
from helpers import scaled

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("uvloop", "httptools", "prometheus_client", "psutil", "rich", "matplotlib")


def source_copy(dest: Path) -> Path:
    """The project's files as git sees them, working-tree edits included: a build from here
    cannot pick up leftovers of earlier builds (``build/lib`` keeps deleted modules)."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        src = ROOT / name
        if src.is_file():  # tracked but deleted in the working tree: not part of the package
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("base-install") / "venv"
    source = source_copy(tmp_path_factory.mktemp("source"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=scaled(120))
    res = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        check=False,
        timeout=scaled(400),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return venv


def test_base_install_has_no_server_dependencies(base_venv: Path) -> None:
    probe = (
        "import importlib.util as u, sys; "
        "print(' '.join(m for m in sys.argv[1:] if u.find_spec(m)))"
    )
    res = subprocess.run(
        [str(base_venv / "bin" / "python"), "-c", probe, *SERVER_ONLY],
        capture_output=True,
        text=True,
        check=True,
        timeout=scaled(60),
    )
    assert res.stdout.split() == [], f"the base install pulled in {res.stdout.split()}"
    typed = subprocess.run(
        [
            str(base_venv / "bin" / "python"),
            "-c",
            (
                "import tcpdispatch, pathlib; print((pathlib.Path(tcpdispatch.__file__).parent"
                " / 'py.typed').exists())"
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert typed.stdout.strip() == "True"


def test_the_installed_package_holds_no_test_code(base_venv: Path) -> None:
    listing = (
        "import importlib.metadata as m; "
        "print('\\n'.join(str(f) for f in m.files('tcpdispatch') or ()))"
    )
    res = subprocess.run(
        [str(base_venv / "bin" / "python"), "-c", listing],
        capture_output=True,
        text=True,
        check=True,
        timeout=scaled(60),
    )
    modules = [f for f in res.stdout.split() if f.startswith("tcpdispatch/") and f.endswith(".py")]
    assert "tcpdispatch/procs.py" in modules, res.stdout[-2000:]  # the listing sees the package
    test_code = [
        f
        for f in modules
        if Path(f).stem in ("testing", "conftest") or Path(f).stem.startswith("test_")
    ]
    assert test_code == [], f"test code in the installed package: {test_code}"


def test_server_command_names_the_extra_to_install(base_venv: Path) -> None:
    for command in (["gateway", "--id", "g1"], ["dispatcher", "--config", "x.toml"], ["demo"]):
        res = subprocess.run(
            [str(base_venv / "bin" / "tcpdispatch"), *command],
            capture_output=True,
            text=True,
            check=False,
            timeout=scaled(60),
        )
        assert res.returncode == 2, (command, res.stdout, res.stderr)
        assert "pip install 'tcpdispatch[server]'" in res.stderr and "Traceback" not in res.stderr


def test_base_install_client_talks_to_a_running_system(
    base_venv: Path,
    procs: Any,
    secret_file: Path,
    tmp_path: Path,
) -> None:
    gw = start_gateway(procs, "g1", secret_file=secret_file)
    disp = start_dispatcher(procs, tmp_path, [gw], secret_file)
    script = textwrap.dedent(f"""
        from tcpdispatch.client import BlockingClient
        with BlockingClient(dispatchers=[{disp.url!r}], client_id="base-1") as c:
            c.send(b"from the base install")
            print(c.gateway, c.receive(timeout=10).decode())
    """)
    res = subprocess.run(
        [str(base_venv / "bin" / "python"), "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=scaled(60),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split(None, 1) == ["g1", "from the base install\n"]
