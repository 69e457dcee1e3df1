"""`tcpdispatch client` (interactive) and `tcpdispatch loadgen` argument errors, as real
processes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from harness import start_dispatcher, start_gateway
from helpers import TCPDISPATCH, scaled

pytestmark = pytest.mark.integration


def test_interactive_client_sends_lines_and_prints_replies(
    procs: Any,
    secret_file: Path,
    tmp_path: Path,
) -> None:
    gw = start_gateway(procs, "g1", secret_file=secret_file)
    disp = start_dispatcher(procs, tmp_path, [gw], secret_file)
    cache = tmp_path / "cache.json"
    res = subprocess.run(
        [
            *TCPDISPATCH,
            "client",
            "--dispatcher",
            f"http://127.0.0.1:1,{disp.url}",
            "--client-id",
            "cli-1",
            "--cache",
            str(cache),
            "--dispatch-timeout",
            "1",
        ],
        input=b"hello\nworld\n",
        capture_output=True,
        check=False,
        timeout=scaled(30),
    )
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode().splitlines() == ["hello", "world"]
    err = res.stderr.decode()
    assert "connected to g1" in err and "via dispatcher" in err
    assert cache.exists()


def test_client_without_any_source_is_a_usage_error() -> None:
    res = subprocess.run(
        [*TCPDISPATCH, "client"], capture_output=True, check=False, timeout=scaled(30)
    )
    assert res.returncode == 2 and b"--dispatcher" in res.stderr


def test_client_gives_up_after_connect_timeout() -> None:
    res = subprocess.run(
        [*TCPDISPATCH, "client", "--fallback", "127.0.0.1:1", "--connect-timeout", "1"],
        input=b"",
        capture_output=True,
        check=False,
        timeout=scaled(30),
    )
    assert res.returncode == 1 and b"no gateway reachable" in res.stderr


def test_loadgen_rejects_too_many_clients_per_process() -> None:
    res = subprocess.run(
        [
            *TCPDISPATCH,
            "loadgen",
            "--dispatcher",
            "http://127.0.0.1:1",
            "--clients",
            "40000",
            "--processes",
            "2",
        ],
        capture_output=True,
        check=False,
        timeout=scaled(30),
    )
    assert res.returncode == 2 and b"--processes" in res.stderr and b"open-file limit" in res.stderr


def test_blocking_client_for_scripts(procs: Any) -> None:
    from tcpdispatch.client import BlockingClient

    gw = start_gateway(procs, "b1")  # --no-ticket: static-only mode
    with BlockingClient(fallback=[gw.address], client_id="script") as c:
        assert c.gateway == gw.address and c.session_id
        c.send(b"blocking hello")
        assert c.receive(timeout=scaled(5)) == b"blocking hello"
    assert not c.client.connected


def test_loadgen_progress_file_and_sigterm_stop(procs: Any, tmp_path: Path) -> None:
    import json
    import signal

    from helpers import wait_until

    gw = start_gateway(procs, "lg1")
    progress = tmp_path / "progress.jsonl"
    lg = subprocess.Popen(
        [
            *TCPDISPATCH,
            "loadgen",
            "--fallback",
            gw.address,
            "--clients",
            "40",
            "--processes",
            "2",
            "--duration",
            "120",
            "--progress-file",
            str(progress),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def connected() -> bool:
            lines = progress.read_text().splitlines()
            return bool(lines) and json.loads(lines[-1])["connected"] == 40

        wait_until(connected, timeout=20, what="40 clients connected (progress file)")
        assert gw.status()["connections"] == 40
        lg.send_signal(signal.SIGTERM)
        out, err = lg.communicate(timeout=scaled(30))
    finally:
        if lg.poll() is None:
            lg.kill()
            lg.wait()
    assert lg.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["ever_connected"] == 40 and summary["missing_workers"] == 0
    assert summary["gateways"] == {gw.address: 40}
    wait_until(lambda: gw.status()["connections"] == 0, timeout=10, what="clients said BYE")


def test_loadgen_against_a_dead_dispatcher_fails_and_says_so() -> None:
    """Nobody listens: every client is missing at the end, so the run fails (exit 1), and the
    summary names dispatcher and gateway errors alike (no 'errors: none' next to failures)."""
    from helpers import free_port

    res = subprocess.run(
        [
            *TCPDISPATCH,
            "loadgen",
            "--dispatcher",
            f"http://127.0.0.1:{free_port()}",
            "--clients",
            "5",
            "--duration",
            "1.5",
            "--dispatch-timeout",
            "0.5",
            "--backoff-initial",
            "0.2",
        ],
        capture_output=True,
        check=False,
        timeout=scaled(60),
        text=True,
    )
    assert res.returncode == 1, (res.stdout, res.stderr)
    lines = res.stdout.splitlines()
    assert any(ln.startswith("dispatcher request errors: ") and "none" not in ln for ln in lines), (
        lines
    )
    assert "gateway attempt errors: none" in lines
    assert not any(ln.startswith("errors:") for ln in lines)
    assert lines[-1] == "FAILED: 5 of 5 clients not connected at the end", lines
    assert "Traceback" not in res.stderr


def test_loadgen_json_reports_ok_false_and_exit_1() -> None:
    import json

    from helpers import free_port

    res = subprocess.run(
        [
            *TCPDISPATCH,
            "loadgen",
            "--dispatcher",
            f"http://127.0.0.1:{free_port()}",
            "--clients",
            "2",
            "--duration",
            "1",
            "--dispatch-timeout",
            "0.5",
            "--json",
        ],
        capture_output=True,
        check=False,
        timeout=scaled(60),
        text=True,
    )
    assert res.returncode == 1
    summary = json.loads(res.stdout)
    assert summary["ok"] is False and summary["connected"] == 0
    assert "FAILED" in res.stderr
