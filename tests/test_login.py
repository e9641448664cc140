"""The dashboard's door: a real OpenID Connect login, the allow-list, exposure and environment.

A real provider (``oidc-provider-mock`` in its own process), the real dashboard
(``spendwatch dashboard`` in its own process, login configured) on a collected warehouse, and
headless Chromium (Debian's ``chromium``). Screenshots land in ``test-output/screenshots/``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from conftest import ADMIN_KEY, REPO, SIM_NOW_TEXT, module_env, start_simulator_process, \
    stop_simulator, write_config
from test_browser import CHROMIUM, SCREENSHOTS, free_port
from warehouse import query

SMTP_PASSWORD = "smtp-password-" + secrets.token_hex(8)
WEBHOOK = "https://hooks.slack.example/services/T000/B000/" + secrets.token_hex(12)
CLIENT_SECRET = "client-secret-" + secrets.token_hex(12)
COOKIE_SECRET = secrets.token_hex(32)
TEST_SECRETS = (ADMIN_KEY, SMTP_PASSWORD, WEBHOOK, CLIENT_SECRET, COOKIE_SECRET)
ALLOWED_ENV = {"PATH", "HOME", "LANG", "TZ", "SPENDWATCH_CONFIG", "SPENDWATCH_NOW"}
USERS = [{"sub": "ana", "email": "ana@example.com", "email_verified": True},
         {"sub": "bo", "email": "bo@corp.example", "email_verified": True},
         {"sub": "eve", "email": "eve@elsewhere.example", "email_verified": True},
         {"sub": "mallory", "email": "mallory@corp.example", "email_verified": False}]
FIGURES = '[data-testid="stMetricValue"], .vega-embed, [data-testid="stDataFrame"]'

CHANNELS = """
[alerts]
[[alerts.channels]]
name = "ops-slack"
kind = "slack"
webhook_url_env = "SW_TEST_WEBHOOK"

[[alerts.channels]]
name = "finance-email"
kind = "email"
host = "127.0.0.1"
port = 2525
security = "none"
username = "spendwatch"
password_env = "SW_TEST_SMTP_PASSWORD"
from = "spendwatch@example.com"
to = ["finance@example.com"]

[[alerts.rules]]
name = "daily budget"
kind = "daily_spend"
channels = ["ops-slack", "finance-email"]
threshold_usd = "500"
"""


def secret_env(**extra: str) -> dict[str, str]:
    """The environment a careless operator starts the dashboard with: every secret in it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SPENDWATCH_"))}
    return {**env, "ANTHROPIC_ADMIN_KEY": ADMIN_KEY, "SW_TEST_SMTP_PASSWORD": SMTP_PASSWORD,
            "SW_TEST_WEBHOOK": WEBHOOK, "STREAMLIT_SERVER_ENABLE_CORS": "false", **extra}


def spendwatch(*args: str, cwd: Path, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spendwatch", *args], cwd=cwd,
                          env=env or secret_env(), capture_output=True, text=True,
                          timeout=timeout)


def write_auth(folder: Path, dashboard_port: int, provider_port: int, **override: str) -> Path:
    auth = {"redirect_uri": f"http://127.0.0.1:{dashboard_port}/oauth2callback",
            "cookie_secret": COOKIE_SECRET, "client_id": "spendwatch-test",
            "client_secret": CLIENT_SECRET,
            "server_metadata_url": f"http://127.0.0.1:{provider_port}/.well-known/"
                                   "openid-configuration", **override}
    path = folder / "dashboard-auth.toml"
    path.write_text("[auth]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in auth.items()),
                    encoding="utf-8")
    path.chmod(0o600)
    return path


def login_block(auth_file: Path | str, host: str = "127.0.0.1", port: int = 8501) -> str:
    return (f'\n[dashboard]\nhost = "{host}"\nport = {port}\nauth_secrets_file = "{auth_file}"\n'
            'allowed_emails = ["Ana@Example.com"]\nallowed_domains = ["corp.example"]\n')


def private_config(folder: Path, extra: str) -> Path:
    path = write_config(folder, [{"name": "acme", "base_url": "http://127.0.0.1:9"}], extra)
    path.chmod(0o600)
    return path


def wait_until_up(url: str, process: subprocess.Popen, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{what} exited: {process.communicate()}"
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.3)
    raise AssertionError(f"{what} did not come up within {seconds} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """A real OpenID Connect provider with four users (see USERS)."""
    port = free_port()
    args = [sys.executable, "-m", "oidc_provider_mock", "--port", str(port)]
    for user in USERS:
        args += ["--user-claims", json.dumps(user)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/.well-known/openid-configuration", process, "the provider")
        yield url
    finally:
        stop(process)


class Dashboard:
    """The running dashboard: its URL, its process, its folder and database."""

    def __init__(self, url: str, process: subprocess.Popen, folder: Path) -> None:
        self.url, self.process, self.folder = url, process, folder
        self.database = folder / "data" / "spendwatch.duckdb"

    def silences(self) -> list[tuple]:
        return query(self.database, "SELECT rule, created_by, comment FROM alert_silences "
                                    "ORDER BY id")


@pytest.fixture(scope="module")
def dashboard(provider: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """`spendwatch dashboard` with the login configured, on three collected days, started with
    every test secret in its parent's environment."""
    folder = tmp_path_factory.mktemp("login")
    port = free_port()
    auth = write_auth(folder, port, int(provider.rsplit(":", 1)[1]))
    with module_env():
        sim = start_simulator_process()
        try:
            config = write_config(folder, [{"name": "acme", "base_url": sim.url}],
                                  CHANNELS + login_block(auth, port=port))
            config.chmod(0o600)
            collected = spendwatch("collect", "--since", "2026-11-21", "--until", "2026-11-24",
                                   cwd=folder, timeout=300)
            assert collected.returncode == 0, collected.stderr
        finally:
            stop_simulator(sim)
        process = subprocess.Popen(
            [sys.executable, "-m", "spendwatch", "dashboard"], cwd=folder,
            env=secret_env(SPENDWATCH_NOW=SIM_NOW_TEXT), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(url + "/_stcore/health", process, "the dashboard", 90)
            yield Dashboard(url, process, folder)
        finally:
            stop(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"login-{name}.png"), full_page=True)


def log_in(browser: Any, dashboard: Dashboard, sub: str) -> Any:
    """A fresh browser context that logs in as ``sub`` at the provider; returns its page."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(dashboard.url + "/", wait_until="networkidle")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/oauth2/authorize**", timeout=30_000)
    page.locator(f'button[name="sub"][value="{sub}"]').click()
    page.wait_for_url(dashboard.url + "/**", timeout=30_000)
    page.wait_for_load_state("networkidle")
    return page


def test_a_logged_out_visitor_sees_a_login_button_and_no_figure(browser: Any,
                                                                 dashboard: Dashboard) -> None:
    page = browser.new_context().new_page()
    # The dashboard's very first visitor, by a page's file name (Streamlit's old-style
    # multipage URL) and then by every page's URL.
    for path in ("alerts", "overview", "", "Spend", "Alerts", "Reports"):
        page.goto(f"{dashboard.url}/{path}", wait_until="networkidle")
        page.get_by_role("button", name="Log in").wait_for(timeout=60_000)
        page.wait_for_timeout(500)
        if path in ("alerts", ""):
            screenshot(page, f"logged-out{'-' + path if path else ''}")
        assert page.get_by_text("Page not found").count() == 0, path
        assert page.locator(FIGURES).count() == 0, path
        assert page.get_by_role("button", name="Silence").count() == 0
        assert "$" not in page.locator("body").inner_text(), path


def test_an_allowed_user_logs_in_and_sees_the_overview(browser: Any,
                                                       dashboard: Dashboard) -> None:
    page = log_in(browser, dashboard, "ana")
    page.wait_for_selector('[data-testid="stMetricValue"]', timeout=60_000)
    page.wait_for_selector(".vega-embed", timeout=60_000)
    page.wait_for_timeout(1500)
    screenshot(page, "allowed")
    values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    assert any(v.startswith("$") and v != "$0.00" for v in values), values
    assert "ana@example.com" in page.locator('[data-testid="stSidebar"]').inner_text()
    errors = page.locator('[data-testid="stException"], [data-testid="stError"]')
    assert errors.count() == 0


def test_a_domain_on_the_allow_list_lets_its_users_in(browser: Any,
                                                      dashboard: Dashboard) -> None:
    page = log_in(browser, dashboard, "bo")
    page.wait_for_selector('[data-testid="stMetricValue"]', timeout=60_000)


@pytest.mark.parametrize("sub", ["eve", "mallory"])  # not on the list; address not verified
def test_a_user_outside_the_list_sees_a_polite_refusal_and_nothing_else(
        browser: Any, dashboard: Dashboard, sub: str) -> None:
    page = log_in(browser, dashboard, sub)
    page.get_by_text("Sorry").wait_for(timeout=60_000)
    page.wait_for_timeout(1000)
    screenshot(page, f"refused-{sub}")
    assert page.locator(FIGURES).count() == 0
    assert page.get_by_role("button", name="Log out").count() == 1
    for path in ("Spend", "Alerts"):
        page.goto(f"{dashboard.url}/{path}", wait_until="networkidle")
        page.get_by_text("Sorry").wait_for(timeout=60_000)
        assert page.locator(FIGURES).count() == 0, path
        assert "$" not in page.locator("body").inner_text()


def test_started_by_hand_without_its_login_no_page_runs(browser: Any, dashboard: Dashboard,
                                                         tmp_path: Path) -> None:
    """`streamlit run app/main.py` by hand, without the secrets file, for a config that asks
    for a login: the first visitor, opening a page's own URL, sees how to start it, no figure."""
    port = free_port()
    env = {**secret_env(), "SPENDWATCH_CONFIG": str(dashboard.folder / "config.toml")}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "main.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless",
         "true", "--secrets.files", str(tmp_path / "none.toml")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/_stcore/health", process, "streamlit", 90)
        page = browser.new_context().new_page()
        for path in ("alerts", "Alerts", ""):
            page.goto(f"{url}/{path}", wait_until="networkidle")
            page.get_by_text("started without its login settings").wait_for(timeout=60_000)
            assert page.locator(FIGURES).count() == 0, path
            assert page.get_by_role("button", name="Silence").count() == 0, path
    finally:
        stop(process)


def test_a_silence_made_on_the_dashboard_records_who_made_it(browser: Any,
                                                             dashboard: Dashboard) -> None:
    page = log_in(browser, dashboard, "ana")
    page.goto(dashboard.url + "/Alerts", wait_until="networkidle")
    page.get_by_role("button", name="Silence").wait_for(timeout=60_000)
    before = len(dashboard.silences())
    page.get_by_label("Comment (why)").fill("deploy window")
    page.get_by_role("button", name="Silence").click()
    page.get_by_text("silenced until").first.wait_for(timeout=30_000)
    page.get_by_text("by ana@example.com").first.wait_for(timeout=30_000)
    screenshot(page, "silence-by-ana")
    rows = dashboard.silences()
    assert len(rows) == before + 1
    assert rows[-1] == ("daily budget", "ana@example.com", "deploy window")


def test_anonymous_posts_write_nothing(dashboard: Dashboard) -> None:
    before = dashboard.silences()
    attempts = {
        "/_stcore/upload_file/session/file": {"files": {"file": ("x.csv", b"a,b\n")}},
        "/_stcore/agent/interact": {"json": {"widgets": [{"key": "alerts_silence_create",
                                                           "value": True}]}},
        "/Alerts": {"data": {"alerts_silence_create": "true"}},
        "/oauth2callback": {"data": {"code": "forged", "state": "forged"}},
        "/auth/login": {"data": {"provider": "default"}},
    }
    for path, body in attempts.items():
        answer = requests.post(dashboard.url + path, timeout=10, **body)
        assert answer.status_code >= 400, (path, answer.status_code, answer.text[:200])
    assert dashboard.silences() == before


def websocket_opens(dashboard: Dashboard, host: str, origin: str) -> bool:
    """Whether the dashboard's WebSocket opens for a page at ``origin`` that reached it as
    ``host`` (a DNS-rebinding page: its own name, resolving to this machine)."""
    import socket

    from websockets.exceptions import InvalidHandshake
    from websockets.sync.client import connect

    port = dashboard.url.rsplit(":", 1)[1]
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    try:
        with connect(f"ws://{host}:{port}/_stcore/stream", sock=sock, origin=origin,
                     subprotocols=["streamlit"], open_timeout=10):
            return True
    except InvalidHandshake:
        return False
    finally:
        sock.close()


def test_another_origin_or_host_is_not_let_in(dashboard: Dashboard) -> None:
    evil = {"Origin": "http://evil.example"}
    answer = requests.get(dashboard.url + "/_stcore/health", headers=evil, timeout=10)
    assert answer.headers.get("Access-Control-Allow-Origin") not in ("*", "http://evil.example")
    assert websocket_opens(dashboard, "127.0.0.1", dashboard.url)      # the real page
    assert not websocket_opens(dashboard, "127.0.0.1", "http://evil.example")
    assert not websocket_opens(dashboard, "evil.example", "http://evil.example:" +
                               dashboard.url.rsplit(":", 1)[1])        # DNS rebinding


def test_the_dashboard_process_holds_no_secret(dashboard: Dashboard) -> None:
    environ = Path(f"/proc/{dashboard.process.pid}/environ").read_bytes().decode()
    names = {entry.split("=", 1)[0] for entry in environ.split("\0") if entry}
    assert names <= ALLOWED_ENV | {n for n in names if n.startswith("LC_")}, names
    for secret in TEST_SECRETS:
        assert secret not in environ
    assert Path(f"/proc/{dashboard.process.pid}/cmdline").read_bytes().count(b"--secrets.files")


def test_a_bind_beyond_this_machine_without_login_exits_2_with_one_line(tmp_path: Path) -> None:
    private_config(tmp_path, '\n[dashboard]\nhost = "0.0.0.0"\n')
    result = spendwatch("dashboard", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no login" in lines[0] and "127.0.0.1" in lines[0], lines
    assert "Traceback" not in result.stderr


def test_the_demo_refuses_an_exposed_dashboard_too(tmp_path: Path) -> None:
    from spendwatch.cli.dashboard import start_dashboard
    from spendwatch.config import load_config
    from spendwatch.errors import ConfigError

    config = load_config(private_config(tmp_path, '\n[dashboard]\nhost = "10.1.2.3"\n'))
    with pytest.raises(ConfigError, match="no login"):
        start_dashboard(config)


@pytest.mark.parametrize("case, expected", [
    ({"cookie_secret": "short"}, "cookie_secret is shorter"),
    ({"redirect_uri": "http://spend.example.com/oauth2callback"}, "must use https"),
    ({"redirect_uri": "https://spend.example.com/callback"}, "/oauth2callback"),
    ({"client_secret": ""}, "no client_secret"),
    ({"extra": "top"}, "besides [auth]"),
    ({"missing": "file"}, "does not exist"),
    ({"mode": "644"}, "chmod 600"),
])
def test_a_login_that_cannot_work_exits_2_with_one_line(tmp_path: Path, case: dict,
                                                        expected: str) -> None:
    auth = write_auth(tmp_path, 8501, 9400, **{k: v for k, v in case.items()
                                               if k not in ("extra", "missing", "mode")})
    if "extra" in case:
        auth.write_text('ADMIN = "x"\n' + auth.read_text())
    if "missing" in case:
        auth.unlink()
    if "mode" in case:
        auth.chmod(0o644)
    private_config(tmp_path, login_block(auth))
    result = spendwatch("dashboard", cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert COOKIE_SECRET not in result.stderr and CLIENT_SECRET not in result.stderr


@pytest.mark.parametrize("block, expected", [
    ('allowed_emails = ["ana@example.com"]', "need a login"),
    ('auth_secrets_file = "auth.toml"', "nobody may log in"),
    ('auth_secrets_file = "auth.toml"\nallowed_emails = ["not-an-address"]', "not an e-mail"),
    ('auth_secrets_file = "auth.toml"\nallowed_domains = ["exa mple.com"]', "not a domain"),
    ("port = 70000", "between 1 and 65535"),
])
def test_dashboard_settings_are_checked_at_load(tmp_path: Path, block: str, expected: str) -> None:
    private_config(tmp_path, f"\n[dashboard]\n{block}\n")
    result = spendwatch("dashboard", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_admits_matches_addresses_and_whole_domains_only() -> None:
    from spendwatch.config import DashboardConfig

    board = DashboardConfig(auth_secrets_file="/x.toml", allowed_emails=("ana@example.com",),
                            allowed_domains=("corp.example",))
    assert board.admits("ANA@example.com", True)
    assert board.admits("bo@corp.example", True)
    assert not board.admits("bo@corp.example", False)       # not verified
    assert not board.admits("bo@corp.example", "true")      # a string is not a verified claim
    assert not board.admits("bo@sub.corp.example", True)
    assert not board.admits("bo@evilcorp.example", True)
    assert not board.admits("corp.example", True)
    assert not board.admits("eve@evil.example@corp.example", True)
    assert not board.admits("eve @corp.example", True)
    assert not board.admits("", True) and not board.admits(None, True)


def test_the_cli_records_the_os_user_as_the_maker_of_a_silence(tmp_path: Path) -> None:
    from alerts.silences import os_user

    private_config(tmp_path, CHANNELS)
    result = spendwatch("alerts", "silence", "daily budget", "--for", "1h", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert query(tmp_path / "data" / "spendwatch.duckdb",
                 "SELECT created_by FROM alert_silences") == [(os_user(),)]


# --- the door in-process (Streamlit's AppTest, st.user seeded) ----------------------------------

@pytest.mark.parametrize("user, shown", [
    ({}, "started without its login settings"),                       # no [auth] reached Streamlit
    ({"is_logged_in": False}, "This dashboard is private"),
    ({"is_logged_in": True, "email": "eve@elsewhere.example", "email_verified": True},
     "may not see this dashboard"),
    ({"is_logged_in": True, "email": "bo@corp.example"}, "did not confirm"),  # no claim at all
    ({"is_logged_in": True, "email_verified": True}, "may not see this dashboard"),  # no email
])
@pytest.mark.parametrize("page", ["main.py", "pages/alerts.py", "pages/overview.py"])
def test_no_page_runs_for_a_visitor_the_door_refuses(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, user: dict,
                                                     shown: str, page: str) -> None:
    from streamlit.testing.v1 import AppTest

    config = private_config(tmp_path, login_block(tmp_path / "auth.toml"))
    monkeypatch.setenv("SPENDWATCH_CONFIG", str(config))
    at = AppTest.from_file(str(REPO / "app" / page), default_timeout=30)
    at.user = user
    at.run()
    assert not at.exception
    texts = [e.value for e in (*at.markdown, *at.warning, *at.error)]
    assert any(shown in t for t in texts), texts
    assert not at.metric and not at.get("vega_lite_chart") and not at.dataframe
    assert not [b for b in at.button if b.label == "Silence"]


def test_an_allowed_user_gets_past_the_door_in_process(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    config = private_config(tmp_path, login_block(tmp_path / "auth.toml"))
    monkeypatch.setenv("SPENDWATCH_CONFIG", str(config))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=30)
    at.user = {"is_logged_in": True, "email": "ANA@example.com", "email_verified": True}
    at.run()
    assert not at.exception
    assert "ana@example.com" in [t.value for t in at.sidebar.text]
    assert any("nothing has been collected yet" in i.value for i in at.info)  # the page ran
