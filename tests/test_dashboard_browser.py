"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright,
against the app served by uvicorn on 127.0.0.1 over the journal of a real replay run.

Set ``DASHBOARD_SCREENSHOTS=DIR`` to keep a screenshot of each page there (the README's
``docs/dashboard.png`` is the overview's)."""

from __future__ import annotations

import os
import socket
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from perpcarry.dashboard.app import create_app
from perpcarry.execution.journal import Journal
from perpcarry.risk.state import kill_state

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                       "(apt-get install chromium; .ci/run installs it)"),
    pytest.mark.block_network(allowed_hosts=["127.0.0.1"]),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The dashboard of a replay journal on a free loopback port, for the module."""
    import uvicorn
    from dashboard_support import TOKEN, replayed

    run = replayed(tmp_path_factory.mktemp("browser"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(run.config, run.book, TOKEN),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the dashboard did not start within 20 s"
        time.sleep(0.05)
    yield run, f"http://127.0.0.1:{port}", TOKEN
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


def shoot(page, name: str) -> None:
    folder = os.environ.get("DASHBOARD_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_every_page_opens_and_the_positions_table_shows_the_journals_numbers(served, page):
    run, url, _token = served
    for path, heading in (("/", "Kill switch"), ("/positions", "Positions"),
                          ("/opportunities", "Opportunities"), ("/operations", "Alert log")):
        response = page.goto(url + path)
        assert response.status == 200
        assert heading in page.locator("main").inner_text()
        shoot(page, path.strip("/") or "overview")
    page.goto(url + "/positions")
    with Journal.open(run.book.path, trading=False) as journal:
        held = journal.positions(include_closed=True)
    assert held
    rows = page.locator("#positions tbody tr")
    assert rows.count() == len(held)
    for p in held:
        row = page.locator(f'tr[data-position="{p.position_id}"]')
        assert Decimal(row.locator("td.spot").inner_text()) == p.spot_quantity
        assert Decimal(row.locator("td.perp").inner_text()) == p.perp_quantity
        assert Decimal(row.locator("td.delta").inner_text()) == p.delta
        assert row.locator("td").nth(3).inner_text() == p.state.value
    # A replay's venues are paper accounts over the bundled history: no rate limit.
    page.goto(url + "/operations")
    health = page.locator("#health tbody tr")
    assert health.count() == 3
    for i in range(3):
        assert "paper: no venue rate limit" in health.nth(i).locator("td.rate-limit").inner_text()


def test_the_charts_render_one_point_per_recorded_value(served, page):
    run, url, _token = served
    page.goto(url + "/")
    equity = page.locator('svg.chart[aria-label="Equity"]')
    assert equity.is_visible()
    points = equity.locator("circle.point")
    assert points.count() == run.cycles
    box = equity.bounding_box()
    assert box["width"] > 300 and box["height"] > 100  # drawn, not collapsed
    # The first point is the equity the replay's paper accounts started with.
    first = float(points.first.get_attribute("data-value"))
    overview = page.request.get(url + "/api/overview").json()
    assert first == pytest.approx(overview["equity"][0]["equity"])
    net = page.locator('svg.chart[aria-label="Realised net PnL"] circle.point')
    assert net.count() == sum(len(s) for s in overview["realised_net"].values()) > 0
    funding = page.locator('svg.chart[aria-label="Funding received"]')
    for key, points in overview["funding"].items():
        drawn = funding.locator(f'circle.point[data-series="{key}"]')
        assert drawn.count() == len(points) > 0
        assert float(drawn.last.get_attribute("data-value")) == pytest.approx(
            float(points[-1]["funding"]))


def test_kill_without_the_token_is_refused_and_with_it_engages_the_switch(served, page):
    run, url, token = served
    page.goto(url + "/")
    page.click("#kill")
    result = page.locator("#action-result")
    result.filter(has_text="refused").wait_for()
    assert "401" in result.inner_text()
    with Journal.open(run.book.path, trading=False) as journal:
        assert kill_state(journal) is None
    page.fill("#token", "not-the-token")
    page.click("#kill")
    page.locator("#action-result", has_text="403").wait_for()
    page.fill("#token", token)
    page.click("#kill")
    page.locator("#action-result", has_text="done").wait_for()
    page.locator("#kill-state", has_text="ENGAGED").wait_for()
    with Journal.open(run.book.path, trading=False) as journal:
        assert kill_state(journal).reason == "perpcarry dashboard"
    shoot(page, "overview-killed")
    page.click("#resume")
    page.locator("#kill-state", has_text="off").wait_for()
    with Journal.open(run.book.path, trading=False) as journal:
        assert kill_state(journal) is None
