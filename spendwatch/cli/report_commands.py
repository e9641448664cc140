"""``spendwatch report``: the weekly CSV, written now (``weekly``) or sent as the worker would
(``send``), and the daily digest's words (``daily``)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click

from spendwatch.cli.shell import config_of, exit_failed, parse_day
from spendwatch.numbers import tokens, usd
from spendwatch.text import clean
from spendwatch.timeutil import utcnow
from spendwatch.warehouse.batch import read


def week_days(week: str) -> tuple[date, date]:
    """The Monday and Sunday of ISO week ``week`` (``2026-W47``). Raises BadParameter."""
    from reports.weekly import iso_week_range

    try:
        return iso_week_range(week)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--week") from None


@click.group()
def report() -> None:
    """Write spend reports as CSV files."""


@report.command("weekly")
@click.option("--week", metavar="YYYY-Www",
              help="ISO week, Monday to Sunday in the configured time zone (default: the "
                   "last complete week).")
@click.option("--org", "org", metavar="NAME", help="Only this organization (default: all).")
@click.option("--out", "out", metavar="PATH",
              help="CSV file (default: reports/spendwatch-<org or all>-<week>.csv beside the "
                   "config file).")
@click.pass_context
def report_weekly(ctx: click.Context, week: str | None, org: str | None,
                  out: str | None) -> None:
    """One week's spend per day, workspace, API key, feature, model and tier, as CSV."""
    from reports.runs import write_private  # owner-only, as the worker's files
    from reports.weekly import (default_report_path, last_complete_week, total_cost, week_name,
                                weekly_rows)

    config = config_of(ctx)
    monday, sunday = week_days(week or last_complete_week(utcnow(), config.tz))
    week = week_name(monday)
    if org is not None:
        config.organization(org)  # ConfigError (exit 2) for a name not in the config
    rows = read(config, weekly_rows, monday, sunday, org)
    path = write_private(rows, Path(out) if out else default_report_path(config, org, week))
    click.echo(str(path))
    click.echo(f"Total: {usd(total_cost(rows))} ({week}, {monday} .. {sunday}, "
               f"{tokens(len(rows))} rows)")


@report.command("send")
@click.option("--week", metavar="YYYY-Www",
              help="ISO week (default: the week whose report is due now, as the worker "
                   "would pick it).")
@click.option("--org", "org", metavar="NAME", help="Only this organization (default: all).")
@click.option("--again", is_flag=True,
              help="Write and send a week that was sent before once more (from the data as it "
                   "is now).")
@click.pass_context
def report_send(ctx: click.Context, week: str | None, org: str | None, again: bool) -> None:
    """Do the worker's weekly step now: write the week's report of each organization into
    the reports folder and send it to [reports] channels, once (a week already sent is not
    sent again without --again). Pending alerts are left to `alerts check`. Exits 1 when a
    report could not be written or its delivery failed for good."""
    from alerts.model import CheckReport
    from reports.runs import guarded, send_queued, write_report
    from reports.schedule import due_week
    from reports.weekly import week_name

    config = config_of(ctx)
    now = utcnow()
    week = week_name(week_days(week or due_week(config, now))[0])
    orgs = [config.organization(org).name] if org else [o.name for o in config.organizations]
    failed = False
    for name in orgs:
        run = guarded(name, week, lambda: write_report(config, name, week, now, again))
        assert run is not None
        where = f" {run.path}" if run.path else ""
        click.echo(clean(f"{name} {week}: {run.action}{where} ({run.detail})"))
        failed = failed or run.action in ("waiting", "not collected", "failed")
    sent = CheckReport()
    send_queued(config, now, sent)  # alerts stay with `alerts check`
    for channel, title, result in sent.deliveries:
        click.echo(clean(f"{'sent' if result.ok else 'NOT SENT'} to {channel}: {title} "
                         f"({result.answer})"))
    if failed or any(not result.ok and result.permanent for _, _, result in sent.deliveries):
        exit_failed()


@report.command("daily")
@click.option("--day", metavar="DATE",
              help="Local day (default: the day whose digest is due now, as the worker would "
                   "pick it).")
@click.option("--org", "org", metavar="NAME", help="Only this organization (default: all).")
@click.pass_context
def report_daily(ctx: click.Context, day: str | None, org: str | None) -> None:
    """Print the daily digest of a day, as its email's text, without sending it. The worker
    sends it each day at [reports] time when [reports] daily = true."""
    from reports.daily import digest, due_day, letter

    config = config_of(ctx)
    now = utcnow()
    told = parse_day(day, "--day") or due_day(config, now)
    orgs = [config.organization(org).name] if org else [o.name for o in config.organizations]
    for index, name in enumerate(orgs):
        words = read(config, digest, name, told, now)
        lines = letter(words).text.splitlines()
        click.echo("\n".join(([""] if index else []) + [clean(line) for line in lines]))
