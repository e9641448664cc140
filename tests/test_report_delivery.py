"""The weekly report on schedule: written by the worker's step, sent once by email (the CSV
attached) and to Slack (the summary), through the alerts' outbox and retry rules.

One simulator and one collection (America/Chicago, local days 2026-11-08..2026-11-23: the
weeks 2026-W46 and 2026-W47 whole) serve the module; each test works on its own copy of the
database. "Now" is the simulator's: Tuesday 2026-11-24 06:00 in Chicago, so W47's report is
due (Monday 07:00) and its cost is still settling (72 hours after Sunday midnight).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import SIM_NOW, Simulator, at_once, copy_warehouse, write_config
from warehouse import db_path, query, stored_bytes
from fake_slack import FakeSlack
from fake_smtp import Mailbox, TLSFiles
from test_alerts import SMTP_PASSWORD, accept_login, email_channel
from test_reports import CENT, read_rows, spendwatch
from test_reports import sim  # noqa: F401  (the module's simulator fixture)
from spendwatch.warehouse.batch import Batch
from spendwatch import facts, storage
from spendwatch.config import Config, load_config
from reports.runs import write_due_reports
from reports.schedule import due_week
from spendwatch.cli.worker import after_collection
from spendwatch.errors import ConfigError
from spendwatch.warehouse.figures import cache_hit_ratio, total_spend

W47 = (date(2026, 11, 16), date(2026, 11, 22))
W46 = (date(2026, 11, 9), date(2026, 11, 15))
WEBHOOK_PATH = "/services/T0REPORT/B0REPORT/s3cr3tW3bh00k"
FILE = "spendwatch-acme-2026-W47.csv"


@pytest.fixture(scope="module")
def collected(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A database holding 2026-W46 and 2026-W47 whole, in Chicago."""
    home = tmp_path_factory.mktemp("collected")
    write_config(home, [{"name": "acme", "base_url": sim.url}])
    result = spendwatch("collect", "--since", "2026-11-08", "--until", "2026-11-23", cwd=home)
    assert result.returncode == 0, result.stderr
    return home / "data" / "spendwatch.duckdb"


@pytest.fixture
def setup(collected: Path, isolated: Path, sim: Simulator,  # noqa: F811
          fake_slack: FakeSlack, smtp_server: Callable[..., int], tls: TLSFiles,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Config]]:
    """``make(mailbox, reports=..., extra=...)``: a config over a copy of the database, with
    a Slack and an email channel, both named in ``[reports] channels``."""
    copy_warehouse(collected, isolated)
    monkeypatch.setenv("SLACK_WEBHOOK", fake_slack.url(WEBHOOK_PATH))
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)

    def make(mailbox: Mailbox, reports: str = 'channels = ["ops-slack", "finance-email"]',
             extra: str = "") -> Config:
        port = smtp_server(mailbox, tls_context=tls.server_context, require_starttls=True,
                           authenticator=accept_login)
        channels = (f'[alerts]\ndashboard_url = "http://dash.example:8501/"\n'
                    f'[[alerts.channels]]\nname = "ops-slack"\nkind = "slack"\n'
                    f'webhook_url_env = "SLACK_WEBHOOK"\nmin_interval_seconds = 0\n'
                    + email_channel(port, tls.ca_file))
        path = write_config(isolated, [{"name": "acme", "base_url": sim.url}],
                            extra=f"{channels}\n[reports]\n{reports}\n{extra}")
        return load_config(path)
    yield make


def attachment(message: EmailMessage) -> tuple[str, bytes]:
    parts = [p for p in message.iter_attachments()]
    assert len(parts) == 1
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return str(parts[0].get_filename()), payload


def slack_text(received: Any) -> str:
    """Every text of a Block Kit message, in order."""
    texts = [received.json["text"]]
    for block in received.json["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        for element in block.get("elements", []):
            texts.append(element.get("url", ""))
    return "\n".join(texts)


def usd(value: Decimal) -> str:
    return f"${value.quantize(CENT):,}"


def outbox(config: Config) -> list[tuple[Any, ...]]:
    with storage.reader(config) as conn:
        return conn.execute("SELECT kind, channel, status, attempts FROM alert_notifications "
                            "ORDER BY channel").fetchall()


# --- when it is due --------------------------------------------------------------------------

@pytest.mark.parametrize("weekday, at, before, after", [
    ("monday", "07:00", datetime(2026, 11, 23, 12, 59, tzinfo=timezone.utc),
     datetime(2026, 11, 23, 13, 0, tzinfo=timezone.utc)),
    ("tuesday", "09:30", datetime(2026, 11, 24, 15, 29, tzinfo=timezone.utc),
     datetime(2026, 11, 24, 15, 30, tzinfo=timezone.utc)),
    ("sunday", "23:00", datetime(2026, 11, 30, 4, 59, tzinfo=timezone.utc),
     datetime(2026, 11, 30, 5, 0, tzinfo=timezone.utc)),
])
def test_the_week_is_due_on_the_configured_local_day_and_time(
        isolated: Path, weekday: str, at: str, before: datetime, after: datetime) -> None:
    path = write_config(isolated, [{"name": "acme"}],
                        extra=f'[reports]\nweekday = "{weekday}"\ntime = "{at}"\n')
    config = load_config(path)
    assert due_week(config, before) == "2026-W46"
    assert due_week(config, after) == "2026-W47"
    assert due_week(config, after + timedelta(days=6)) == "2026-W47"


@pytest.mark.parametrize("at, week", [
    # Chicago leaves daylight time on Sunday 1 Nov 2026: Monday 07:00 is 13:00 UTC, not 12:00.
    (datetime(2026, 11, 2, 12, 59, tzinfo=timezone.utc), "2026-W43"),
    (datetime(2026, 11, 2, 13, 0, tzinfo=timezone.utc), "2026-W44"),
    # and enters it on Sunday 8 Mar 2026: Monday 07:00 is 12:00 UTC.
    (datetime(2026, 3, 9, 11, 59, tzinfo=timezone.utc), "2026-W09"),
    (datetime(2026, 3, 9, 12, 0, tzinfo=timezone.utc), "2026-W10"),
    # 2026 has an ISO week 53 (Mon 28 Dec 2026 .. Sun 3 Jan 2027).
    (datetime(2027, 1, 4, 12, 59, tzinfo=timezone.utc), "2026-W52"),
    (datetime(2027, 1, 4, 13, 0, tzinfo=timezone.utc), "2026-W53"),
    (datetime(2027, 1, 11, 13, 0, tzinfo=timezone.utc), "2027-W01"),
])
def test_due_weeks_across_daylight_saving_and_week_53(isolated: Path, at: datetime,
                                                      week: str) -> None:
    config = load_config(write_config(isolated, [{"name": "acme"}]))
    assert due_week(config, at) == week


@pytest.mark.parametrize("section, message", [
    ('weekday = "mon"', "reports.weekday must be a day"),
    ('time = "7am"', "reports.time must be a local time"),
    ('time = "24:00"', "reports.time must be a local time"),
    ('channels = ["nowhere"]', "reports.channels names 'nowhere', which no"),
    ('folder = " "', "reports.folder is empty"),
    ('cron = "0 7 * * 1"', "unknown key 'reports.cron'"),
])
def test_a_bad_reports_section_is_one_line(isolated: Path, section: str, message: str) -> None:
    path = write_config(isolated, [{"name": "acme"}], extra=f"[reports]\n{section}\n")
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(path)
    assert "\n" not in str(raised.value)


# --- written and sent once -------------------------------------------------------------------

def test_the_report_is_written_and_sent_once_by_email_and_slack(
        setup: Callable[..., Config], fake_slack: FakeSlack, isolated: Path) -> None:
    mailbox = Mailbox()
    config = setup(mailbox)
    after_collection(config, SIM_NOW)
    after_collection(config, SIM_NOW + timedelta(minutes=5))  # the next collection
    after_collection(config, SIM_NOW + timedelta(days=1))

    # The file, in the reports folder, is the CLI's report of the organization's week.
    path = isolated / "reports" / FILE
    result = spendwatch("report", "weekly", "--week", "2026-W47", "--org", "acme",
                        "--out", str(isolated / "cli.csv"), cwd=isolated)
    assert result.returncode == 0, result.stderr
    assert path.read_bytes() == (isolated / "cli.csv").read_bytes()
    with storage.reader(config) as conn:
        total = total_spend(Batch(conn, config), *W47, ["acme"])
        previous = total_spend(Batch(conn, config), *W46, ["acme"])
        ratio = cache_hit_ratio(Batch(conn, config), *W47, ["acme"])
        runs = conn.execute("SELECT organization, week, rows, total_usd FROM report_runs"
                            ).fetchall()
    rows = read_rows(path)
    assert runs == [("acme", "2026-W47", len(rows), total)]
    assert sum(Decimal(r["cost_usd"]) for r in rows).quantize(CENT) == total.quantize(CENT)

    # One email, the CSV attached and parsed back into the same rows.
    assert len(mailbox.delivered) == 1
    message = mailbox.delivered[0].message
    assert mailbox.delivered[0].rcpt_tos == ["finance@acme.example"]
    assert message["Subject"] == f"[spendwatch] Weekly report 2026-W47: acme ({usd(total)})"
    name, data = attachment(message)
    assert name == FILE and data == path.read_bytes()
    assert list(csv.DictReader(io.StringIO(data.decode("utf-8")))) == rows
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert f"acme spent {usd(total)} in 2026-W47 (Mon 16 Nov - Sun 22 Nov 2026" in text
    assert f"on 2026-W46 ({usd(previous)})" in text
    assert f"{FILE} ({len(rows):,} rows), attached" in text

    # One Slack message: total, change, movers by feature and model, cache, savings, link.
    assert len(fake_slack.received) == 1
    assert fake_slack.received[0].path == WEBHOOK_PATH
    posted = slack_text(fake_slack.received[0])
    change = total - previous
    assert f"spent {usd(total)} in 2026-W47" in posted
    assert (f"{'up' if change > 0 else 'down'} {usd(abs(change))} "
            f"({change / previous * 100:+.1f}%) on 2026-W46 ({usd(previous)})") in posted
    assert "*Top movers by feature*" in posted and "*Top movers by model*" in posted
    assert ratio is not None and f"{ratio * 100:.1f}% of input tokens" in posted
    assert "*Savings*" in posted and "Prompt caching saved this week (estimated): $" in posted
    assert "*Still settling*" in posted  # Tuesday 06:00: the week's cost is not final yet
    assert "http://dash.example:8501/Reports" in posted
    assert "*This month*" not in posted  # November is stored from the 8th only: no figure

    # The delivery log: one notification per channel, sent at the first check.
    assert outbox(config) == [("report", "finance-email", "sent", 1),
                              ("report", "ops-slack", "sent", 1)]
    assert WEBHOOK_PATH.encode() not in stored_bytes(db_path(config))
    assert SMTP_PASSWORD.encode() not in stored_bytes(db_path(config))


def test_movers_are_the_biggest_changes_against_last_week(
        setup: Callable[..., Config], fake_slack: FakeSlack) -> None:
    config = setup(Mailbox(), reports='channels = ["ops-slack"]')
    after_collection(config, SIM_NOW)
    blocks = fake_slack.received[0].json["blocks"]
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    by_model = next(t for t in texts if t.startswith("*Top movers by model*"))
    lines = by_model.splitlines()[1:]
    assert 1 <= len(lines) <= 3
    from spendwatch.warehouse.figures import label_of, spend
    with storage.reader(config) as conn:
        now = {label_of(r, "model"): r["cost_usd"] for r in spend(
            Batch(conn, config), *W47, ["model"])}
        was = {label_of(r, "model"): r["cost_usd"] for r in spend(
            Batch(conn, config), *W46, ["model"])}
    changes = sorted(((now.get(m, Decimal(0)) - was.get(m, Decimal(0)), m)
                      for m in set(now) | set(was)), key=lambda c: (-abs(c[0]), c[1]))
    changes = [c for c in changes if c[0].copy_abs() >= Decimal("0.005")]
    assert len(lines) == min(3, len(changes))
    for line, (change, model) in zip(lines, changes):
        assert line.startswith(f"• {model}: {usd(now.get(model, Decimal(0)))}, ")
        assert f"{'up' if change > 0 else 'down'} {usd(abs(change))}" in line


def test_a_failing_smtp_server_is_retried_at_the_next_check_and_sends_once(
        setup: Callable[..., Config], fake_slack: FakeSlack, isolated: Path) -> None:
    # The server defers the recipient three times: the first check's three attempts fail.
    mailbox = Mailbox({"finance@acme.example": ["451 4.3.0 try again later"] * 3})
    config = setup(mailbox)
    after_collection(config, SIM_NOW)
    assert mailbox.delivered == [] and len(fake_slack.received) == 1
    assert outbox(config) == [("report", "finance-email", "pending", 1),
                              ("report", "ops-slack", "sent", 1)]
    path = isolated / "reports" / FILE
    written = path.read_bytes()
    path.unlink()  # cleaned away meanwhile: written again from the warehouse before sending

    after_collection(config, SIM_NOW + timedelta(minutes=5))
    after_collection(config, SIM_NOW + timedelta(minutes=10))
    assert len(mailbox.delivered) == 1 and len(fake_slack.received) == 1
    assert attachment(mailbox.delivered[0].message)[1] == written == path.read_bytes()
    assert outbox(config) == [("report", "finance-email", "sent", 2),
                              ("report", "ops-slack", "sent", 1)]
    with storage.reader(config) as conn:
        answers = conn.execute("SELECT ok, answer FROM alert_deliveries WHERE channel = "
                               "'finance-email' ORDER BY attempted_at, ok").fetchall()
    assert [ok for ok, _ in answers] == [False, False, False, True]
    assert all("451 4.3.0 try again later" in a for _, a in answers[:3])


def test_an_empty_week_says_so_in_one_line(setup: Callable[..., Config],
                                          fake_slack: FakeSlack) -> None:
    mailbox = Mailbox()
    config = setup(mailbox)
    with storage.writer(config) as conn:  # an organization that spent nothing
        for table in ("usage_hourly", "cost_buckets", "usage_estimates", "cost_allocated",
                      "usage_unbilled"):
            conn.execute(f"DELETE FROM {table}")
        facts.rebuild(conn)  # the stored facts follow the raw rows, as a window write keeps them
    after_collection(config, SIM_NOW)
    line = ("No spend recorded for acme in 2026-W47 (Mon 16 Nov - Sun 22 Nov 2026, "
            "America/Chicago).")
    assert len(fake_slack.received) == 1
    assert fake_slack.received[0].json["text"] == line
    assert [b["text"]["text"] for b in fake_slack.received[0].json["blocks"]] == [line]
    message = mailbox.delivered[0].message
    body = message.get_body(("plain",))
    assert body is not None and body.get_content().splitlines() == [line]
    assert message["Subject"].endswith("(no spend)")
    name, data = attachment(message)
    assert data.decode("utf-8").splitlines() == [data.decode("utf-8").splitlines()[0]]


def test_a_week_not_collected_to_its_end_waits_and_one_never_collected_is_skipped(
        setup: Callable[..., Config], fake_slack: FakeSlack, isolated: Path) -> None:
    config = setup(Mailbox())
    with storage.writer(config) as conn:
        saved = conn.execute("SELECT stream, covered_from, covered_until FROM sync_state"
                             ).fetchall()
        conn.execute("UPDATE sync_state SET covered_until = TIMESTAMPTZ '2026-11-22 12:00:00Z' "
                     "WHERE stream = 'cost'")
    runs = write_due_reports(config, SIM_NOW)
    assert [(r.action, r.week) for r in runs] == [("waiting", "2026-W47")]
    assert "cost is collected up to 2026-11-22 12:00 UTC" in runs[0].detail
    assert not (isolated / "reports").exists() and outbox(config) == []

    with storage.writer(config) as conn:
        conn.execute("UPDATE sync_state SET covered_from = TIMESTAMPTZ '2026-11-18 00:00:00Z', "
                     "covered_until = TIMESTAMPTZ '2026-11-24 06:00:00Z'")
    runs = write_due_reports(config, SIM_NOW)
    assert runs[0].action == "not collected" and "spendwatch report send --week 2026-W47" in \
        runs[0].detail
    assert not (isolated / "reports").exists() and fake_slack.received == []

    with storage.writer(config) as conn:
        for stream, start, end in saved:
            conn.execute("UPDATE sync_state SET covered_from = ?, covered_until = ? "
                         "WHERE stream = ?", [start, end, stream])
    after_collection(config, SIM_NOW)
    assert (isolated / "reports" / FILE).exists() and len(fake_slack.received) == 1


def test_the_file_is_written_again_once_the_collectors_read_past_the_settling_moment(
        setup: Callable[..., Config], fake_slack: FakeSlack, isolated: Path) -> None:
    config = setup(Mailbox(), reports='channels = ["ops-slack"]')
    after_collection(config, SIM_NOW)
    path = isolated / "reports" / FILE
    first = path.read_bytes()
    path.write_text("edited by hand\n")
    settles = datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc)  # Sunday's end + 72 h
    # The clock has passed it, but the collectors have not read that far (they are down).
    assert [r.action for r in write_due_reports(config, settles + timedelta(hours=5))] == []
    assert path.read_text() == "edited by hand\n"
    with storage.writer(config) as conn:
        conn.execute("UPDATE sync_state SET covered_until = ?", [settles])
    runs = write_due_reports(config, settles + timedelta(hours=5))
    assert [r.action for r in runs] == ["rewritten final"]
    assert path.read_bytes() == first  # nothing changed in the warehouse: the same bytes
    assert [r.action for r in write_due_reports(config, settles + timedelta(hours=6))] == []
    assert len(fake_slack.received) == 1  # written again, not sent again


def test_a_week_written_after_it_settled_says_nothing_of_settling(
        setup: Callable[..., Config], fake_slack: FakeSlack) -> None:
    config = setup(Mailbox(), reports='channels = ["ops-slack"]')
    settles = datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc)
    with storage.writer(config) as conn:
        conn.execute("UPDATE sync_state SET covered_until = ?", [settles])
    after_collection(config, settles)
    assert "Still settling" not in slack_text(fake_slack.received[0])
    assert "*Change*" in slack_text(fake_slack.received[0])
    assert write_due_reports(config, settles + timedelta(hours=1)) == []  # nothing to redo


def test_disabled_reports_are_not_written(setup: Callable[..., Config], isolated: Path,
                                          fake_slack: FakeSlack) -> None:
    config = setup(Mailbox(), reports="enabled = false")
    after_collection(config, SIM_NOW)
    assert not (isolated / "reports").exists() and fake_slack.received == []


def test_without_channels_the_file_is_still_written(setup: Callable[..., Config],
                                                   isolated: Path,
                                                   fake_slack: FakeSlack) -> None:
    config = setup(Mailbox(), reports='folder = "weekly"')
    after_collection(config, SIM_NOW)
    assert (isolated / "weekly" / FILE).exists()
    assert fake_slack.received == [] and outbox(config) == []


def test_the_running_worker_writes_and_sends_the_due_report(
        isolated: Path, simulators: Callable[..., Simulator], fake_slack: FakeSlack) -> None:
    """``spendwatch run`` on the real clock, the report due today at 00:00: after its first
    collection (16 days, so last week is whole) the file is written and Slack gets it once."""
    import os
    import signal
    import subprocess
    import sys
    from zoneinfo import ZoneInfo

    from conftest import ADMIN_KEY, REPO
    from spendwatch.config import WEEKDAYS
    from reports.weekly import last_complete_week
    from spendwatch.timeutil import utcnow
    from test_worker import wait_for

    simulator = simulators(now=None)
    today = utcnow().astimezone(ZoneInfo("America/Chicago"))
    extra = (f'[[alerts.channels]]\nname = "ops"\nkind = "slack"\n'
             f'webhook_url_env = "SLACK_WEBHOOK"\nmin_interval_seconds = 0\n'
             f'[reports]\nweekday = "{WEEKDAYS[today.weekday()]}"\ntime = "00:00"\n'
             f'channels = ["ops"]\n')
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}],
                        collection="initial_backfill_days = 16\ninterval_minutes = 60",
                        extra=extra)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SPENDWATCH_"))}
    env.update(ANTHROPIC_ADMIN_KEY=ADMIN_KEY, SLACK_WEBHOOK=fake_slack.url(WEBHOOK_PATH))
    worker = subprocess.Popen([sys.executable, "-m", "spendwatch", "--config", str(path), "run"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    week = last_complete_week(today, ZoneInfo("America/Chicago"))  # the same instant
    try:
        wait_for(lambda: len(fake_slack.received) == 1, seconds=240)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    assert (isolated / "reports" / f"spendwatch-acme-{week}.csv").exists(), stderr
    assert f"Weekly spend {week}: acme" in fake_slack.received[0].json["blocks"][0]["text"][
        "text"]
    assert f"weekly report {week} of acme written" in stderr
    assert WEBHOOK_PATH not in stderr


def test_report_send_does_the_workers_step_now_and_once(
        setup: Callable[..., Config], fake_slack: FakeSlack, isolated: Path) -> None:
    mailbox = Mailbox()
    setup(mailbox)
    first = spendwatch("report", "send", "--week", "2026-W47", cwd=isolated)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith(f"acme 2026-W47: written {isolated / 'reports' / FILE} ($")
    assert {line.split(":")[0] for line in lines[1:]} == {"sent to ops-slack",
                                                          "sent to finance-email"}
    again = spendwatch("report", "send", "--week", "2026-W47", "--org", "acme", cwd=isolated)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "acme 2026-W47: already written (sent once; not again)\n"
    assert len(mailbox.delivered) == 1 and len(fake_slack.received) == 1
    early = spendwatch("report", "send", "--week", "2026-W40", cwd=isolated)
    assert early.returncode == 1
    assert "acme 2026-W40: not collected (cost is stored from" in early.stdout or \
        "acme 2026-W40: not collected (usage is stored from" in early.stdout
    assert WEBHOOK_PATH not in first.stdout + first.stderr + again.stdout + early.stdout


def test_a_report_refused_for_good_fails_alone_and_never_breaks_the_channel(
        setup: Callable[..., Config], fake_slack: FakeSlack) -> None:
    """552 (too big) is about the message: the email channel keeps sending alerts."""
    from alerts.outbox import broken_channels, send_test
    mailbox = Mailbox({"finance@acme.example": ["552 5.3.4 message size exceeds limit"]})
    config = setup(mailbox, reports='channels = ["finance-email"]')
    after_collection(config, SIM_NOW)
    assert mailbox.delivered == []
    assert outbox(config) == [("report", "finance-email", "failed", 1)]
    assert broken_channels(config) == {}
    after_collection(config, SIM_NOW + timedelta(minutes=5))  # failed for good: not again
    assert outbox(config) == [("report", "finance-email", "failed", 1)]
    assert send_test(config, "finance-email", SIM_NOW).ok and len(mailbox.delivered) == 1


def test_one_organization_failing_never_stops_the_others_nor_the_alerts(
        setup: Callable[..., Config], fake_slack: FakeSlack, isolated: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    config = setup(Mailbox(), reports='channels = ["ops-slack"]')
    from dataclasses import replace
    from spendwatch.config import OrganizationConfig
    beta = replace(config.organizations[0], name="beta")
    assert isinstance(beta, OrganizationConfig)
    config = replace(config, organizations=(config.organizations[0], beta))
    (isolated / "reports" / FILE).mkdir(parents=True)  # acme's file cannot be written
    after_collection(config, SIM_NOW)
    assert f"weekly report 2026-W47 of acme not written: cannot write the report to " \
           f"{isolated / 'reports' / FILE}" in caplog.text
    assert fake_slack.received == [] and outbox(config) == []
    runs = write_due_reports(config, SIM_NOW)
    assert [(r.organization, r.action) for r in runs] == [("acme", "failed"),
                                                         ("beta", "waiting")]
    (isolated / "reports" / FILE).rmdir()
    after_collection(config, SIM_NOW + timedelta(minutes=5))
    assert (isolated / "reports" / FILE).is_file() and len(fake_slack.received) == 1


def test_weeks_the_worker_missed_are_caught_up_in_order(
        setup: Callable[..., Config], fake_slack: FakeSlack, isolated: Path) -> None:
    config = setup(Mailbox(), reports='channels = ["ops-slack"]')
    with storage.writer(config) as conn:  # W45 was the last one written
        conn.execute("INSERT INTO report_runs VALUES ('acme', '2026-W45', ?, 'x', 0, 0, '', "
                     "?, 0)", [SIM_NOW - timedelta(days=15), SIM_NOW - timedelta(days=15)])
    after_collection(config, SIM_NOW)
    headers = [r.json["blocks"][0]["text"]["text"] for r in fake_slack.received]
    assert headers == [":bar_chart: Weekly spend 2026-W46: acme",
                       ":bar_chart: Weekly spend 2026-W47: acme"]
    assert (isolated / "reports" / "spendwatch-acme-2026-W46.csv").exists()


def test_file_names_never_share_an_organization() -> None:
    from reports.weekly import file_label
    names = ["acme", "acme prod", "acme/prod", "研究", "開発", "..", "a_b", "a b", "Acme"]
    labels = [file_label(n) for n in names]
    assert len({label.lower() for label in labels}) == len(labels)
    assert labels[0] == "acme" and labels[6] == "a_b"
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", label) and not label.startswith(".")
               for label in labels)
    assert file_label(None) == "all"


def test_the_worker_refuses_to_start_when_the_reports_folder_cannot_be_written(
        isolated: Path, sim: Simulator) -> None:  # noqa: F811
    write_config(isolated, [{"name": "acme", "base_url": sim.url}],
                 extra='[reports]\nfolder = "config.toml/reports"\n')
    result = spendwatch("run", cwd=isolated)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "the reports folder" in result.stderr
    assert "cannot be written" in result.stderr and "Traceback" not in result.stderr


def test_slack_needs_no_file_and_email_waits_for_a_readable_one(
        setup: Callable[..., Config], fake_slack: FakeSlack, isolated: Path) -> None:
    from alerts.model import CheckReport
    from reports.runs import send_queued
    mailbox = Mailbox()
    config = setup(mailbox)
    (run,) = write_due_reports(config, SIM_NOW)
    assert run.action == "written" and run.path is not None
    written = run.path.read_bytes()
    run.path.unlink()
    run.path.mkdir()  # the file cannot be read: a directory stands in its place
    send_queued(config, SIM_NOW, CheckReport())
    assert len(fake_slack.received) == 1 and mailbox.delivered == []
    assert outbox(config) == [("report", "finance-email", "pending", 1),
                              ("report", "ops-slack", "sent", 1)]
    with storage.reader(config) as conn:
        (answer,) = conn.execute("SELECT last_answer FROM alert_notifications "
                                 "WHERE channel = 'finance-email'").fetchone()
    assert answer.startswith(f"not sent: the report file {run.path} cannot be read")
    run.path.rmdir()  # gone: written again from the warehouse before sending
    later = SIM_NOW + timedelta(minutes=5)
    send_queued(config, later, CheckReport())
    message = mailbox.delivered[0].message
    assert attachment(message)[1] == written
    assert message["Date"] == "Tue, 24 Nov 2026 12:05:00 +0000"  # when it went out


def test_report_send_leaves_pending_alerts_to_alerts_check(
        setup: Callable[..., Config], fake_slack: FakeSlack, isolated: Path) -> None:
    from alerts.machine import evaluate_and_record
    from alerts.model import CheckReport
    rule = ('[[alerts.rules]]\nname = "daily"\nkind = "daily_spend"\nchannels = ["ops-slack"]\n'
            'threshold_usd = "0.01"\n')
    config = setup(Mailbox(), reports='channels = ["ops-slack"]', extra=rule)
    evaluate_and_record(config, SIM_NOW, CheckReport())  # the alert waits in the outbox
    assert outbox(config) == [("firing", "ops-slack", "pending", 0)]
    result = spendwatch("--config", str(config.path), "report", "send", "--week", "2026-W47",
                        cwd=isolated)
    assert result.returncode == 0, result.stderr
    assert [r.json["blocks"][0]["text"]["text"] for r in fake_slack.received] == [
        ":bar_chart: Weekly spend 2026-W47: acme"]
    assert sorted(outbox(config)) == [("firing", "ops-slack", "pending", 0),
                                      ("report", "ops-slack", "sent", 1)]


def test_report_send_exits_1_when_a_report_cannot_be_written_and_again_resends(
        setup: Callable[..., Config], fake_slack: FakeSlack, isolated: Path) -> None:
    setup(Mailbox(), reports='channels = ["ops-slack"]')
    (isolated / "reports" / FILE).mkdir(parents=True)
    failed = spendwatch("report", "send", "--week", "2026-W47", cwd=isolated)
    assert failed.returncode == 1
    assert failed.stdout.startswith("acme 2026-W47: failed (cannot write the report to ")
    (isolated / "reports" / FILE).rmdir()
    assert spendwatch("report", "send", "--week", "2026-W47", cwd=isolated).returncode == 0
    same = spendwatch("report", "send", "--week", " 2026-w47 ".upper(), cwd=isolated)
    assert same.stdout.startswith("acme 2026-W47: already written")
    again = spendwatch("report", "send", "--week", "2026-W47", "--again", cwd=isolated)
    assert again.returncode == 0 and again.stdout.startswith("acme 2026-W47: written")
    assert len(fake_slack.received) == 2
    assert query(isolated / "data" / "spendwatch.duckdb", "SELECT week FROM report_runs") == [
        ("2026-W47",)]


def test_a_report_is_final_at_once_when_first_written_after_the_week_settled(
        setup: Callable[..., Config]) -> None:
    from reports.runs import write_report
    config = setup(Mailbox(), reports="channels = []")
    settles = datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc)
    with storage.writer(config) as conn:
        conn.execute("UPDATE sync_state SET covered_until = ? WHERE stream = 'usage'",
                     [settles])
    assert write_report(config, "acme", "2026-W47", settles).action == "written"
    with storage.writer(config) as conn:  # one stream is not enough
        assert conn.execute("SELECT final_at FROM report_runs").fetchall() == [(None,)]
        conn.execute("UPDATE sync_state SET covered_until = ?", [settles])
    assert write_report(config, "acme", "2026-W47", settles, again=True).action == "written"
    with storage.reader(config) as conn:
        assert conn.execute("SELECT week, final_at, final_total_usd = total_usd "
                            "FROM report_runs").fetchall() == [("2026-W47", settles, True)]


def test_the_settled_rewrite_shows_the_final_figures(setup: Callable[..., Config],
                                                     isolated: Path) -> None:
    from reports.history import report_runs
    config = setup(Mailbox(), reports="channels = []")
    after_collection(config, SIM_NOW)
    settles = datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc)
    with storage.writer(config) as conn:
        (sent_total,) = conn.execute("SELECT total_usd FROM report_runs").fetchone()
        # A late revision: Sunday's last billed hours go away, then both streams settle.
        conn.execute("DELETE FROM cost_buckets WHERE bucket_start >= "
                     "TIMESTAMPTZ '2026-11-23 00:00:00Z' AND bucket_start < "
                     "TIMESTAMPTZ '2026-11-23 06:00:00Z'")
        facts.rebuild(conn)  # the stored facts follow the raw rows, as a window write keeps them
        conn.execute("UPDATE sync_state SET covered_until = ? WHERE stream = 'cost'",
                     [settles])
    assert write_due_reports(config, settles) == []
    with storage.writer(config) as conn:
        conn.execute("UPDATE sync_state SET covered_until = ?", [settles])
    runs = write_due_reports(config, settles)
    assert [r.action for r in runs] == ["rewritten final"]
    rows = read_rows(isolated / "reports" / FILE)
    with storage.reader(config) as conn:
        (shown,) = report_runs(conn)
        total = total_spend(Batch(conn, config), *W47, ["acme"])
    assert total < sent_total
    assert (shown["total_usd"], shown["rows"]) == (total, len(rows))
    assert sum(Decimal(r["cost_usd"]) for r in rows).quantize(CENT) == total.quantize(CENT)


def test_catching_up_stops_four_weeks_back(setup: Callable[..., Config]) -> None:
    from reports.schedule import weeks_due
    config = setup(Mailbox(), reports="channels = []")
    long_ago = datetime(2026, 9, 1, tzinfo=timezone.utc)
    with storage.writer(config) as conn:
        conn.execute("INSERT INTO report_runs VALUES ('acme', '2026-W40', ?, 'x', 0, 0, '', "
                     "?, 0)", [long_ago, long_ago])
        assert weeks_due(conn, config, "acme", SIM_NOW) == [
            "2026-W44", "2026-W45", "2026-W46", "2026-W47"]
        assert weeks_due(conn, config, "beta", SIM_NOW) == ["2026-W47"]  # a first install


def test_a_report_slack_hook_that_is_gone_marks_the_channel_broken(
        setup: Callable[..., Config], fake_slack: FakeSlack) -> None:
    from alerts.outbox import broken_channels
    from fake_slack import Answer
    fake_slack.script(Answer(404, "no_service"))
    config = setup(Mailbox(), reports='channels = ["ops-slack"]')
    after_collection(config, SIM_NOW)
    assert broken_channels(config) == {"ops-slack": "HTTP 404 no_service"}


def test_a_big_csv_goes_zipped(tmp_path: Path) -> None:
    import zipfile
    from alerts.email import letter_message
    from alerts.outbox import with_attachment
    from reports.letter import letter
    from reports.summary import WeeklyReport
    data = b"date,cost_usd\r\n" + b"2026-11-16,1.000000\r\n" * 300_000  # 6.3 MB
    (tmp_path / FILE).write_bytes(data)
    report = WeeklyReport(organization="acme", week="2026-W47", since=W47[0], until=W47[1],
                          timezone="UTC", total_usd=Decimal(300000), rows=300_000,
                          csv_name=FILE, csv_path=str(tmp_path / FILE), at=SIM_NOW,
                          csv_size=len(data))
    message = letter_message(with_attachment(letter(report)), "spendwatch@acme.example",
                             ["finance@acme.example"])
    name, payload = attachment(message)
    assert name == f"{FILE}.zip" and len(payload) < len(data) / 10
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        assert archive.namelist() == [FILE] and archive.read(FILE) == data
    body = message.get_body(("plain",))
    assert body is not None and "(300,000 rows), attached, zipped" in body.get_content()


def test_the_summary_gives_the_month_to_date_and_the_overviews_forecast(
        sim: Simulator, isolated: Path) -> None:  # noqa: F811
    from reports.letter import plain_text
    from reports.summary import summarise
    from spendwatch.warehouse.figures import month_to_date
    # November's first two days, collected; the summary is made early on the 3rd (Chicago).
    home = isolated / "november"
    home.mkdir()
    path = write_config(home, [{"name": "acme", "base_url": sim.url}])
    result = spendwatch("collect", "--since", "2026-11-01", "--until", "2026-11-02", cwd=home)
    assert result.returncode == 0, result.stderr
    config = load_config(path)
    now = datetime(2026, 11, 3, 7, tzinfo=timezone.utc)  # 01:00 in Chicago
    with storage.reader(config) as conn:
        batch = Batch(conn, config)
        month = month_to_date(batch, now, ["acme"])
        report = summarise(batch, "acme", "2026-W47", [], isolated / FILE, now)
    assert month.complete and month.history_days == 2 and month.forecast_usd is not None
    assert (report.month_to_date_usd, report.forecast_usd) == (month.month_to_date_usd,
                                                               month.forecast_usd)
    text = plain_text(replace(report, rows=1), attached=True)
    assert (f"November to date: {usd(month.month_to_date_usd)}; month-end forecast "
            f"{usd(month.forecast_usd)}") in text


def test_without_a_reports_table_an_unwritable_folder_turns_reports_off(
        isolated: Path, caplog: pytest.LogCaptureFixture) -> None:
    from reports.runs import check_reports_folder
    (isolated / "reports").write_text("a file where the folder would be")
    config = load_config(write_config(isolated, [{"name": "acme"}]))
    assert config.reports.enabled and not config.reports.configured
    checked = check_reports_folder(config)
    assert not checked.reports.enabled
    assert "weekly reports are off" in caplog.text and "cannot be written" in caplog.text
    configured = load_config(write_config(isolated, [{"name": "acme"}],
                                          extra='[reports]\nweekday = "friday"\n'))
    with pytest.raises(ConfigError, match="the reports folder .* cannot be written"):
        check_reports_folder(configured)


def test_a_report_queued_by_the_earlier_version_is_still_sent_after_an_upgrade(
        setup: Callable[..., Config], fake_slack: FakeSlack, isolated: Path) -> None:
    # The version before letters stored the summary's fields; a report still pending when
    # spendwatch is upgraded must go out, not fail for good (its week is never queued again).
    mailbox = Mailbox()
    config = setup(mailbox)
    path = isolated / "reports" / FILE
    path.parent.mkdir()
    path.write_text("date,cost_usd\r\n2026-11-16,1.000000\r\n", encoding="utf-8")
    old = ('{"at": "2026-11-23T13:00:00+00:00", "cache_hit_ratio": "0.25", "csv_name": "' + FILE
           + '", "csv_path": "' + str(path) + '", "dashboard_url": "http://dash.example:8501/'
           'Reports", "movers": [["feature", "search", "80.5", "60.25"]], "organization": '
           '"acme", "previous_usd": "100.25", "provisional_until": null, "rows": 1, '
           '"savings": [["Prompt caching saved this week (estimated)", "12.5"]], "since": '
           '"2026-11-16", "timezone": "America/Chicago", "total_usd": "1234.5", "until": '
           '"2026-11-22", "week": "2026-W47"}')
    with storage.writer(config) as conn:
        conn.execute("INSERT INTO report_runs (organization, week, written_at, path, rows, "
                     "total_usd, channels) VALUES ('acme', '2026-W47', ?, ?, 1, 1234.5, "
                     "'ops-slack,finance-email')", [SIM_NOW, str(path)])
        for number, channel in enumerate(("ops-slack", "finance-email"), start=1):
            conn.execute("INSERT INTO alert_notifications (id, episode_id, kind, channel, "
                         "created_at, status, attempts, payload_json) VALUES (?, NULL, "
                         "'report', ?, ?, 'pending', 0, ?)", [number, channel, SIM_NOW, old])
    after_collection(config, SIM_NOW)
    assert outbox(config) == [("report", "finance-email", "sent", 1),
                              ("report", "ops-slack", "sent", 1)]
    assert "$1,234.50" in slack_text(fake_slack.received[0])
    (message,) = [m.message for m in mailbox.delivered]
    assert "2026-W47" in str(message["Subject"]) and "$1,234.50" in message.get_body(
        ("plain",)).get_content()
    assert attachment(message) == (FILE, path.read_bytes())


def test_two_writers_at_once_write_and_send_the_week_once(
        setup: Callable[..., Config], fake_slack: FakeSlack) -> None:
    from reports.runs import write_report

    config = setup(Mailbox(), reports='channels = ["ops-slack"]')
    results = at_once(lambda: write_report(config, "acme", "2026-W47", SIM_NOW).action)
    assert sorted(results) == ["already written", "written"]
    after_collection(config, SIM_NOW)
    assert len(fake_slack.received) == 1
    assert outbox(config) == [("report", "ops-slack", "sent", 1)]
