"""The dashboard (issue 18) in a real headless Chromium against a real dispatcher and gateways:
the pool fills, a wrong token shows the 401 and changes nothing, the right one drains a gateway
by clicking and the page shows the new state and the event; no console error, no CSP violation.
A second test measures the page with 1,000 gateways in the pool."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import TCPDISPATCH, start_dispatcher, start_gateway, write_dispatcher_toml
from helpers import Proc, free_port, require_binary, scaled, wait_until

pytestmark = pytest.mark.integration

ADMIN = "dashboard-admin-token-0123"
# TCPDISPATCH_SCREENSHOT=docs/img/dashboard.png writes the screenshot there (docs/dashboard.md)
SCREENSHOT = os.environ.get("TCPDISPATCH_SCREENSHOT")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    chromium = require_binary("chromium")
    driver_path = require_binary("chromedriver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(scaled(20))
    try:
        yield driver
    finally:
        driver.quit()


def problems(driver: Any) -> list[str]:
    """Console errors and CSP reports since the last call, except the 401s the test provokes."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE"
        and "status of 401" not in e["message"]
        or "Content Security Policy" in e["message"]
    ]


def text(driver: Any, element_id: str) -> str:
    return str(driver.find_element("id", element_id).text)


def row_state(driver: Any, gid: str) -> str:
    rows = driver.find_elements("css selector", f'#pool-body tr[data-id="{gid}"] td.state')
    return str(rows[0].text) if rows else ""


def set_token(driver: Any, token: str) -> None:
    box = driver.find_element("id", "token")
    box.clear()
    box.send_keys(token)
    driver.find_element("id", "token-use").click()


def test_dashboard_shows_the_pool_and_drains_with_the_token(
    procs: Callable[..., Proc], tmp_path: Path, secret_file: Path, browser: Any
) -> None:
    (tmp_path / "admin.token").write_text(ADMIN + "\n")
    gws = [start_gateway(procs, gid, secret_file=secret_file) for gid in ("g1", "g2", "g3")]
    disp = start_dispatcher(
        procs,
        tmp_path,
        gws,
        secret_file,
        extra_toml=f'admin_token_file = "{tmp_path / "admin.token"}"',
    )
    for i in range(20):
        urllib.request.urlopen(f"{disp.url}/v1/dispatch?client_id=c{i}", timeout=scaled(5)).read()
    browser.get(disp.url + "/ui/")
    wait_until(
        lambda: all(row_state(browser, g.id) == "up" for g in gws),
        10,
        0.1,
        what="every gateway shown up",
    )
    assert text(browser, "conn") == "live" and "leads rebalancing" in text(browser, "replica")

    # A wrong token: the 401 is shown plainly and nothing changes.
    set_token(browser, "not-the-token")
    browser.find_element(
        "css selector", '#pool-body tr[data-id="g2"] button[data-act="drain"]'
    ).click()
    wait_until(lambda: "401" in text(browser, "action-status"), 5, 0.05, what="401 shown")
    assert "401 Unauthorized" in text(browser, "action-status")
    assert disp.gateways()["g2"]["state"] == "up" and row_state(browser, "g2") == "up"

    # The right token: drained, the row says so within 2 s, the event is in the log.
    set_token(browser, ADMIN)
    browser.find_element(
        "css selector", '#pool-body tr[data-id="g2"] button[data-act="drain"]'
    ).click()
    clicked = time.monotonic()
    wait_until(
        lambda: row_state(browser, "g2") == "draining", 2, 0.02, what="g2 draining on the page"
    )
    shown_after = time.monotonic() - clicked
    wait_until(
        lambda: "gateway g2 drained by the operator" in text(browser, "events"),
        2,
        0.05,
        what="drain event in the log",
    )
    assert disp.gateways()["g2"]["state"] == "draining"
    # The stream's own updates agree, and carry changes nobody made from the page.
    seen = browser.execute_script("return window.tcpdispatchDashboard.updates")
    wait_until(
        lambda: browser.execute_script("return window.tcpdispatchDashboard.updates") >= seen + 2,
        5,
        0.05,
        what="two more pool updates",
    )
    assert row_state(browser, "g2") == "draining"
    gws[2].signal(signal.SIGKILL)
    wait_until(lambda: row_state(browser, "g3") == "down", 5, 0.05, what="g3 down on the page")
    wait_until(
        lambda: "gateway g3 went down" in text(browser, "events"),
        2,
        0.05,
        what="down event in the log",
    )
    assert (
        browser.find_element(
            "css selector", '#pool-body tr[data-id="g2"] button[data-act="undrain"]'
        ).text
        == "undrain"
    )
    # The token never went into the URL or a cookie.
    assert ADMIN not in browser.current_url and not browser.get_cookies()
    assert browser.execute_script("return sessionStorage.getItem('tcpdispatch.token')") == ADMIN
    wait_until(
        lambda: browser.execute_script("return window.tcpdispatchDashboard.updates") >= 3,
        5,
        0.1,
        what="a few pool updates",
    )  # the charts have points to draw
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    if SCREENSHOT:
        browser.save_screenshot(SCREENSHOT)
    assert problems(browser) == []
    browser.get("about:blank")  # no stream left retrying against a dispatcher about to stop
    print(f"drain shown on the page {shown_after * 1000:.0f} ms after the click")


def test_a_thousand_gateways_render_fast(
    procs: Callable[..., Proc], tmp_path: Path, secret_file: Path, browser: Any
) -> None:
    """1,000 push gateways; heartbeats for 200 of them each second change their rows."""
    (tmp_path / "admin.token").write_text(ADMIN + "\n")
    port = free_port()
    config = write_dispatcher_toml(
        tmp_path / "big.toml",
        listen=f"127.0.0.1:{port}",
        secret_file=secret_file,
        admin_token_file=tmp_path / "admin.token",
        sections={"health": {"ttl": 30}},
        gateways=[
            {"id": f"gw-{i:04d}", "address": f"127.0.0.1:{20000 + i}", "check": "push"}
            for i in range(1000)
        ],
    )
    disp = procs([*TCPDISPATCH, "dispatcher", "--config", str(config)], name="dispatcher")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: "READY" in disp.output(), 20, 0.05, what="dispatcher READY")
    stop = threading.Event()

    def heartbeats() -> None:
        n = 0
        while not stop.is_set() and n < 120:
            for i in range(n % 5 * 200, n % 5 * 200 + 200):
                body = json.dumps(
                    {
                        "id": f"gw-{i:04d}",
                        "state": "serving",
                        "connections": n + i,
                        "capacity": 5000,
                    }
                ).encode()
                req = urllib.request.Request(
                    f"{url}/v1/heartbeat",
                    body,
                    method="POST",
                    headers={
                        "Content-Type": "application/json",
                        "Authorization": f"Bearer {ADMIN}",
                    },
                )
                urllib.request.urlopen(req, timeout=scaled(5)).read()
            n += 1
            stop.wait(0.5)

    feeder = threading.Thread(target=heartbeats, daemon=True)
    feeder.start()
    try:
        browser.get("about:blank")
        browser.get_log("browser")  # what an earlier page logged is not this test's
        t0 = time.monotonic()
        browser.get(url + "/ui/")
        wait_until(
            lambda: browser.execute_script("return window.tcpdispatchDashboard.rows") == 1000,
            10,
            0.02,
            what="1,000 rows",
        )
        first_wall = time.monotonic() - t0
        wait_until(
            lambda: browser.execute_script("return window.tcpdispatchDashboard.updates") >= 6,
            15,
            0.1,
            what="pool updates",
        )
        perf = browser.execute_script("return window.tcpdispatchDashboard")
        # The filter box narrows the table; sorting by a column reorders it.
        browser.find_element("id", "filter").send_keys("gw-000")
        wait_until(lambda: text(browser, "shown") == "10 of 1000 shown", 5, 0.05, what="filtered")
    finally:
        stop.set()
        feeder.join(scaled(10))
    assert problems(browser) == []
    print(
        f"1,000 gateways: page open to table filled {first_wall * 1000:.0f} ms; first table render "
        f"{perf['firstRenderMs']:.1f} ms, done {perf['readyAtMs']:.0f} ms after navigation start; "
        f"updates {perf['updates']}, last {perf['lastUpdateMs']:.1f} ms, "
        f"max {perf['maxUpdateMs']:.1f} ms"
    )
    assert first_wall < scaled(2.0)
    assert perf["maxUpdateMs"] < scaled(250)
