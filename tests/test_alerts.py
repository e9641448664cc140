"""Alerts end to end on an injected clock: the simulated organization collected into DuckDB,
rules evaluated, notifications sent to a real local Slack stand-in and a real SMTP server."""

from __future__ import annotations

import logging
import getpass
import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from alerts import settings as alert_settings
from alerts.check import check
from alerts.outbox import send_test
from alerts.silences import add_silence
from alerts.model import FIRING, NO_DATA, OK
from collectors.sync import CollectOptions, collect
from conftest import (ADMIN_KEY, REPO, SIM_NOW, SLACK, Simulator, copy_warehouse, module_env,
                      write_config)
from fake_slack import Answer, FakeSlack
from fake_smtp import Mailbox
from spendwatch.warehouse.batch import Batch
from spendwatch import storage
from spendwatch.config import Config, load_config
from spendwatch.timeutil import local_range
from spendwatch.warehouse import figures as views
from warehouse import db_path, exists, query, stored_bytes

UTC = timezone.utc
WEBHOOK_TOKEN = "T0ACME/B0SPEND/xoxSecretWebhookToken42"
SMTP_PASSWORD = "smtp-Pa55word-that-must-never-show"
MINUTE = timedelta(minutes=1)


@pytest.fixture(scope="module")
def template(module_simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days of the simulated organization, collected at SIM_NOW once for the module."""
    home = tmp_path_factory.mktemp("alerts-template")
    with module_env(ANTHROPIC_ADMIN_KEY=ADMIN_KEY):
        path = write_config(home, [{"name": "acme", "base_url": module_simulator.url}],
                            collection="initial_backfill_days = 2")
        (result,) = collect(load_config(path), now=SIM_NOW, sleep=lambda s: None)
    assert result.ok, result.error
    return db_path(load_config(path))


@pytest.fixture
def warehouse(template: Path, isolated: Path, module_simulator: Simulator,
              monkeypatch: pytest.MonkeyPatch,
              fake_slack: FakeSlack) -> Iterator[dict[str, Any]]:
    """Two days of the simulated organization, collected at SIM_NOW: the test's own copy of
    the module's template, and the module's simulator for later collections (a fault a test
    injects is cleared after it)."""
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("SLACK_WEBHOOK", fake_slack.url(f"/services/{WEBHOOK_TOKEN}"))
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    write_config(isolated, [{"name": "acme", "base_url": module_simulator.url}],
                 collection="initial_backfill_days = 2")
    copy_warehouse(template, isolated)
    yield {"folder": isolated, "simulator": module_simulator, "slack": fake_slack}
    module_simulator.control("DELETE", "/_sim/faults")


def email_channel(port: int, ca_file: str) -> str:
    return f'''
[[alerts.channels]]
name = "finance-email"
kind = "email"
host = "127.0.0.1"
port = {port}
security = "starttls"
ca_file = "{ca_file}"
username = "alerts"
password_env = "SMTP_PASSWORD"
from = "spendwatch@acme.example"
to = ["finance@acme.example"]
timeout_seconds = 5
'''


def accept_login(server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
    good = (isinstance(auth_data, LoginPassword) and auth_data.login == b"alerts"
            and auth_data.password == SMTP_PASSWORD.encode())
    return AuthResult(success=True) if good else AuthResult(success=False, handled=False)


@pytest.fixture(autouse=True)
def no_secret_anywhere(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture):
    """After every test here: no secret in any log line or in the database file."""
    caplog.set_level(logging.DEBUG)
    yield
    folder = request.getfixturevalue("isolated")
    database = Path(folder) / "data" / "spendwatch.duckdb"
    stored = stored_bytes(database) if exists(database) else b""
    for secret in (WEBHOOK_TOKEN, "xoxSecretWebhookToken42", SMTP_PASSWORD, ADMIN_KEY):
        assert secret not in caplog.text
        assert secret.encode() not in stored


def rule(name: str, kind: str, channels: str = '"ops-slack"', **params: Any) -> str:
    lines = [f'[[alerts.rules]]\nname = "{name}"\nkind = "{kind}"\nchannels = [{channels}]']
    for key, value in params.items():
        key = "for" if key == "for_" else key
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def configure(w: dict[str, Any], *rules: str, channels: str = SLACK,
              timezone_name: str = "America/Chicago", interval_minutes: int = 5) -> Config:
    path = write_config(w["folder"], [{"name": "acme", "base_url": w["simulator"].url}],
                        extra=channels + "".join(rules), timezone_name=timezone_name,
                        collection=f"initial_backfill_days = 2\n"
                                   f"interval_minutes = {interval_minutes}")
    return load_config(path)


def today_spend(config: Config, now: datetime = SIM_NOW) -> Decimal:
    today = now.astimezone(config.tz).date()
    start, end = local_range(today, today, config.tz)
    with storage.reader(config) as conn:
        (total,) = conn.execute("SELECT sum(cost_usd) FROM spend_facts WHERE bucket_start >= ? "
                                "AND bucket_start < ?", [start, end]).fetchone()
    return Decimal(total)


def test_a_threshold_crossed_and_checked_ten_times_sends_one_message(warehouse) -> None:
    config = configure(warehouse)
    spent = today_spend(config)
    config = configure(warehouse, rule("daily", "daily_spend", threshold_usd=f'"{spent / 2:.2f}"'))
    for minute in range(10):
        check(config, SIM_NOW + minute * MINUTE)
    messages = warehouse["slack"].received
    assert len(messages) == 1
    assert "FIRING" in messages[0].json["text"] and "daily" in messages[0].json["text"]
    assert query(db_path(config), "SELECT count(*), count(firing_at) FROM "
                 "alert_episodes") == [(1, 1)]
    assert query(db_path(config), "SELECT status FROM alert_notifications") == [("sent",)]


def test_levels_50_80_100_give_three_messages_once_each(warehouse) -> None:
    config = configure(warehouse)
    spent = today_spend(config)
    config = configure(warehouse, rule("budget", "daily_spend", threshold_usd=f'"{spent * 9 / 10:.2f}"',
                                       levels="[0.5, 0.8, 1.0]"))
    check(config, SIM_NOW + MINUTE)
    check(config, SIM_NOW + 2 * MINUTE)
    texts = [m.json["text"] for m in warehouse["slack"].received]
    assert len(texts) == 3
    assert {t for t in texts if "50%" in t} and {t for t in texts if "80%" in t} and \
        {t for t in texts if "100%" in t}
    # one check opened three episodes and queued three notifications: an id each, and each
    # notification names its own episode
    episodes = query(db_path(config), "SELECT id, level FROM alert_episodes ORDER BY id")
    assert len({e for e, _ in episodes}) == len(episodes) == 3
    outbox = query(db_path(config), "SELECT n.id, e.level FROM alert_notifications n "
                                    "JOIN alert_episodes e ON e.id = n.episode_id ORDER BY n.id")
    assert len({n for n, _ in outbox}) == 3 and sorted(lv for _, lv in outbox) == sorted(
        lv for _, lv in episodes)


def test_only_the_levels_crossed_fire(warehouse) -> None:
    config = configure(warehouse)
    spent = today_spend(config)
    config = configure(warehouse, rule("budget", "daily_spend",
                                       threshold_usd=f'"{spent / Decimal("0.6"):.2f}"',
                                       levels="[0.5, 0.8, 1.0]"))
    report = check(config, SIM_NOW + MINUTE)
    assert [e.state for e in report.evaluations] == [FIRING, OK, OK]
    assert len(warehouse["slack"].received) == 1


def test_a_stale_collector_fires_data_stale_spend_rules_say_no_data_and_it_resolves_once(
        warehouse) -> None:
    config = configure(warehouse, rule("fresh", "data_stale", max_age='"2h"'),
                       rule("daily", "daily_spend", threshold_usd='"1"'))
    later = SIM_NOW + timedelta(hours=3)
    report = check(config, later)
    states = {e.rule: e.state for e in report.evaluations}
    assert states == {"fresh": FIRING, "daily": NO_DATA}
    texts = [m.json["text"] for m in warehouse["slack"].received]
    assert len(texts) == 1 and "fresh" in texts[0] and "FIRING" in texts[0]

    (result,) = collect(config, now=later, sleep=lambda s: None)  # the collector is back
    assert result.ok
    report = check(config, later + MINUTE)
    assert {e.rule: e.state for e in report.evaluations}["fresh"] == OK
    check(config, later + 2 * MINUTE)
    texts = [m.json["text"] for m in warehouse["slack"].received]
    resolved = [t for t in texts if "RESOLVED" in t]
    assert len(resolved) == 1 and "fresh" in resolved[0]
    # with data back, the spend rule judges again: its budget of $1 is long crossed
    assert [t for t in texts if "FIRING" in t and "daily" in t]


CHECK_IN_A_NEW_PROCESS = """
import sys
from datetime import datetime
from alerts.check import check
from spendwatch.config import load_config
report = check(load_config(sys.argv[1]), datetime.fromisoformat(sys.argv[2]))
print(len(report.deliveries))
"""


def test_a_restart_in_between_sends_nothing_twice(warehouse) -> None:
    config = configure(warehouse)
    spent = today_spend(config)
    config = configure(warehouse, rule("daily", "daily_spend", threshold_usd=f'"{spent / 2:.2f}"'))
    check(config, SIM_NOW + MINUTE)
    for minutes in (5, 6):  # two fresh processes: nothing in memory survives
        out = subprocess.run([sys.executable, "-c", CHECK_IN_A_NEW_PROCESS, str(config.path),
                              (SIM_NOW + minutes * MINUTE).isoformat()], cwd=REPO,
                             env=dict(os.environ), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "0"
    assert len(warehouse["slack"].received) == 1


def test_a_reminder_comes_at_the_repeat_interval_only(warehouse) -> None:
    config = configure(warehouse)
    spent = today_spend(config)
    config = configure(warehouse, rule("daily", "daily_spend", threshold_usd=f'"{spent / 2:.2f}"',
                                       repeat_interval='"1h"'),
                       interval_minutes=60)  # data stays fresh for 3 hours
    for minutes in (1, 30, 59, 61, 90):
        check(config, SIM_NOW + minutes * MINUTE)
    texts = [m.json["text"] for m in warehouse["slack"].received]
    assert len(texts) == 2 and "STILL FIRING" in texts[1]


def test_a_silenced_rule_sends_nothing_and_records_the_episode(warehouse) -> None:
    config = configure(warehouse)
    spent = today_spend(config)
    config = configure(warehouse, rule("daily", "daily_spend", threshold_usd=f'"{spent / 2:.2f}"'))
    add_silence(config, "daily", None, SIM_NOW + timedelta(hours=4), SIM_NOW, "known incident")
    check(config, SIM_NOW + MINUTE)
    check(config, SIM_NOW + 2 * MINUTE)
    assert warehouse["slack"].received == []
    assert query(db_path(config), "SELECT silenced, firing_at IS NOT NULL FROM "
                 "alert_episodes") == [(True, True)]
    assert query(db_path(config), "SELECT status FROM alert_notifications") == [
        ("silenced",)]


def test_a_pending_rule_waits_for_its_for_duration(warehouse) -> None:
    config = configure(warehouse)
    spent = today_spend(config)
    config = configure(warehouse, rule("daily", "daily_spend", threshold_usd=f'"{spent / 2:.2f}"',
                                       for_='"10m"'))
    check(config, SIM_NOW + MINUTE)
    check(config, SIM_NOW + 5 * MINUTE)
    assert warehouse["slack"].received == []
    check(config, SIM_NOW + 12 * MINUTE)
    assert len(warehouse["slack"].received) == 1
    assert [s for (s,) in query(db_path(config), "SELECT new_state FROM alert_transitions "
                                "ORDER BY changed_at")] == ["pending", "firing"]


def test_a_429_is_retried_after_its_delay(warehouse) -> None:
    config = configure(warehouse)
    spent = today_spend(config)
    config = configure(warehouse, rule("daily", "daily_spend", threshold_usd=f'"{spent / 2:.2f}"'))
    warehouse["slack"].script((429, "rate_limited", {"retry-after": "1"}), (200, "ok", {}))
    check(config, SIM_NOW + MINUTE)
    first, second = warehouse["slack"].received
    assert second.at - first.at >= 0.9
    assert query(db_path(config), "SELECT status FROM alert_notifications") == [("sent",)]


def test_a_404_marks_the_channel_broken_and_the_email_still_goes_out(
        warehouse, smtp_server, tls, caplog: pytest.LogCaptureFixture) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox, tls_context=tls.server_context, require_starttls=True,
                       authenticator=accept_login)
    config = configure(warehouse)
    spent = today_spend(config)
    config = configure(warehouse, rule("daily", "daily_spend", channels='"ops-slack", "finance-email"',
                                       threshold_usd=f'"{spent / 2:.2f}"'),
                       channels=SLACK + email_channel(port, tls.ca_file))
    warehouse["slack"].script((404, "no_service", {}))
    report = check(config, SIM_NOW + MINUTE)
    assert report.failed and report.broken_channels == {"ops-slack": "HTTP 404 no_service"}
    assert len(mailbox.inbox("finance@acme.example")) == 1
    assert dict(query(db_path(config), "SELECT channel, status FROM alert_notifications")) == {
        "ops-slack": "failed", "finance-email": "sent"}
    # the failure is visible, and a successful test message mends the channel
    assert send_test(config, "ops-slack", SIM_NOW + 2 * MINUTE).ok
    assert query(db_path(config), "SELECT count(*) FROM alert_channels") == [(0,)]
    (mail,) = mailbox.inbox("finance@acme.example")
    assert "daily" in str(mail["Subject"]) and mail.get_body(("html",)) is not None


@pytest.mark.parametrize("zone, start", [
    ("America/Los_Angeles", datetime(2026, 11, 24, 8, tzinfo=UTC)),  # 04:00 local at SIM_NOW
    ("Asia/Tokyo", datetime(2026, 11, 23, 15, tzinfo=UTC)),           # 21:00 local at SIM_NOW
])
def test_today_is_the_local_day_west_and_east_of_utc(warehouse, zone: str,
                                                     start: datetime) -> None:
    config = configure(warehouse, rule("daily", "daily_spend", threshold_usd='"1000000"'),
                       timezone_name=zone)
    (evaluation,) = check(config, SIM_NOW).evaluations
    truth = warehouse["simulator"].truth(start, SIM_NOW)
    assert evaluation.value == Decimal(truth["cost_usd"])
    assert evaluation.level == "2026-11-24 100%"


def test_monthly_budget_forecasts_from_the_days_so_far(warehouse) -> None:
    from spendwatch.warehouse.spend import spend
    config = configure(warehouse, rule("month", "monthly_budget", budget_usd='"10000"'))
    actual, forecast = check(config, SIM_NOW + MINUTE).evaluations
    assert actual.state == forecast.state == NO_DATA  # November is not stored from the 1st
    assert "spendwatch collect --since 2026-11-01" in actual.summary

    collect(config, CollectOptions(since=datetime(2026, 11, 1, 6, tzinfo=UTC)), now=SIM_NOW,
            sleep=lambda s: None)
    now = SIM_NOW + MINUTE
    actual, forecast = check(config, now).evaluations
    with storage.reader(config) as conn:
        days = spend(Batch(conn, config), datetime(2026, 11, 1).date(),
                     datetime(2026, 11, 24).date(), ["date"])
        overview = views.month_to_date(Batch(conn, config), now)
    month_to_date = sum(r["cost_usd"] for r in days)
    # the rate comes from the 23 complete days stored (November 1 to 23), weekday-aware;
    # the rest of today (Tuesday the 24th) and the six days left are added at it
    history = {r["date"]: r["cost_usd"] for r in days if r["date"] < date(2026, 11, 24)}
    assert len(history) == 23 == overview.history_days
    expected = views.month_end_forecast(month_to_date, history, now, config.tz)
    assert actual.value == month_to_date == overview.month_to_date_usd
    assert forecast.value == expected == overview.forecast_usd  # one answer, both surfaces
    rates = views.daily_rates(history)
    assert rates is not None and month_to_date + 6 * min(rates.values()) < expected < \
        month_to_date + 7 * max(rates.values())
    assert "the rate of the last 23 complete days" in forecast.summary
    assert (actual.state, forecast.state) == (OK, FIRING if expected >= 10000 else OK)


def test_cache_hit_ratio_fires_for_the_poorly_caching_feature_only(warehouse) -> None:
    features = '[[features]]\nname = "evals"\napi_key_names = ["eval-harness"]\n'
    config = configure(warehouse, features + rule("cache", "cache_hit_ratio", floor="0.3",
                                                  per='"feature"', min_input_tokens="1000"))
    report = check(config, SIM_NOW + MINUTE)
    firing = {e.scope["feature"] for e in report.evaluations if e.state == FIRING}
    assert firing and "evals" in firing and all(e.value is not None and e.value < Decimal("0.3")
                                                 for e in report.evaluations
                                                 if e.state == FIRING)
    too_little = configure(warehouse, features + rule("cache", "cache_hit_ratio", floor="0.3",
                                                      per='"feature"',
                                                      min_input_tokens="100000000000"))
    assert all(e.state == OK for e in check(too_little, SIM_NOW + 2 * MINUTE).evaluations)


def test_a_silence_of_one_scope_keeps_the_others_loud(warehouse) -> None:
    """A silence of one scope (feature=evals) covers that scope's episode and notification
    only; another scope of the same rule firing in the same check is still sent."""
    features = ('[[features]]\nname = "evals"\napi_key_names = ["eval-harness"]\n'
                '[[features]]\nname = "support"\napi_key_names = ["support-bot-*"]\n')
    config = configure(warehouse, features + rule("cache", "cache_hit_ratio", floor="0.99",
                                                  per='"feature"', min_input_tokens="1000"))
    add_silence(config, "cache", "feature=evals,organization=acme",
                SIM_NOW + timedelta(hours=4), SIM_NOW, "known")
    check(config, SIM_NOW + MINUTE)
    rows = dict(query(db_path(config), "SELECT e.scope_key, n.status = 'silenced' AND "
                                       "e.silenced FROM alert_episodes e JOIN "
                                       "alert_notifications n ON n.episode_id = e.id"))
    assert rows.pop("feature=evals,organization=acme") is True
    assert rows and not any(rows.values())  # the other features' alerts went out
    texts = [m.json["text"] for m in warehouse["slack"].received]
    assert texts and not any("evals" in t for t in texts)


def test_cost_drift_fires_when_the_price_table_is_off(warehouse) -> None:
    override = ('[[pricing.prices]]\nmodel = "claude-opus-5-5"\ncomponent = "output"\n'
                'price_usd = "40"\nunit = "per_mtok"\neffective_from = "2026-11-01"\n')
    config = configure(warehouse, override + rule("drift", "cost_drift",
                                                  threshold_percent='"5"'))
    collect(config, CollectOptions(), now=SIM_NOW + MINUTE, sleep=lambda s: None)  # reprice
    report = check(config, SIM_NOW + 2 * MINUTE)
    firing = {e.scope["model"] for e in report.evaluations if e.state == FIRING}
    assert firing == {"claude-opus-5-5"}
    assert all(e.value is not None for e in report.evaluations)


def test_alerts_cli_check_silence_and_errors(warehouse, tmp_path: Path) -> None:
    config = configure(warehouse, rule("daily", "daily_spend", threshold_usd='"1000000"'))
    env = {**os.environ}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "spendwatch", "--config", str(config.path),
                               *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)

    out = cli("alerts", "silence", "daily", "--for", "4h", "--comment", "deploy")
    assert out.returncode == 0 and out.stdout.startswith("silence 1: daily (every scope) until")
    out = cli("alerts", "silences")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("   1 active daily (every scope) until ")
    assert out.stdout.rstrip().endswith(f" by {getpass.getuser()} - deploy")  # who made it
    out = cli("alerts", "unsilence", "1")
    assert out.returncode == 0 and out.stdout == "silence 1 ended\n"
    assert cli("alerts", "silences").stdout.startswith("   1 ended  daily (every scope)")
    out = cli("alerts", "unsilence", "1")
    assert out.returncode == 1 and "no silence 1 in force" in out.stderr
    out = cli("alerts", "silence", "nightly", "--for", "4h")
    assert out.returncode == 2 and "no alert rule named 'nightly'" in out.stderr
    out = cli("alerts", "silence", "daily", "--for", "soon")
    assert out.returncode == 2 and "not a duration" in out.stderr
    out = cli("alerts", "test", "--channel", "ops-slack")
    assert out.returncode == 0 and out.stdout.strip() == "ops-slack: ok (HTTP 200 ok)"
    assert "TEST" in warehouse["slack"].received[-1].json["text"]
    out = cli("alerts", "check")
    assert out.returncode == 0, out.stderr
    assert "daily" in out.stdout


def test_a_bad_alert_config_is_one_line_naming_the_key(isolated: Path) -> None:
    path = write_config(isolated, [{"name": "acme"}], extra=SLACK + rule(
        "daily", "daily_spend", channels='"nowhere"', threshold_usd='"5"'))
    with pytest.raises(Exception, match=r"alerts.rules\[0\].channels names 'nowhere'"):
        load_config(path)
    path = write_config(isolated, [{"name": "acme"}], extra=SLACK + rule(
        "daily", "daily_spend", threshold_usd="5.5"))
    with pytest.raises(Exception, match="a TOML float is not exact"):
        alert_settings.load(path)  # a rule kind's params are alerts/' to check


@pytest.mark.parametrize("scope", ['{ feature = "evals" }', '{ model = "claude-opus-5-5" }',
                                   '{ api_key = "search-rag" }', '{ workspace = "Search" }',
                                   '{ organization = "acme" }'])
def test_daily_spend_scopes_match_the_spend_query(warehouse, scope: str) -> None:
    from spendwatch.warehouse.spend import spend
    features = '[[features]]\nname = "evals"\napi_key_names = ["eval-harness"]\n'
    config = configure(warehouse, features + rule("daily", "daily_spend", scope=scope,
                                                  threshold_usd='"1000000"'))
    (evaluation,) = check(config, SIM_NOW + MINUTE).evaluations
    (dimension, value), = evaluation.scope.items()
    today = SIM_NOW.astimezone(config.tz).date()
    with storage.reader(config) as conn:
        rows = spend(Batch(conn, config), today, today, [dimension])
    expected = sum(r["cost_usd"] for r in rows if r[dimension] == value)
    assert evaluation.value == expected > 0


def test_an_hourly_spike_is_judged_against_the_same_hour_of_the_last_week(warehouse) -> None:
    config = configure(warehouse, rule("spike", "spend_spike", mode='"hourly"',
                                       multiplier='"2"', min_usd='"0.01"'),
                       interval_minutes=60)
    collect(config, CollectOptions(since=SIM_NOW - timedelta(days=8)), now=SIM_NOW,
            sleep=lambda s: None)  # a week of history for the baseline
    (evaluation,) = check(config, SIM_NOW + MINUTE).evaluations
    hour = SIM_NOW - timedelta(hours=1)
    hourly = dict(query(db_path(config), "SELECT bucket_start, sum(cost_usd) FROM "
                        "spend_facts GROUP BY 1"))
    past = sorted(hourly.get(hour - timedelta(days=d), Decimal(0)) for d in range(1, 8))
    median = past[3]
    assert median > 0 and evaluation.value == hourly[hour]
    assert evaluation.threshold == max(median * 2, Decimal("0.01"))
    assert evaluation.state == (FIRING if evaluation.value >= evaluation.threshold else OK)


def test_data_stale_fires_when_the_api_keeps_failing(warehouse) -> None:
    config = configure(warehouse, rule("fresh", "data_stale", max_age='"2h"',
                                       max_failures="2"))
    warehouse["simulator"].fault(path="/v1/organizations/analytics/usage", count=1000,
                                 status=500, kind="error")
    for minutes in (5, 10):
        (result,) = collect(config, now=SIM_NOW + minutes * MINUTE, sleep=lambda s: None)
        assert not result.ok
    (evaluation,) = check(config, SIM_NOW + 11 * MINUTE).evaluations
    assert evaluation.state == FIRING and "the last 2 runs failed" in evaluation.summary


def test_two_checks_at_once_send_each_message_once(warehouse) -> None:
    """The worker and `alerts check` can run together: a notification is claimed once."""
    import threading
    config = configure(warehouse)
    spent = today_spend(config)
    config = configure(warehouse, rule("daily", "daily_spend", threshold_usd=f'"{spent / 2:.2f}"'))
    warehouse["slack"].script(Answer(200, "ok", delay=2.0))
    first = threading.Thread(target=check, args=(config, SIM_NOW + MINUTE))
    first.start()
    time.sleep(0.7)
    out = subprocess.run([sys.executable, "-c", CHECK_IN_A_NEW_PROCESS, str(config.path),
                          (SIM_NOW + 2 * MINUTE).isoformat()], cwd=REPO, env=dict(os.environ),
                         capture_output=True, text=True, timeout=120)
    first.join()
    assert out.returncode == 0, out.stderr
    assert len(warehouse["slack"].received) == 1


def test_a_test_run_without_the_secret_does_not_break_the_channel(
        warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    config = configure(warehouse)
    spent = today_spend(config)
    config = configure(warehouse, rule("daily", "daily_spend", threshold_usd=f'"{spent / 2:.2f}"'))
    webhook = os.environ["SLACK_WEBHOOK"]
    monkeypatch.delenv("SLACK_WEBHOOK")
    result = send_test(config, "ops-slack", SIM_NOW)
    assert not result.ok and "SLACK_WEBHOOK" in result.answer
    report = check(config, SIM_NOW + MINUTE)  # the worker's shell lacks it too: say so
    assert report.failed and "ops-slack" in report.config_errors
    monkeypatch.setenv("SLACK_WEBHOOK", webhook)
    report = check(config, SIM_NOW + 2 * MINUTE)  # the pending message goes out now
    assert not report.failed and len(warehouse["slack"].received) == 1


def test_a_worker_run_that_cannot_start_still_checks_alerts(warehouse, monkeypatch) -> None:
    from alerts.model import CheckReport
    from spendwatch.cli import worker
    config = configure(warehouse, rule("fresh", "data_stale", max_failures="1"))
    broken = load_config(config.path)
    broken = type(broken)(**{**broken.__dict__, "organizations": tuple(
        type(o)(**{**o.__dict__, "admin_key_env": "NO_SUCH_VARIABLE"})
        for o in broken.organizations)})
    checked: list[datetime] = []
    monkeypatch.setattr(worker, "check", lambda c, now: checked.append(now) or CheckReport())
    worker.worker_round(broken)
    assert query(db_path(config), "SELECT status, error LIKE '%NO_SUCH_VARIABLE%' FROM "
                 "collection_runs ORDER BY started_at DESC LIMIT 1") == [("failed", True)]
    assert len(checked) == 1


def test_a_silence_scope_must_look_like_what_check_shows(warehouse) -> None:
    from spendwatch.errors import ConfigError
    config = configure(warehouse, rule("daily", "daily_spend", threshold_usd='"1000000"'))
    with pytest.raises(ConfigError, match="is not a scope key"):
        add_silence(config, "daily", "organization acme", SIM_NOW + MINUTE, SIM_NOW)
    assert add_silence(config, "daily", "organization=acme", SIM_NOW + MINUTE, SIM_NOW) > 0


def test_a_firing_cache_alert_says_no_data_when_collection_stops(warehouse) -> None:
    features = '[[features]]\nname = "evals"\napi_key_names = ["eval-harness"]\n'
    config = configure(warehouse, features + rule("cache", "cache_hit_ratio", floor="0.3",
                                                  per='"feature"', min_input_tokens="1000"))
    check(config, SIM_NOW + MINUTE)
    report = check(config, SIM_NOW + timedelta(days=2))  # nothing collected since
    evals = [e for e in report.evaluations if e.scope.get("feature") == "evals"]
    assert [e.state for e in evals] == [NO_DATA]
    assert query(db_path(config), "SELECT count(*) FROM alert_episodes WHERE "
                 "end_reason = 'expired'") == [(0,)]
