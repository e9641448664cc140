"""The daily digest (``[reports] daily = true``): yesterday's total, its change against the same
weekday a week earlier, the top movers and the firing alerts, sent each morning by email and to
Slack through the outbox, once per day and organization.

The module's database holds local days 2026-11-08..2026-11-23 in America/Chicago (the weekly
report's tests' collection); "now" is set per test, Monday 23 and Tuesday 24 November.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import at_once, write_config
from fake_slack import FakeSlack
from fake_smtp import Mailbox
from test_alerts import rule
from test_report_delivery import collected, setup, slack_text, usd  # noqa: F401  (fixtures)
from test_reports import sim  # noqa: F401  (the module's simulator fixture)
from test_reports import spendwatch
from reports.daily import due_day, queue_digest, write_due_digests
from reports.letter import change_text
from spendwatch import storage
from spendwatch.cli.worker import after_collection
from spendwatch.config import Config, load_config
from spendwatch.errors import ConfigError
from spendwatch.warehouse.batch import Batch
from spendwatch.warehouse.figures import total_spend

CHICAGO_TUESDAY_8AM = datetime(2026, 11, 24, 14, 0, tzinfo=timezone.utc)
MONDAY, WEEK_BEFORE = date(2026, 11, 23), date(2026, 11, 16)
DAILY = 'channels = ["ops-slack", "finance-email"]\ndaily = true'


def day_total(config: Config, day: date) -> Decimal:
    with storage.reader(config) as conn:
        return total_spend(Batch(conn, config), day, day, ["acme"])


def digests(mailbox: Mailbox) -> list[Any]:
    return [m.message for m in mailbox.delivered if "Daily digest" in m.message["Subject"]]


def slack_digests(fake_slack: FakeSlack) -> list[str]:
    return [t for t in (slack_text(r) for r in fake_slack.received) if "Daily spend" in t]


def digest_runs(config: Config) -> list[tuple[Any, ...]]:
    with storage.reader(config) as conn:
        return conn.execute("SELECT organization, day, total_usd, channels FROM digest_runs "
                            "ORDER BY day").fetchall()


def test_due_is_yesterday_from_the_report_time_on(isolated: Path) -> None:
    config = load_config(write_config(isolated, [{"name": "acme",
                                                  "base_url": "http://127.0.0.1:9"}]))
    assert config.reports.time == time(7, 0) and not config.reports.daily
    # 06:59 CST on Tuesday 24 November is 12:59 UTC: Sunday's digest is still the due one.
    assert due_day(config, datetime(2026, 11, 24, 12, 59, tzinfo=timezone.utc)) == \
        date(2026, 11, 22)
    assert due_day(config, datetime(2026, 11, 24, 13, 0, tzinfo=timezone.utc)) == MONDAY
    # The night the clocks go back (Sunday 1 November 2026, 02:00 CDT -> 01:00 CST): 07:00 CST
    # on the 1st is 13:00 UTC, 07:00 CDT the day before is 12:00 UTC.
    assert due_day(config, datetime(2026, 11, 1, 12, 59, tzinfo=timezone.utc)) == \
        date(2026, 10, 30)
    assert due_day(config, datetime(2026, 11, 1, 13, 0, tzinfo=timezone.utc)) == \
        date(2026, 10, 31)


def test_the_digest_of_yesterday_is_sent_once_by_email_and_slack(
        setup: Callable[..., Config], fake_slack: FakeSlack) -> None:  # noqa: F811
    mailbox = Mailbox()
    config = setup(mailbox, reports=DAILY)
    after_collection(config, CHICAGO_TUESDAY_8AM)
    after_collection(config, CHICAGO_TUESDAY_8AM + timedelta(minutes=5))  # the next rounds
    after_collection(config, CHICAGO_TUESDAY_8AM + timedelta(hours=6))

    total, before = day_total(config, MONDAY), day_total(config, WEEK_BEFORE)
    assert total > 0 and before > 0
    (message,) = digests(mailbox)
    assert message["Subject"] == f"[spendwatch] Daily digest Mon 23 Nov 2026: acme ({usd(total)})"
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content().replace("\r\n", "\n")
    assert f"acme spent {usd(total)} on Mon 23 Nov 2026 (America/Chicago)." in text
    assert f"{change_text(total, before)} on Mon 16 Nov 2026 ({usd(before)})" in text
    assert "Top movers by feature (against Mon 16 Nov 2026):" in text
    assert "Alerts firing:\n  None" in text
    assert "The day's cost may still change until 2026-11-27 00:00 CST" in text
    assert "Open in spendwatch: http://dash.example:8501/Spend?period=2026-11-23" \
           "&organization=acme" in text
    assert not list(message.iter_attachments())

    (posted,) = slack_digests(fake_slack)
    assert ":spiral_calendar_pad: Daily spend Mon 23 Nov 2026: acme" in posted
    assert f"spent {usd(total)} on Mon 23 Nov 2026" in posted
    assert "*Top movers by model (against Mon 16 Nov 2026)*" in posted
    assert "http://dash.example:8501/Spend?period=2026-11-23&organization=acme" in posted

    assert digest_runs(config) == [("acme", MONDAY, total, "ops-slack,finance-email")]
    with storage.reader(config) as conn:
        rules = {r for (r,) in conn.execute(
            "SELECT DISTINCT json_extract_string(payload_json, '$.labels.day') "
            "FROM alert_notifications WHERE kind = 'report' AND status = 'sent'").fetchall()}
    assert "2026-11-23" in rules


def test_the_movers_are_the_biggest_changes_against_the_same_weekday(
        setup: Callable[..., Config], fake_slack: FakeSlack) -> None:  # noqa: F811
    config = setup(Mailbox(), reports='channels = ["ops-slack"]\ndaily = true')
    after_collection(config, CHICAGO_TUESDAY_8AM)
    (posted,) = slack_digests(fake_slack)
    lines = posted.split("*Top movers by feature (against Mon 16 Nov 2026)*\n")[1]
    lines = lines.split("\n*")[0].splitlines()
    from spendwatch.warehouse.figures import label_of, spend
    with storage.reader(config) as conn:
        now = {label_of(r, "feature"): r["cost_usd"] for r in spend(
            Batch(conn, config), MONDAY, MONDAY, ["feature"])}
        was = {label_of(r, "feature"): r["cost_usd"] for r in spend(
            Batch(conn, config), WEEK_BEFORE, WEEK_BEFORE, ["feature"])}
    changes = sorted(((now.get(f, Decimal(0)) - was.get(f, Decimal(0)), f)
                      for f in set(now) | set(was)), key=lambda c: (-abs(c[0]), c[1]))
    changes = [c for c in changes if c[0].copy_abs() >= Decimal("0.005")]
    assert 1 <= len(lines) == min(3, len(changes))
    for line, (change, feature) in zip(lines, changes):
        assert line.startswith(f"• {feature}: {usd(now.get(feature, Decimal(0)))}, ")
        assert f"{'up' if change > 0 else 'down'} {usd(abs(change))}" in line


def test_the_digest_is_off_by_default(setup: Callable[..., Config],  # noqa: F811
                                      fake_slack: FakeSlack) -> None:
    mailbox = Mailbox()
    config = setup(mailbox)
    after_collection(config, CHICAGO_TUESDAY_8AM)
    assert digests(mailbox) == [] and slack_digests(fake_slack) == []
    assert digest_runs(config) == []
    assert len(mailbox.delivered) == 1  # the weekly report, due since Monday 07:00


def test_a_day_not_collected_to_its_end_waits_and_a_missed_day_is_not_sent_late(
        setup: Callable[..., Config], fake_slack: FakeSlack) -> None:  # noqa: F811
    mailbox = Mailbox()
    config = setup(mailbox, reports=DAILY)
    wednesday = CHICAGO_TUESDAY_8AM + timedelta(days=1)  # Tuesday's digest is due: not stored
    (run,) = write_due_digests(config, wednesday)
    assert (run.day, run.action) == (date(2026, 11, 24), "waiting")
    after_collection(config, wednesday)
    assert digests(mailbox) == [] and slack_digests(fake_slack) == []
    assert digest_runs(config) == []  # nor Monday's, a day late


def test_a_firing_alert_of_the_organization_is_in_the_digest(
        setup: Callable[..., Config], fake_slack: FakeSlack) -> None:  # noqa: F811
    # Monday 20:00 in Chicago: Monday's spend so far crosses $1 (the alert check comes first in
    # the round), and Sunday's digest is the due one.
    monday_night = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
    config = setup(Mailbox(), reports='channels = ["ops-slack"]\ndaily = true',
                   extra=rule("daily", "daily_spend", threshold_usd='"1"'))
    after_collection(config, monday_night)
    (posted,) = slack_digests(fake_slack)
    assert "Daily spend Sun 22 Nov 2026: acme" in posted
    alerts = posted.split("*Alerts firing*\n")[1].split("\n*")[0]
    assert "• daily: today's spend $" in alerts  # the rule's name, then its summary
    assert "reached 100% of the $1.00 daily budget" in alerts and "None" not in alerts
    assert any("FIRING" in slack_text(r) for r in fake_slack.received)  # the alert's own


def test_two_workers_at_once_queue_one_digest(setup: Callable[..., Config],  # noqa: F811
                                              fake_slack: FakeSlack) -> None:
    mailbox = Mailbox()
    config = setup(mailbox, reports=DAILY)
    results = at_once(lambda: queue_digest(config, "acme", MONDAY, CHICAGO_TUESDAY_8AM).action)
    assert sorted(results) == ["already sent", "queued"]
    after_collection(config, CHICAGO_TUESDAY_8AM)
    assert len(digests(mailbox)) == 1 and len(slack_digests(fake_slack)) == 1


def test_report_daily_prints_the_digest_of_a_day(setup: Callable[..., Config],  # noqa: F811
                                                 isolated: Path) -> None:
    config = setup(Mailbox(), reports=DAILY)
    result = spendwatch("report", "daily", "--day", "2026-11-23", cwd=isolated)
    assert result.returncode == 0, result.stderr
    total, before = day_total(config, MONDAY), day_total(config, WEEK_BEFORE)
    assert result.stdout.startswith(
        f"acme spent {usd(total)} on Mon 23 Nov 2026 (America/Chicago).\n")
    assert f"{change_text(total, before)} on Mon 16 Nov 2026 ({usd(before)})" in result.stdout
    assert digest_runs(config) == []  # printed, not sent
    bad = spendwatch("report", "daily", "--day", "23/11/2026", cwd=isolated)
    assert bad.returncode == 2 and "--day" in bad.stderr


def test_a_bad_daily_setting_is_one_line(setup: Callable[..., Config],  # noqa: F811
                                         isolated: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        setup(Mailbox(), reports='daily = "yes"')
    assert "daily" in str(raised.value) and "\n" not in str(raised.value)
