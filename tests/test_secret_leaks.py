"""No secret leaves its place: collect, alerts check and a weekly report, run with DEBUG
logging everywhere (``-vvv``: spendwatch, httpx, urllib3, the SDK; ``ANTHROPIC_LOG=debug``),
leave the admin key, the webhook URL's path and the SMTP password out of every log line,
every DuckDB row, the CSV and every message Slack and the mail server receive."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from conftest import ADMIN_KEY, write_config
from warehouse import open_warehouse
from fake_slack import FakeSlack
from fake_smtp import Mailbox

WEBHOOK_PATH = "/services/T0LEAKCHK/B0LEAKCHK/leakWebhookToken99"
SMTP_USER = "alerts"
SMTP_PASSWORD = "smtp-LeakCheck-Pa55word-7"


def accept_login(server: object, session: object, envelope: object, mechanism: str,
                 auth_data: object) -> AuthResult:
    good = (isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode()
            and auth_data.password == SMTP_PASSWORD.encode())
    return AuthResult(success=True) if good else AuthResult(success=False, handled=False)


def noon_zone() -> str:
    """A zone where it is about noon now. The rule fires on today's spend, on the real clock,
    and the first hour of a UTC day has none yet (its usage is reported after the hour):
    there, today already holds twelve hours whatever the clock says."""
    offset = 12 - datetime.now(timezone.utc).hour  # -11..12 hours east of UTC
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-3 is UTC+3


def secrets() -> list[str]:
    plain = base64.b64encode(f"\0{SMTP_USER}\0{SMTP_PASSWORD}".encode()).decode()
    return [ADMIN_KEY, ADMIN_KEY.removeprefix("sk-ant-"), WEBHOOK_PATH,
            "leakWebhookToken99", SMTP_PASSWORD, plain,
            base64.b64encode(SMTP_PASSWORD.encode()).decode()]


def assert_no_secret(where: str, text: str) -> None:
    for secret in secrets():
        assert secret not in text, f"a secret ({secret[:6]}...) in {where}"


@pytest.fixture
def installation(isolated: Path, simulators, fake_slack: FakeSlack, smtp_server, tls) -> dict:
    simulator = simulators(now=None)  # the real clock: today's spend fires the rule
    mailbox = Mailbox()
    port = smtp_server(mailbox, tls_context=tls.server_context, require_starttls=True,
                       authenticator=accept_login)
    extra = f'''
[[alerts.channels]]
name = "ops-slack"
kind = "slack"
webhook_url_env = "SLACK_WEBHOOK"
min_interval_seconds = 0

[[alerts.channels]]
name = "finance-email"
kind = "email"
host = "127.0.0.1"
port = {port}
security = "starttls"
ca_file = "{tls.ca_file}"
username = "{SMTP_USER}"
password_env = "SMTP_PASSWORD"
from = "spendwatch@acme.example"
to = ["finance@acme.example"]
timeout_seconds = 5

[[alerts.rules]]
name = "daily"
kind = "daily_spend"
channels = ["ops-slack", "finance-email"]
threshold_usd = "0.01"
'''
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}], extra=extra,
                        timezone_name=(zone := noon_zone()),
                        collection="initial_backfill_days = 1")
    path.chmod(0o600)
    return {"folder": isolated, "mailbox": mailbox, "today": datetime.now(ZoneInfo(zone)).date()}


def spendwatch(folder: Path, webhook: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SPENDWATCH_"))}
    env.update({"ANTHROPIC_ADMIN_KEY": ADMIN_KEY, "SLACK_WEBHOOK": webhook,
                "SMTP_PASSWORD": SMTP_PASSWORD, "ANTHROPIC_LOG": "debug"})
    return subprocess.run([sys.executable, "-m", "spendwatch", "-vvv", *args], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=300)


def test_debug_logs_rows_csv_and_messages_hold_no_secret(installation: dict,
                                                         fake_slack: FakeSlack) -> None:
    folder, mailbox = installation["folder"], installation["mailbox"]
    webhook = fake_slack.url(WEBHOOK_PATH)
    today = installation["today"]
    week = (today - timedelta(days=7)).strftime("%G-W%V")
    runs = [spendwatch(folder, webhook, "collect", "--since", str(today - timedelta(days=1))),
            spendwatch(folder, webhook, "alerts", "check"),
            spendwatch(folder, webhook, "alerts", "test"),
            spendwatch(folder, webhook, "report", "weekly", "--week", week, "--out", "w.csv")]
    for result in runs:
        assert result.returncode == 0, (result.args, result.stderr[-2000:])
        assert_no_secret(f"the output of {result.args[3:]}", result.stdout + result.stderr)
    logs = "".join(r.stderr for r in runs)
    # the test means something: every library logged at DEBUG, requests with their URLs
    for logger in (" DEBUG anthropic", " DEBUG httpcore", " DEBUG urllib3", " INFO spendwatch"):
        assert logger in logs, logger

    assert len(fake_slack.received) >= 2 and len(mailbox.delivered) >= 2  # alert + test
    for received in fake_slack.received:
        assert_no_secret("a Slack message", received.raw.decode())
    for delivered in mailbox.delivered:
        assert_no_secret("an email", delivered.message.as_string())
    assert_no_secret("the CSV", (folder / "w.csv").read_text())

    with open_warehouse(folder / "data" / "spendwatch.duckdb") as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = "
            "current_database() AND table_schema = current_schema()").fetchall()]
        assert "alert_notifications" in tables and "collection_runs" in tables
        for table in tables:
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            assert_no_secret(f"table {table}", repr(rows))


def test_a_resolved_secret_is_taken_out_of_any_log_record(isolated: Path) -> None:
    import logging

    from spendwatch.secrets import RedactingFilter, resolve_secret

    webhook = f"https://hooks.slack.com{WEBHOOK_PATH}"
    resolve_secret("test", "webhook URL", "a URL", env="HOOK", environ={"HOOK": webhook}.get)
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    try:
        log.warning("POST %s", webhook)
        log.warning('"POST %s HTTP/1.1" 200', WEBHOOK_PATH)  # urllib3 logs the path alone
        try:
            raise RuntimeError(f"failed: {webhook}")
        except RuntimeError:
            log.exception("boom")
    finally:
        log.removeHandler(handler)
    assert records[0] == "POST [redacted]" and records[1] == '"POST [redacted] HTTP/1.1" 200'
    assert "RuntimeError: failed: [redacted]" in records[2]
    for record in records:
        assert_no_secret("a log record", record)
