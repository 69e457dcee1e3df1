"""`tcpdispatch demo` end to end: every step happens, nothing is lost, no process is left;
narration once, a final frame that shows the final state, JSON only with --json, logs kept
on failure."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import TCPDISPATCH, scaled

from tcpdispatch import demo as demo_cli

pytestmark = pytest.mark.integration


def test_demo_runs_every_step_and_leaves_nothing_behind() -> None:
    # TTY_COMPATIBLE=1 makes rich treat the pipe as a terminal: the live table is exercised.
    env = {**os.environ, "TTY_COMPATIBLE": "1", "COLUMNS": "140"}
    proc = subprocess.run(
        [*TCPDISPATCH, "demo", "--clients", "90", "--pace", "0.2", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=scaled(150),
        env=env,
    )
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", proc.stdout)  # without rich's terminal codes
    lines = [ln for ln in plain.splitlines() if ln.startswith("DEMO SUMMARY ")]
    assert lines, f"no summary line; stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    summary = json.loads(lines[-1][len("DEMO SUMMARY ") :])
    assert [s["name"] for s in summary["steps"]] == [
        "connect",
        "kill",
        "drain",
        "add",
        "rebalance",
        "verify",
    ]
    failed = [s for s in summary["steps"] if not s["ok"]]
    assert not failed, failed
    assert summary["clients"] == summary["connected"] > 90
    assert summary["messages_sent"] == summary["messages_echoed"] > 0
    assert "g2" not in summary["final_shares"] and "g3" not in summary["final_shares"]
    shares = summary["final_shares"]
    assert shares.get("g4", 0) > 0
    # g4 (weight 3) holds its share of the clients that were already connected, not only newcomers
    assert abs(shares["g4"] - 3 * shares["g1"]) <= 0.1 * summary["clients"], shares
    assert proc.returncode == 0, proc.stdout[-2000:]
    # narration once (it used to be printed in the live table and again at the end)
    assert plain.count("killing g2 with SIGKILL") == 1, plain[-3000:]
    # the last frame shows every client still connected, not the teardown (0/N)
    frames = re.findall(r"clients connected: (\d+)/(\d+)", plain)
    assert frames and frames[-1][0] == frames[-1][1] == str(summary["clients"]), frames[-3:]
    workdir = summary["workdir"]
    assert not Path(workdir).exists() and summary["logs_kept"] is False
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(workdir in part for part in (p.info["cmdline"] or []))
    ]
    assert leftovers == [], f"processes left behind: {leftovers}"


@pytest.mark.parametrize("as_json", [False, True])
def test_failed_step_keeps_the_logs_and_says_where(
    monkeypatch: Any,
    capsys: pytest.CaptureFixture[str],
    as_json: bool,
) -> None:
    async def failing_script(self: demo_cli.Demo) -> None:
        self.say("starting (for the test: fails at once)")
        await self.step("connect", False, 0.0, "0 clients connected")

    monkeypatch.setattr(demo_cli.Demo, "script", failing_script)
    code = demo_cli.run(argparse.Namespace(clients=12, no_live=True, pace=0.0, json=as_json))
    out = capsys.readouterr().out
    assert code == 1
    kept = re.search(r"logs kept in (\S+)", out)
    assert kept and Path(kept.group(1)).is_dir(), out
    assert "failed steps: connect" in out
    assert ("DEMO SUMMARY " in out) is as_json  # the JSON summary only behind --json
    assert out.count("fails at once") == 1
    import shutil

    shutil.rmtree(kept.group(1))


def test_linger_keeps_running_until_interrupted_and_names_the_dashboard(
    monkeypatch: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio
    import signal
    import time

    async def quick_script(self: demo_cli.Demo) -> None:  # the real script is the test above
        self.cluster.dispatcher_url = "http://127.0.0.1:8080"
        for name in ("connect", "kill", "drain", "add", "rebalance", "verify"):
            await self.step(name, True, 0.0, "ok")

    said: list[float] = []
    real_say = demo_cli.Demo.say

    def say(self: demo_cli.Demo, text: str) -> None:
        real_say(self, text)
        if "press Ctrl-C" in text:  # what a person does after looking around: Ctrl-C
            said.append(time.monotonic())
            asyncio.get_running_loop().call_later(0.5, os.kill, os.getpid(), signal.SIGINT)

    monkeypatch.setattr(demo_cli.Demo, "script", quick_script)
    monkeypatch.setattr(demo_cli.Demo, "say", say)
    code = demo_cli.run(
        argparse.Namespace(clients=12, no_live=True, pace=0.0, json=False, linger=True)
    )
    out = capsys.readouterr().out
    assert code == 0, out  # Ctrl-C after a good run is a good end, not 130
    assert said and time.monotonic() - said[0] >= 0.5  # it waited for the interrupt
    assert "dashboard http://127.0.0.1:8080/ui/" in out and "stopping" in out
