"""Hostile names: API keys and workspaces named by an attacker, end to end.

The simulator (a real process, on the real clock) renames its keys and workspaces through
``POST /_sim/names``; the real CLI collects them; then every surface is checked as a user sees
it: the email alerts of ``alerts check`` (a real aiosmtpd server), what ``spend`` and
``alerts check`` print, the weekly CSV and the dashboard's CSV download, and the dashboard's
pages in headless Chromium next to a local listener that must see no request.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import (ADMIN_KEY, REPO, copy_warehouse, start_simulator_process, stop_simulator,
                      write_config)
from fake_smtp import Mailbox, closed_port, free_port
from alerts.model import Notification
from alerts.states import Kind
from spendwatch.text import FORMULA_STARTS, clean, code_span, csv_cell, header_text, markdown_text

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-output" / "screenshots"
TZ = ZoneInfo("America/Chicago")
#: What a terminal must never get raw: C0/C1 controls (tab and newline aside), bidi controls.
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


# --- a local listener: what a browser would load from a name ---------------------------------

class Listener:
    """An HTTP server that records every request it gets (it must get none)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                seen.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def hostile_names(port: int) -> dict[str, dict[str, str]]:
    """The names an attacker gives keys and workspaces (by slug), for ``POST /_sim/names``."""
    return {"api_keys": {
        "search-rag": "search-rag\r\nBcc: victim@example.com",
        "support-bot-prod": f"![px](http://127.0.0.1:{port}/pixel.png) "
                            f"[clickme](http://127.0.0.1:{port}/x)",
        "eval-harness": "eval\x1b]8;;http://127.0.0.1:1/\x07harness\x1b[2J\rX\x00\u202eevil",
        "nightly-summaries": f'=HYPERLINK("http://127.0.0.1:{port}/csv","x")',
        "data-enrichment-batch": "@SUM(1+1)*cmd|' /C calc'!A0",
    }, "workspaces": {"search": "-2+3", "support": "\tSupport"}}


# --- the warehouse: collected once from the renamed simulator ---------------------------------

def cli(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spendwatch", "--config", str(config), *args],
                          cwd=config.parent, env=env, capture_output=True, text=True,
                          timeout=300)


def config_for(folder: Path, simulator_url: str, extra: str = "") -> Path:
    path = write_config(folder, [{"name": "acme", "base_url": simulator_url}], extra=extra,
                        collection="initial_backfill_days = 3")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, listener: Listener) -> Iterator[dict]:
    """A simulator on the real clock whose keys and workspaces have hostile names, and a
    warehouse collected from it (the last three local days) by the real CLI."""
    sim = start_simulator_process(now=None)
    try:
        described = sim.control("POST", "/_sim/names", json=hostile_names(listener.port)).json()
        assert set(hostile_names(listener.port)["api_keys"].values()) <= {
            k["name"] for k in described["api_keys"]}
        folder = tmp_path_factory.mktemp("hostile")
        config = config_for(folder, sim.url)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ANTHROPIC_", "SPENDWATCH_"))}
        env["ANTHROPIC_ADMIN_KEY"] = ADMIN_KEY
        today = datetime.now(TZ).date()
        out = cli(config, "collect", "--since", str(today - timedelta(days=2)), env=env)
        assert out.returncode == 0, out.stderr
        yield {"simulator": sim, "database": folder / "data" / "spendwatch.duckdb", "env": env,
               "today": today}
    finally:
        stop_simulator(sim)


def fresh_copy(hostile: dict, folder: Path, extra: str = "") -> Path:
    """A config of its own over a copy of the collected warehouse (alert state per test)."""
    copy_warehouse(hostile["database"], folder)
    return config_for(folder, hostile["simulator"].url, extra)


def email_alerts(port: int) -> str:
    """A mail channel and two rules that fire: the cache rule once per feature (every key's
    name is a feature here: no [[features]]), and a daily spend over $1."""
    return f'''
[[alerts.channels]]
name = "mail"
kind = "email"
host = "127.0.0.1"
port = {port}
security = "none"
from = "spendwatch@acme.example"
to = ["finance@acme.example"]
timeout_seconds = 10

[[alerts.rules]]
name = "cache per feature"
kind = "cache_hit_ratio"
channels = ["mail"]
per = "feature"
floor = 0.999
window_hours = 24
min_input_tokens = 1

[[alerts.rules]]
name = "daily"
kind = "daily_spend"
channels = ["mail"]
threshold_usd = "1"
'''


# --- the core functions -----------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["a\x1b]8;;http://x\x07b", "k\r\nBcc: x", "\x00nul",
                                 "\u202eevil", "x\x9by", "\udc80z", "\u2066iso\u2069"])
def test_clean_leaves_one_line_without_controls(raw: str) -> None:
    assert not RAW_CONTROLS.search(clean(raw)) and "\n" not in clean(raw)
    assert "\n" not in header_text(raw) and "\r" not in header_text(raw)
    clean(raw).encode("utf-8")  # no lone surrogate left


@pytest.mark.parametrize("raw", ["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1",
                                 "\r=1", " =1", "|x", "%0A"])
def test_csv_cell_starts_no_formula(raw: str) -> None:
    assert csv_cell(raw).startswith("'")


def test_markdown_text_escapes_markup_and_code_spans_what_would_autolink() -> None:
    assert markdown_text("a*b_[c](d)") == r"a\*b\_\[c\]\(d\)"
    assert markdown_text("see http://x/y") == "`see http://x/y`"
    assert markdown_text("a`b`") == r"a\`b\`" and code_span("a`b`") == "`` a`b` ``"
    assert markdown_text(None) == "" and markdown_text("plain name") == "plain name"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_no_text_gets_through_clean_csv_or_markdown_raw(text: str) -> None:
    line = clean(text)
    assert not RAW_CONTROLS.search(line) and "\n" not in line and "\t" not in line
    line.encode("utf-8")
    assert not csv_cell(text).lstrip(" ").startswith(FORMULA_STARTS)
    shown = markdown_text(text)
    assert "\n" not in shown and not RAW_CONTROLS.search(shown)
    if shown and not shown.startswith("`"):  # escaped: no unescaped markup character left
        assert not re.search(r"(?<!\\)[\[\]()!<>*_`$:]", shown.replace("\\\\", "")), shown


def hostile_notification() -> Notification:
    now = datetime(2026, 11, 24, 12, tzinfo=TZ)
    return Notification(kind=Kind.FIRING, rule="cache", rule_kind="cache_hit_ratio",
                        scope={"feature": "k\r\nBcc: x@y <!channel> \x1b]0;t\x07"},
                        level="floor", value=Decimal("0.1"), threshold=Decimal("0.5"),
                        unit="ratio", window="24 h", summary="k\r\nBcc: x@y fell", at=now,
                        started_at=now)


def test_no_name_breaks_an_email_header_or_a_slack_message() -> None:
    from alerts.email import email_message
    from alerts.slack import slack_payload

    message = email_message(hostile_notification(), "sw@acme.example", ["f@acme.example"])
    assert message["Bcc"] is None and "\n" not in message["Subject"]
    assert not RAW_CONTROLS.search(message.as_string().replace("\r\n", "\n"))
    payload = slack_payload(hostile_notification())
    texts = json.dumps(payload, ensure_ascii=False)
    markup = json.dumps([payload["text"], payload["blocks"][1:]])  # mrkdwn (the header is plain)
    assert "<!channel>" not in markup and "&lt;!channel&gt;" in markup
    assert "\n" not in payload["blocks"][0]["text"]["text"] and "\x1b" not in texts
    assert all(block["text"].get("verbatim") for block in payload["blocks"][1:2])


# --- email: a name with CR/LF -----------------------------------------------------------------

def test_a_key_named_with_cr_lf_leaves_every_email_alert_delivered(
        hostile: dict, isolated: Path, smtp_server: Any) -> None:
    mailbox = Mailbox()
    config = fresh_copy(hostile, isolated, email_alerts(smtp_server(mailbox)))
    out = cli(config, "alerts", "check", env=hostile["env"])
    assert out.returncode == 0, out.stdout + out.stderr
    firing = [line for line in out.stdout.splitlines() if line.startswith("FIRING")]
    sent = [line for line in out.stdout.splitlines() if line.startswith("sent to mail")]
    assert not [line for line in out.stdout.splitlines() if "NOT SENT" in line], out.stdout
    assert any("search-rag  Bcc: victim@example.com" in line for line in firing), out.stdout
    assert len(firing) >= 3 and len(sent) == len(firing) == len(mailbox.delivered)
    subjects = [d.message["Subject"] for d in mailbox.delivered]
    hostile_subject = [s for s in subjects if "search-rag" in s]
    assert hostile_subject and all("\r" not in s and "\n" not in s for s in subjects)
    for delivered in mailbox.delivered:  # no header was added, nobody else got it
        assert delivered.rcpt_tos == ["finance@acme.example"]
        assert delivered.message["Bcc"] is None
    again = cli(config, "alerts", "check", env=hostile["env"])  # nothing left pending
    assert again.returncode == 0 and "NOT SENT" not in again.stdout


def test_alerts_check_exits_1_when_an_alert_was_not_sent(hostile: dict, isolated: Path) -> None:
    config = fresh_copy(hostile, isolated, email_alerts(closed_port()))
    out = cli(config, "alerts", "check", env=hostile["env"])
    not_sent = [line for line in out.stdout.splitlines() if line.startswith("NOT SENT to mail")]
    assert not_sent and "sent to mail" not in out.stdout, out.stdout + out.stderr
    assert out.returncode == 1, out.stdout + out.stderr
    assert not RAW_CONTROLS.search(out.stdout + out.stderr)


# --- the terminal -----------------------------------------------------------------------------

def test_spend_and_alerts_check_print_no_raw_control_character(hostile: dict, isolated: Path,
                                                               smtp_server: Any) -> None:
    config = fresh_copy(hostile, isolated, email_alerts(smtp_server(Mailbox())))
    since = str(hostile["today"] - timedelta(days=2))
    table = cli(config, "spend", "--since", since, "--by", "api_key,workspace,feature",
                env=hostile["env"])
    check = cli(config, "alerts", "check", env=hostile["env"])
    for out in (table, check):
        assert out.returncode == 0, out.stderr
        assert not RAW_CONTROLS.search(out.stdout + out.stderr), repr(out.stdout)
    assert "eval\N{REPLACEMENT CHARACTER}]8;;http://127.0.0.1:1/\N{REPLACEMENT CHARACTER}" \
           "harness" in table.stdout
    assert "harness" in check.stdout and "search-rag  Bcc" in check.stdout
    # Scripts get the names exactly as stored: JSON escapes them itself. (A NUL is stored as
    # U+FFFD: a DuckLake's catalog query cannot carry one.)
    data = cli(config, "spend", "--since", since, "--by", "api_key", "--json",
               env=hostile["env"])
    assert data.returncode == 0 and not RAW_CONTROLS.search(data.stdout)
    names = {row["api_key"] for row in json.loads(data.stdout)}
    raw = hostile_names(0)["api_keys"]["eval-harness"]
    assert "\x00" in raw and raw.replace("\x00", "\ufffd") in names


# --- CSV --------------------------------------------------------------------------------------

def text_cells(text: str) -> list[str]:
    """Every cell of a CSV that is not a number."""
    cells = []
    for row in list(csv.reader(io.StringIO(text, newline="")))[1:]:
        for cell in row:
            try:
                Decimal(cell)
            except InvalidOperation:
                cells.append(cell)
    return cells


def assert_no_formula(text: str, *expected: str) -> None:
    """No text cell of the CSV starts a formula; the hostile names are there, quoted."""
    cells = text_cells(text)
    assert cells and not [c for c in cells if c.startswith(FORMULA_STARTS)], text[:2000]
    assert any(c.startswith("'=HYPERLINK(") for c in cells)
    for cell in ("'@SUM(1+1)*cmd|' /C calc'!A0", *expected):
        assert cell in cells, cell


def test_the_weekly_csv_starts_no_cell_with_a_formula(hostile: dict, isolated: Path) -> None:
    config = fresh_copy(hostile, isolated)
    monday = hostile["today"] - timedelta(days=hostile["today"].weekday())
    week = f"{monday.isocalendar()[0]}-W{monday.isocalendar()[1]:02d}"
    out = cli(config, "report", "weekly", "--week", week, "--out", str(isolated / "w.csv"),
              env=hostile["env"])
    assert out.returncode == 0, out.stderr
    assert_no_formula((isolated / "w.csv").read_text(encoding="utf-8"), "'-2+3", "'\tSupport")


# --- the dashboard in a real browser ---------------------------------------------------------

PAGES = [("", "Overview"), ("Spend", "Spend"), ("Caching", "Caching"),
         ("Savings", "Savings"), ("Alerts", "Alerts"), ("Reports", "Reports")]


def start_dashboard(config: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "spendwatch", "--config", str(config),
                                "dashboard", "--port", str(port)], cwd=config.parent, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stdout.read() if process.stdout else "exited")
        try:
            if requests.get(url + "/_stcore/health", timeout=2).text == "ok":
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    process.kill()
    raise AssertionError("the dashboard did not come up within 90 s")


def test_the_dashboard_shows_a_markdown_name_as_text_and_loads_nothing_from_it(
        hostile: dict, isolated: Path, smtp_server: Any, listener: Listener) -> None:
    from playwright.sync_api import sync_playwright

    extra = email_alerts(smtp_server(Mailbox())) + "\n[savings]\ncache_hit_target = 0.999\n"
    config = fresh_copy(hostile, isolated, extra)
    assert cli(config, "alerts", "check", env=hostile["env"]).returncode == 0  # episodes
    process, url = start_dashboard(config, hostile["env"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    texts: dict[str, str] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000},
                                        accept_downloads=True)
                for path, title in PAGES:
                    page.goto(f"{url}/{path}", wait_until="networkidle")
                    page.wait_for_selector('[data-testid="stMetricValue"]', timeout=60_000)
                    page.wait_for_timeout(2000)  # let the charts and tables draw
                    page.screenshot(path=str(SCREENSHOTS / f"hostile-{title.lower()}.png"))
                    page.evaluate("document.querySelector('[data-testid=\"stMain\"]')"
                                  ".scrollTo(0, 1e6)")
                    page.wait_for_timeout(500)
                    page.screenshot(path=str(SCREENSHOTS / f"hostile-{title.lower()}-end.png"))
                    where = f"127.0.0.1:{listener.port}"
                    assert page.locator(f'a[href*="{where}"]').count() == 0, title
                    assert page.locator(f'img[src*="{where}"]').count() == 0, title
                    assert page.locator('[data-testid="stException"]').count() == 0, title
                    # The page's text, and its tables' cells (drawn on a canvas, kept as
                    # text in the grid's accessible copy: literal, never markup).
                    tables = page.locator('[data-testid="stDataFrame"]')
                    texts[title] = page.inner_text("body") + "\n".join(
                        str(tables.nth(i).text_content()) for i in range(tables.count()))
                    if title == "Reports":
                        with page.expect_download() as download:
                            page.get_by_role("button", name="Download CSV").click()
                        downloaded = Path(download.value.path()).read_text(encoding="utf-8")
            finally:
                browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert listener.requests == []  # no image, no prefetch, nothing
    name = hostile_names(listener.port)["api_keys"]["support-bot-prod"]
    assert name in texts["Overview"], texts["Overview"][:3000]  # a firing alert's scope
    assert name in texts["Savings"], texts["Savings"][:3000]   # a lever's row
    assert_no_formula(downloaded)


# --- the simulator's hook ---------------------------------------------------------------------

def test_the_simulator_renames_keys_and_workspaces_and_refuses_unknown_ones() -> None:
    from collectors.simulator.server import start_simulator

    with start_simulator(admin_keys=[ADMIN_KEY]) as sim:
        url = sim.url + "/_sim/names"
        renamed = requests.post(url, json={"api_keys": {"search-rag": "a\r\nb"},
                                           "workspaces": {"search": "=1"}}, timeout=10)
        assert renamed.status_code == 200
        listed = requests.get(sim.url + "/v1/organizations/api_keys?limit=100", timeout=10,
                              headers={"x-api-key": ADMIN_KEY}).json()["data"]
        assert "a\r\nb" in {k["name"] for k in listed}
        assert "=1" in {w.name for w in sim.org.workspaces}
        for body in ({"api_keys": {"nosuch": "x"}}, {"api_keys": {"search-rag": 5}},
                     {"keys": {}}):
            answer = requests.post(url, json=body, timeout=10)
            assert answer.status_code == 400, body
        assert "a\r\nb" in {k.name for k in sim.org.api_keys}  # a refusal renames nothing
