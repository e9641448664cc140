"""The ``spendwatch`` command: the group, the warehouse's commands, and where the rest live.

Commands are a thin shell: they parse, call the rooms below, and print. A failure is raised
(``click.ClickException`` or ``SpendwatchError``) and :class:`~spendwatch.cli.shell.Shell` turns
it into one line and its exit code (2 for usage and config problems).

Here: ``collect``, ``spend``, ``reconcile``, ``savings``. Elsewhere in ``spendwatch/cli/``:
``report`` (report_commands.py), ``alerts`` (alert_commands.py), ``run``, ``dashboard``,
``demo``, ``simulator`` (serve_commands.py), ``doctor`` (doctor.py), ``storage migrate`` and
``export parquet`` (storage_commands.py); what they share is shell.py.
"""

from __future__ import annotations

import sys
from datetime import date
from decimal import Decimal
from typing import Any, Sequence

import click

from spendwatch.cli.alert_commands import alerts
from spendwatch.cli.doctor import doctor
from spendwatch.cli.progress import ProgressBar
from spendwatch.cli.report_commands import report
from spendwatch.cli.serve_commands import dashboard, demo, run, simulator
from spendwatch.cli.storage_commands import export_group, storage_group
from spendwatch.cli.shell import Shell, check_organizations, check_range, config_of, echo_json, \
    exit_failed, parse_day, setup_logging
from spendwatch.numbers import percent, tokens, usd
from spendwatch.text import clean  # names come from the API: never raw to a terminal
from spendwatch.warehouse.batch import read
from spendwatch.warehouse.spend import (METRICS, OVERLAPPING, SPEND_DIMENSIONS, check_dimensions,
                                        long_context_gap, spend, total, unpriced_usage)
from spendwatch.timeutil import local_day_start, local_today, utcnow, DAY


@click.group(cls=Shell)
@click.option("--config", "config_path", metavar="PATH",
              help="Config file (default: $SPENDWATCH_CONFIG, else ./config.toml).")
@click.option("-v", "--verbose", count=True,
              help="More log output (-vv for debug, -vvv with the HTTP libraries' too).")
@click.version_option(package_name="spendwatch")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Watch what your organization spends on the Claude API."""
    setup_logging(verbose)
    ctx.obj = {"config_path": config_path, "verbose": verbose}


for _command in (report, alerts, run, dashboard, demo, simulator, doctor, storage_group,
                 export_group):
    main.add_command(_command)


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

    config = config_of(ctx)
    check_organizations(config, orgs)
    since_day, until_day = parse_day(since, "--since"), parse_day(until, "--until")
    if since_day and until_day:
        check_range(since_day, until_day)
    options = CollectOptions(
        since=local_day_start(since_day, config.tz) if since_day else None,
        until=local_day_start(until_day + DAY, config.tz) if until_day else None,
        refresh=refresh, organizations=orgs)
    # Ctrl-C only sets the stop flag: the run ends at the next window boundary, and the
    # windows stored so far are whole. (A KeyboardInterrupt raised wherever Python happens to
    # be is lost when that is a __del__ or a weakref callback, "Exception ignored in ...", and
    # the run went on to the end and exited 0.) A second Ctrl-C stops at once.
    import signal
    import threading

    from spendwatch import storage

    options.stop = stop = threading.Event()

    def on_ctrl_c(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:  # not when started with Ctrl-C ignored
        signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        results = run_collect(config, options, progress_factory=ProgressBar)
    except BaseException as exc:  # the second Ctrl-C (DuckDB turns it into its own error)
        if not storage.is_interrupt(exc):
            raise
        stop.set()
    finally:
        if previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous)
    if stop.is_set():
        click.echo("interrupted: every window stored so far is kept; run the same command "
                   "again to resume", err=True)
        sys.exit(130)
    for result in results:
        if result.ok:
            click.echo(f"{result.organization}: {result.windows} windows, "
                       f"{tokens(result.usage_rows)} usage rows, "
                       f"{tokens(result.cost_rows)} cost rows")
        else:
            click.echo(clean(f"error: {result.error}"), err=True)
    if not all(r.ok for r in results):
        exit_failed()


# --- spend -----------------------------------------------------------------------------------

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
    config = config_of(ctx)
    dims = [d.strip() for d in by.split(",") if d.strip()]
    bad = [d for d in dims if d not in SPEND_DIMENSIONS]
    if bad:
        raise click.BadParameter(f"unknown dimension {bad[0]!r}; use any of "
                                 + ", ".join(SPEND_DIMENSIONS), param_hint="--by")
    try:
        check_dimensions(config, dims)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--by") from None
    today = local_today(utcnow(), config.tz)
    check_organizations(config, orgs)
    until_day = parse_day(until, "--until") or today
    since_day = parse_day(since, "--since") or until_day.replace(day=1)
    check_range(since_day, until_day)
    rows, unpriced, whole, gaps = read(config, lambda batch: (
        spend(batch, since_day, until_day, dims, organizations=orgs),
        unpriced_usage(batch, since_day, until_day),  # one batch: they agree
        total(batch, since_day, until_day, organizations=orgs)
        if any(d in OVERLAPPING for d in dims) else None,
        long_context_gap(batch, since_day, until_day, orgs)))
    if as_json:
        out = [{**{k: r[k] for k in _output_keys(dims)},
                **{m: r[m] for m in (*METRICS, "unpriced_tokens")}} for r in rows]
        echo_json(out)
        return
    _print_table(rows, dims, since_day, until_day, whole)
    for item in unpriced:
        click.echo(f"Unpriced: {tokens(item['rows'])} usage rows, "
                   f"{tokens(item['tokens'])} tokens of "
                   f"{clean(item['model'])} ({clean(item['reason'])}): billed cost counts them "
                   "once the cost API reports them; add a price under [[pricing.prices]] to "
                   "estimate them")
    for gap in gaps:
        click.echo(f"Not priced: {tokens(gap['tokens'])} estimated tokens of "
                   f"{clean(gap['model'])} are priced at its 100k-and-under rate; the API does "
                   "not say which prompts were over 100k (a higher rate): up to "
                   f"{usd(gap['up_to_usd'])} more until the cost API bills them")


def _output_keys(dims: Sequence[str]) -> list[str]:
    keys = []
    for dim in dims:
        keys += {"workspace": ["workspace", "workspace_id"],
                 "api_key": ["api_key", "api_key_id"],
                 "person": ["person", "person_id"]}.get(dim, [dim])
    return keys


def _print_table(rows: list[dict[str, Any]], dims: Sequence[str], since: date,
                 until: date, whole: Decimal | None = None) -> None:
    from spendwatch.warehouse.figures import label_of

    headers = [*dims, "cost_usd", "input", "cache_write", "cache_read", "output"]
    lines = []
    for r in rows:
        lines.append([*(clean(label_of(r, d)) for d in dims),
                      usd(r['cost_usd']), tokens(r['uncached_input_tokens']),
                      tokens(r['cache_write_5m_tokens'] + r['cache_write_1h_tokens']),
                      tokens(r['cache_read_tokens']), tokens(r['output_tokens'])])
    total = sum((r["cost_usd"] for r in rows), Decimal(0))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(headers)]
    click.echo(f"Spend {since} .. {until}")
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for line in lines:
        click.echo("  ".join(c.ljust(w) if i < len(dims) else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths))))
    if whole is not None:
        click.echo("Note: a user in several RBAC groups counts in full in each group, so the "
                   "rows overlap and add up to more than was spent.")
        click.echo(f"Total: {usd(whole)}")
        return
    click.echo(f"Total: {usd(total)}")


# --- reconcile ------------------------------------------------------------------------------

@main.command("reconcile")
@click.option("--since", metavar="DATE", help="First local day (default: 7 days ago).")
@click.option("--until", metavar="DATE", help="Last local day, included (default: today).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (money as decimal strings).")
@click.option("--cuts", "cuts", is_flag=True,
              help="Instead: every hour where the price, people or profiles cut does not add "
                   "up to the key cut (billed cost, tokens).")
@click.pass_context
def reconcile_command(ctx: click.Context, since: str | None, until: str | None,
                      as_json: bool, cuts: bool) -> None:
    """Estimated (usage x price table) against billed, per day and model."""
    from spendwatch.warehouse.figures import NO_MODEL
    from spendwatch.warehouse.reconcile import cut_agreement, reconciliation

    config = config_of(ctx)
    until_day = parse_day(until, "--until") or local_today(utcnow(), config.tz)
    since_day = parse_day(since, "--since") or until_day - 7 * DAY
    check_range(since_day, until_day)
    if cuts:
        off = read(config, cut_agreement, since_day, until_day)
        if as_json:
            echo_json([{"hour": d.hour, "organization": d.organization, "cut": d.cut,
                        "measure": d.measure, "key_value": d.key_value,
                        "cut_value": d.cut_value, "difference": d.difference} for d in off])
            return
        if not off:
            click.echo(f"Every cut agrees with the key cut, hour by hour, {since_day} .. "
                       f"{until_day}.")
        for d in off:
            money = d.measure == "cost_usd"
            cut_text = usd(d.cut_value) if money else tokens(int(d.cut_value))
            key_text = usd(d.key_value) if money else tokens(int(d.key_value))
            click.echo(f"{d.hour:%Y-%m-%d %H:00} UTC  {clean(d.organization)}  cut {d.cut}: "
                       f"{d.measure} {cut_text} against {key_text} in the key cut")
        return
    rows = read(config, reconciliation, since_day, until_day)
    if as_json:
        echo_json([{"date": r.date, "organization": r.organization, "model": r.model,
                    "estimated_usd": r.estimated_usd, "billed_usd": r.billed_usd,
                    "difference_usd": r.difference_usd, "difference_pct": r.difference_pct,
                    "unpriced_tokens": r.unpriced_tokens, "spend_usd": r.spend_usd,
                    "compared": r.compared} for r in rows])
        return
    # Every row of spend is listed, so a day adds up to `spend --by date`: "spend" is all of
    # the model's spend that day; a row with nothing to compare (not a model's, or not billed
    # yet) shows "-" where estimated and billed would be.
    click.echo(f"{'date':10}  {'organization':14}  {'model':28}  {'spend':>12}  "
               f"{'estimated':>12}  {'billed':>12}  {'difference':>10}")
    for r in rows:
        pct = "n/a"
        if r.difference_pct is not None:  # signed even at zero: "+0.00%" reads "no difference"
            pct = percent(r.difference_pct / 100, digits=2, signed=True)
            pct = pct if pct[0] in "+-" else f"+{pct}"
        compared = (f"{usd(r.estimated_usd):>12}  {usd(r.billed_usd):>12}  {pct:>10}"
                    if r.compared else f"{'-':>12}  {'-':>12}  {'-':>10}")
        click.echo(f"{r.date!s:10}  {clean(r.organization):14}  "
                   f"{clean(r.model or NO_MODEL):28}  {usd(r.spend_usd):>12}  {compared}"
                   + (f"  unpriced: {tokens(r.unpriced_tokens)} tokens" if r.unpriced_tokens
                      else ""))


# --- savings --------------------------------------------------------------------------------

@main.command("savings")
@click.option("--since", metavar="DATE", help="First local day (default: 30 days ago).")
@click.option("--until", metavar="DATE", help="Last local day, included (default: yesterday).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (money as decimal strings).")
@click.pass_context
def savings_command(ctx: click.Context, since: str | None, until: str | None,
                    as_json: bool) -> None:
    """What caching and batch saved, cache waste, and what could still be saved."""
    from spendwatch.savings import ledger

    config = config_of(ctx)
    until_day = parse_day(until, "--until") or local_today(utcnow(), config.tz) - DAY
    since_day = parse_day(since, "--since") or until_day - 29 * DAY
    check_range(since_day, until_day)
    book = read(config, ledger, since_day, until_day)
    totals = book.totals
    if as_json:
        echo_json({
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
            "unpriced_tokens": totals.unpriced_tokens})
        return
    click.echo(f"Savings {since_day} .. {until_day} ({book.days} days)")
    click.echo(f"  without caching or batch you would have paid {usd(totals.baseline_usd)}; "
               f"you paid {usd(totals.actual_usd)} (estimated)")
    click.echo(f"  caching saved {usd(totals.cache_savings_usd)}, the Batch API saved "
               f"{usd(totals.batch_savings_usd)}: {usd(totals.realized_total_usd)} in all")
    click.echo(f"  cache writes never read: {tokens(totals.wasted_tokens)} tokens, "
               f"{usd(totals.waste_usd)} of write premium")
    click.echo("Could still save:" if book.potential else "Could still save: nothing found")
    for item in book.potential:
        click.echo(clean(f"  [{item.lever}] {item.change}"))
    if totals.unpriced_tokens:
        click.echo(f"Unpriced: {tokens(totals.unpriced_tokens)} tokens have no price and are "
                   "left out")
