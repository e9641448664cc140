"""The dashboard in a real headless Chromium, started the way a user starts the demo.

Needs Debian's ``chromium`` (``.ci/run`` and ``scripts/test.sh`` install it). Screenshots of
every page land in ``test-output/screenshots/`` at the top of the repository.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from conftest import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-output" / "screenshots"
PAGES = [("", "Overview"), ("Spend", "Spend"), ("People", "People and products"),
         ("Caching", "Caching"), ("Savings", "Savings"),
         ("Alerts", "Alerts"), ("Reports", "Reports")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`spendwatch demo` (a week of history) serving the dashboard on a free port."""
    folder = tmp_path_factory.mktemp("demo")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SPENDWATCH_"))}
    demo = subprocess.Popen([sys.executable, "-m", "spendwatch", "demo", "--dir", str(folder),
                             "--days", "7", "--port", str(port)], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            assert demo.poll() is None, demo.stdout.read() if demo.stdout else "demo exited"
            try:
                if requests.get(url + "/_stcore/health", timeout=2).text == "ok":
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        else:
            raise AssertionError("the dashboard did not come up within 180 s")
        yield url
    finally:
        demo.terminate()
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()


def test_chromium_is_installed() -> None:
    assert Path(CHROMIUM).exists(), ("Debian's chromium is needed for the browser tests: "
                                     "apt-get install -y chromium (scripts/test.sh does it)")


def test_every_page_shows_its_figures_and_a_chart_without_errors(demo_url: str,
                                                                 tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        # (Playwright gives each launch a fresh, empty profile of its own.)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for path, title in PAGES:
                page.goto(f"{demo_url}/{path}", wait_until="networkidle")
                page.wait_for_selector('[data-testid="stMetricValue"], '
                                       '[data-testid="stDataFrame"], .vega-embed',
                                       timeout=60_000)
                page.wait_for_timeout(1500)  # let the charts draw
                page.screenshot(path=str(SCREENSHOTS / f"{title.lower().replace(' ', '-')}.png"),
                                full_page=True)
                errors = page.locator('[data-testid="stException"], [data-testid="stError"]')
                assert errors.count() == 0, f"{title}: {errors.first.inner_text()}"
                assert "Traceback" not in page.content()
                if title in ("Overview", "Spend", "People and products", "Caching", "Savings"):
                    assert page.locator(".vega-embed").count() >= 1, f"{title}: no chart"
                if title in ("Overview", "Spend", "People and products"):
                    value = page.locator('[data-testid="stMetricValue"]').first.inner_text()
                    assert value.startswith("$") and value != "$0.00", f"{title}: {value}"
        finally:
            browser.close()
