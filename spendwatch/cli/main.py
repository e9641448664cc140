"""The ``spendwatch`` command: a thin shell that parses, calls, and prints.

Every user-facing failure is a :class:`SpendwatchError` turned into one line on stderr and its
exit code (2 for config problems); no traceback reaches the user for a mistake of theirs.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Sequence

import click

from spendwatch.cli.progress import ProgressBar
from spendwatch.config import Config, load_config
from spendwatch.errors import SpendwatchError
from spendwatch.warehouse.spend import METRICS, SPEND_DIMENSIONS, money_str, spend, unpriced_usage
from spendwatch.timeutil import local_day_start, local_today, utcnow, DAY

log = logging.getLogger("spendwatch")


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpendwatchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx-style clients log full URLs at INFO; keep third-party chatter at WARNING.
    for noisy in ("httpx", "httpx2", "anthropic", "urllib3", "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _config(ctx: click.Context) -> Config:
    return load_config(ctx.obj["config_path"])


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD", param_hint=option)


@click.group(cls=_Group)
@click.option("--config", "config_path", metavar="PATH",
              help="Config file (default: $SPENDWATCH_CONFIG, else ./config.toml).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="spendwatch")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Watch what your organization spends on the Claude API."""
    _setup_logging(verbose)
    ctx.obj = {"config_path": config_path}


# --- collect ---------------------------------------------------------------------------------

@main.command()
@click.option("--since", metavar="DATE", help="First local day to collect (backfill).")
@click.option("--until", metavar="DATE", help="Last local day to collect (default: today).")
@click.option("--org", "orgs", multiple=True, metavar="NAME", help="Only this organization.")
@click.option("--refresh", is_flag=True,
              help="Fetch the whole range again, even days already stored as final.")
@click.pass_context
def collect(ctx: click.Context, since: str | None, until: str | None, orgs: Sequence[str],
            refresh: bool) -> None:
    """Pull usage and cost of every organization into the database.

    Interrupted backfills resume where they stopped: run the same command again.
    """
    from collectors.sync import CollectOptions, collect as run_collect

    config = _config(ctx)
    since_day, until_day = _day(since, "--since"), _day(until, "--until")
    if since_day and until_day and since_day > until_day:
        raise click.BadParameter("--since is after --until", param_hint="--since")
    options = CollectOptions(
        since=local_day_start(since_day, config.tz) if since_day else None,
        until=local_day_start(until_day + DAY, config.tz) if until_day else None,
        refresh=refresh, organizations=orgs)
    try:
        results = run_collect(config, options, progress_factory=ProgressBar)
    except KeyboardInterrupt:
        click.echo("interrupted: every window stored so far is kept; run the same command "
                   "again to resume", err=True)
        sys.exit(130)
    for result in results:
        if result.ok:
            click.echo(f"{result.organization}: {result.windows} windows, "
                       f"{result.usage_rows:,} usage rows, {result.cost_rows:,} cost rows")
        else:
            click.echo(f"error: {result.error}", err=True)
    if not all(r.ok for r in results):
        sys.exit(1)


# --- run -------------------------------------------------------------------------------------

@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the worker: collect on a schedule; after each collection write the weekly report
    when it is due and check alerts; until stopped (Ctrl-C or SIGTERM)."""
    from spendwatch.cli.worker import run as run_worker

    run_worker(_config(ctx))


# --- dashboard ------------------------------------------------------------------------------

@main.command()
@click.option("--port", type=int, help="Port (default: [dashboard] port, 8501).")
@click.pass_context
def dashboard(ctx: click.Context, port: int | None) -> None:
    """Serve the web dashboard on this machine (127.0.0.1 unless configured)."""
    from dataclasses import replace

    from spendwatch.cli.dashboard import run_dashboard, url

    config = _config(ctx)
    if port is not None:
        config = replace(config, dashboard=replace(config.dashboard, port=port))
    click.echo(f"spendwatch dashboard: {url(config)}", err=True)
    run_dashboard(config)


# --- spend -----------------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return money_str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(type(value).__name__)


@main.command("spend")
@click.option("--since", metavar="DATE", help="First local day (default: first of the month).")
@click.option("--until", metavar="DATE", help="Last local day, included (default: today).")
@click.option("--by", "by", default="", metavar="DIM,DIM",
              help="Group by any of: " + ", ".join(SPEND_DIMENSIONS) + ".")
@click.option("--org", "orgs", multiple=True, metavar="NAME", help="Only this organization.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (money as decimal strings).")
@click.pass_context
def spend_command(ctx: click.Context, since: str | None, until: str | None, by: str,
                  orgs: Sequence[str], as_json: bool) -> None:
    """What did we spend: cost and tokens from the warehouse."""
    from spendwatch import storage

    config = _config(ctx)
    dims = [d.strip() for d in by.split(",") if d.strip()]
    bad = [d for d in dims if d not in SPEND_DIMENSIONS]
    if bad:
        raise click.BadParameter(f"unknown dimension {bad[0]!r}; use any of "
                                 + ", ".join(SPEND_DIMENSIONS), param_hint="--by")
    today = local_today(utcnow(), config.tz)
    until_day = _day(until, "--until") or today
    since_day = _day(since, "--since") or until_day.replace(day=1)
    with storage.reader(config) as conn:
        rows = spend(conn, config.tz, since_day, until_day, dims, config.features, orgs)
        unpriced = unpriced_usage(conn, config.tz, since_day, until_day)
    if as_json:
        out = [{**{k: r[k] for k in _output_keys(dims)},
                **{m: r[m] for m in (*METRICS, "unpriced_tokens")}} for r in rows]
        click.echo(json.dumps(out, default=_json_default, indent=2))
        return
    _print_table(rows, dims, since_day, until_day)
    for item in unpriced:
        click.echo(f"Unpriced: {item['rows']:,} usage rows, {item['tokens']:,} tokens of "
                   f"{item['model']} ({item['reason']}): billed cost counts them once the cost "
                   "API reports them; add a price under [[pricing.prices]] to estimate them")


def _output_keys(dims: Sequence[str]) -> list[str]:
    keys = []
    for dim in dims:
        keys += {"workspace": ["workspace", "workspace_id"],
                 "api_key": ["api_key", "api_key_id"]}.get(dim, [dim])
    return keys


def _print_table(rows: list[dict[str, Any]], dims: Sequence[str], since: date,
                 until: date) -> None:
    headers = [*dims, "cost_usd", "input", "cache_write", "cache_read", "output"]
    lines = []
    for r in rows:
        lines.append([*(str(r[d]) if r[d] is not None else "-" for d in dims),
                      f"${r['cost_usd']:,.2f}", f"{r['uncached_input_tokens']:,}",
                      f"{r['cache_write_5m_tokens'] + r['cache_write_1h_tokens']:,}",
                      f"{r['cache_read_tokens']:,}", f"{r['output_tokens']:,}"])
    total = sum((r["cost_usd"] for r in rows), Decimal(0))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(headers)]
    click.echo(f"Spend {since} .. {until}")
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for line in lines:
        click.echo("  ".join(c.ljust(w) if i < len(dims) else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths))))
    click.echo(f"Total: ${total:,.2f}")


# --- reconcile ------------------------------------------------------------------------------

@main.command("reconcile")
@click.option("--since", metavar="DATE", help="First local day (default: 7 days ago).")
@click.option("--until", metavar="DATE", help="Last local day, included (default: today).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (money as decimal strings).")
@click.pass_context
def reconcile_command(ctx: click.Context, since: str | None, until: str | None,
                      as_json: bool) -> None:
    """Estimated (usage x price table) against billed, per day and model."""
    from spendwatch import storage
    from spendwatch.warehouse.reconcile import reconciliation

    config = _config(ctx)
    until_day = _day(until, "--until") or local_today(utcnow(), config.tz)
    since_day = _day(since, "--since") or until_day - 7 * DAY
    with storage.reader(config) as conn:
        rows = reconciliation(conn, config.tz, since_day, until_day)
    if as_json:
        click.echo(json.dumps([{"date": r.date, "organization": r.organization,
                                "model": r.model, "estimated_usd": r.estimated_usd,
                                "billed_usd": r.billed_usd, "difference_usd": r.difference_usd,
                                "difference_pct": r.difference_pct,
                                "unpriced_tokens": r.unpriced_tokens} for r in rows],
                              default=_json_default, indent=2))
        return
    click.echo(f"{'date':10}  {'organization':14}  {'model':28}  {'estimated':>12}  "
               f"{'billed':>12}  {'difference':>10}")
    for r in rows:
        pct = f"{r.difference_pct:+.2f}%" if r.difference_pct is not None else "n/a"
        click.echo(f"{r.date!s:10}  {r.organization:14}  {str(r.model or '-'):28}  "
                   f"${r.estimated_usd:>11,.2f}  ${r.billed_usd:>11,.2f}  {pct:>10}"
                   + (f"  unpriced: {r.unpriced_tokens:,} tokens" if r.unpriced_tokens else ""))


# --- savings --------------------------------------------------------------------------------

@main.command("savings")
@click.option("--since", metavar="DATE", help="First local day (default: 30 days ago).")
@click.option("--until", metavar="DATE", help="Last local day, included (default: yesterday).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (money as decimal strings).")
@click.pass_context
def savings_command(ctx: click.Context, since: str | None, until: str | None,
                    as_json: bool) -> None:
    """What caching and batch saved, cache waste, and what could still be saved."""
    from spendwatch import storage
    from spendwatch.savings import ledger

    config = _config(ctx)
    until_day = _day(until, "--until") or local_today(utcnow(), config.tz) - DAY
    since_day = _day(since, "--since") or until_day - 29 * DAY
    with storage.reader(config) as conn:
        book = ledger(conn, config, since_day, until_day)
    totals = book.totals
    if as_json:
        click.echo(json.dumps({
            "since": since_day, "until": until_day,
            "realized": {"baseline_usd": totals.baseline_usd, "actual_usd": totals.actual_usd,
                         "cache_savings_usd": totals.cache_savings_usd,
                         "batch_savings_usd": totals.batch_savings_usd,
                         "total_usd": totals.realized_total_usd},
            "cache_waste": {"tokens": totals.wasted_tokens, "usd": totals.waste_usd},
            "potential": [{"lever": p.lever, "organization": p.organization,
                           "feature": p.feature, "period_usd": p.period_usd,
                           "monthly_usd": p.monthly_usd, "change": p.change}
                          for p in book.potential],
            "unpriced_tokens": totals.unpriced_tokens}, default=_json_default, indent=2))
        return
    click.echo(f"Savings {since_day} .. {until_day} ({book.days} days)")
    click.echo(f"  without caching or batch you would have paid ${totals.baseline_usd:,.2f}; "
               f"you paid ${totals.actual_usd:,.2f} (estimated)")
    click.echo(f"  caching saved ${totals.cache_savings_usd:,.2f}, the Batch API saved "
               f"${totals.batch_savings_usd:,.2f}: ${totals.realized_total_usd:,.2f} in all")
    click.echo(f"  cache writes never read: {totals.wasted_tokens:,} tokens, "
               f"${totals.waste_usd:,.2f} of write premium")
    click.echo("Could still save:" if book.potential else "Could still save: nothing found")
    for item in book.potential:
        click.echo(f"  [{item.lever}] {item.change}")
    if totals.unpriced_tokens:
        click.echo(f"Unpriced: {totals.unpriced_tokens:,} tokens have no price and are left out")


# --- report ---------------------------------------------------------------------------------

@main.group()
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
    from pathlib import Path

    from spendwatch import storage
    from reports.weekly import (default_report_path, iso_week_range, last_complete_week,
                                    total_cost, week_name, weekly_rows, write_csv)

    config = _config(ctx)
    try:
        monday, sunday = iso_week_range(week or last_complete_week(utcnow(), config.tz))
        week = week_name(monday)
    except ValueError as exc:
        click.echo(f"error: --week: {exc}", err=True)
        sys.exit(2)
    if org is not None:
        config.organization(org)  # ConfigError (exit 2) for a name not in the config
    with storage.reader(config) as conn:
        rows = weekly_rows(conn, config, monday, sunday, org)
    path = write_csv(rows, Path(out) if out else default_report_path(config, org, week))
    click.echo(str(path))
    click.echo(f"Total: ${total_cost(rows):,.2f} ({week}, {monday} .. {sunday}, "
               f"{len(rows):,} rows)")


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
    from alerts.engine import CheckReport, deliver_pending
    from reports.schedule import guarded, due_week, write_report
    from reports.weekly import iso_week_range, week_name

    config = _config(ctx)
    now = utcnow()
    try:
        week = week_name(iso_week_range(week or due_week(config, now))[0])
    except ValueError as exc:
        click.echo(f"error: --week: {exc}", err=True)
        sys.exit(2)
    orgs = [config.organization(org).name] if org else [o.name for o in config.organizations]
    failed = False
    for name in orgs:
        run = guarded(name, week, lambda: write_report(config, name, week, now, again))
        assert run is not None
        where = f" {run.path}" if run.path else ""
        click.echo(f"{name} {week}: {run.action}{where} ({run.detail})")
        failed = failed or run.action in ("waiting", "not collected", "failed")
    sent = CheckReport()
    deliver_pending(config, now, sent, kind="report")  # alerts stay with `alerts check`
    for channel, title, result in sent.deliveries:
        click.echo(f"{'sent' if result.ok else 'NOT SENT'} to {channel}: {title} "
                   f"({result.answer})")
    if failed or any(not result.ok and result.permanent for _, _, result in sent.deliveries):
        sys.exit(1)


# --- alerts ---------------------------------------------------------------------------------

@main.group()
def alerts() -> None:
    """Evaluate alert rules, test channels, silence alerts."""


def _value(value: Decimal | None, unit: str) -> str:
    if value is None:
        return "no data"
    return {"usd": f"${value:,.2f}", "ratio": f"{value:.1%}", "percent": f"{value:+.2f}%",
            "hours": f"{value} h", "x": f"{value}x"}.get(unit, str(value))


@alerts.command("check")
@click.pass_context
def alerts_check(ctx: click.Context) -> None:
    """Evaluate every rule now and send what is due. Exits 1 when a channel is broken."""
    from alerts.engine import check

    config = _config(ctx)
    report = check(config, utcnow())
    for ev in report.evaluations:
        click.echo(f"{ev.state.upper().replace('_', ' '):8} {ev.rule} [{ev.scope_key}] "
                   f"{ev.level}: {ev.summary}")
    if not report.evaluations:
        click.echo("no alert rules configured ([[alerts.rules]] in the config)")
    for line in report.transitions:
        click.echo(f"changed: {line}")
    for channel, title, result in report.deliveries:
        click.echo(f"{'sent' if result.ok else 'NOT SENT'} to {channel}: {title} "
                   f"({result.answer})")
    for channel, reason in report.broken_channels.items():
        click.echo(f"error: channel {channel!r} is broken: {reason}; fix it, then run "
                   "`spendwatch alerts test`", err=True)
    for channel, error in report.config_errors.items():
        click.echo(f"error: channel {channel!r} cannot send: {error}", err=True)
    if report.failed:
        sys.exit(1)


@alerts.command("test")
@click.option("--channel", "names", multiple=True, metavar="NAME",
              help="Only this channel (default: every channel).")
@click.pass_context
def alerts_test(ctx: click.Context, names: Sequence[str]) -> None:
    """Send a clearly marked test message and show each channel's answer."""
    from alerts.engine import send_test

    config = _config(ctx)
    names = names or tuple(c.name for c in config.alerts.channels)
    if not names:
        raise click.ClickException("no channels configured ([[alerts.channels]] in the config)")
    failed = False
    for name in names:
        if config.alerts.channel(name) is None:
            raise click.BadParameter(f"no channel named {name!r}", param_hint="--channel")
        result = send_test(config, name, utcnow())
        click.echo(f"{name}: {'ok' if result.ok else 'FAILED'} ({result.answer})")
        failed = failed or not result.ok
    if failed:
        sys.exit(1)


@alerts.command("silence")
@click.argument("rule")
@click.option("--scope", "scope_key", metavar="KEY",
              help="Only this scope, as `alerts check` shows it in brackets, e.g. "
                   "organization=acme (default: every scope).")
@click.option("--for", "duration", required=True, metavar="DURATION",
              help="How long, e.g. 30m, 4h, 2d.")
@click.option("--comment", help="Why (shown with the silence).")
@click.pass_context
def alerts_silence(ctx: click.Context, rule: str, scope_key: str | None, duration: str,
                   comment: str | None) -> None:
    """Stop notifications of RULE for a while; its episodes are still recorded."""
    from alerts.engine import add_silence
    from spendwatch.config import parse_duration

    config = _config(ctx)
    now = utcnow()
    try:
        length = parse_duration(config.path, "--for", duration)
    except SpendwatchError:
        raise click.BadParameter(f"{duration!r} is not a duration; use e.g. 30m, 4h or 2d",
                                 param_hint="--for") from None
    silence_id = add_silence(config, rule, scope_key, now + length, now, comment)
    click.echo(f"silence {silence_id}: {rule} ({scope_key or 'every scope'}) until "
               f"{(now + length).astimezone(config.tz):%Y-%m-%d %H:%M %Z}")


@alerts.command("silences")
@click.pass_context
def alerts_silences(ctx: click.Context) -> None:
    """List the silences in force, and those that ended in the last day."""
    from spendwatch import storage
    from alerts.history import silences

    config = _config(ctx)
    now = utcnow()
    with storage.reader(config) as conn:
        rows = silences(conn, now)
    if not rows:
        click.echo("no silences (add one with `spendwatch alerts silence RULE --for 4h`)")
    for row in rows:
        state = "active" if row["active"] else "ended"
        until = row["expires_at"].astimezone(config.tz)
        comment = f" - {row['comment']}" if row["comment"] else ""
        click.echo(f"{row['id']:>4} {state:6} {row['rule']} ({row['scope_key'] or 'every scope'})"
                   f" until {until:%Y-%m-%d %H:%M %Z}{comment}")


@alerts.command("unsilence")
@click.argument("silence_id", type=int)
@click.pass_context
def alerts_unsilence(ctx: click.Context, silence_id: int) -> None:
    """End silence SILENCE_ID now (its number in `alerts silences`)."""
    from alerts.engine import expire_silence

    config = _config(ctx)
    if not expire_silence(config, silence_id, utcnow()):
        click.echo(f"error: no silence {silence_id} in force; `spendwatch alerts silences` "
                   "lists them", err=True)
        sys.exit(1)
    click.echo(f"silence {silence_id} ended")


# --- demo ------------------------------------------------------------------------------------

@main.command()
@click.option("--dir", "directory", default="spendwatch-demo", show_default=True,
              help="Folder for the demo's config and database.")
@click.option("--days", default=90, show_default=True, help="Days of history to backfill.")
@click.option("--seed", default=7, show_default=True, help="Seed of the simulated organization.")
@click.option("--port", default=8501, show_default=True, help="The dashboard's port.")
@click.option("--serve/--no-serve", default=True, show_default=True,
              help="Then run the worker and the dashboard until Ctrl-C.")
def demo(directory: str, days: int, seed: int, port: int, serve: bool) -> None:
    """Simulate an organization, collect it, print what it spent, check alerts, and serve
    the dashboard with the worker beside it."""
    from spendwatch.cli.demo import run_demo

    run_demo(directory, days, seed, serve, port)


@main.command()
@click.option("--port", default=8787, show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option("--admin-key", "admin_keys", multiple=True, default=["sk-ant-admin01-sim"],
              show_default=True, help="Admin key the simulator accepts (not a real key).")
def simulator(port: int, seed: int, admin_keys: Sequence[str]) -> None:
    """Serve the local simulator of the Anthropic usage and cost APIs."""
    from collectors.simulator.__main__ import serve_forever

    serve_forever(port=port, seed=seed, admin_keys=list(admin_keys), now=None)
