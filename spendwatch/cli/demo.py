"""``spendwatch demo``: a simulated organization, collected and summed, on this machine.

Starts the local API simulator, writes a config for it into the demo folder (the simulator's
admin key goes into a mode-600 key file, as a real key would), backfills the history, and prints
what the warehouse says was spent next to the simulator's own ground truth.
"""

from __future__ import annotations

from dataclasses import replace

import os
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from spendwatch.config import Config, load_config
from spendwatch.numbers import money_str, round_cents, usd
from spendwatch.savings import Ledger, ledger
from spendwatch.text import clean
from spendwatch.timeutil import local_range, local_today, utcnow
from spendwatch.warehouse.batch import Batch, read
from spendwatch.warehouse.figures import NO_MODEL
from spendwatch.warehouse.spend import spend

DEMO_KEY = "sk-ant-admin01-spendwatch-demo-not-a-real-key"
DEMO_TIMEZONE = "America/Chicago"

CONFIG_TEMPLATE = """\
# Written by `spendwatch demo`: a simulated organization served on this machine.
timezone = "{timezone}"

[storage]
database = "spendwatch.duckdb"

[collection]
interval_minutes = 5

[dashboard]
port = {port}

[[organizations]]
name = "demo-org"
source = "analytics"
base_url = "{base_url}"
admin_key_file = "{key_file}"

[[features]]
name = "support bot"
api_key_names = ["support-bot-*"]

[[features]]
name = "search"
workspace_names = ["Search"]

[[features]]
name = "evals"
api_key_names = ["eval-harness"]
batch_eligible = true

[alerts]
dashboard_url = "http://127.0.0.1:{port}"

# The simulator stands in for Slack too: it answers "ok" and keeps the messages.
[[alerts.channels]]
name = "demo-slack"
kind = "slack"
webhook_url_file = "{webhook_file}"

[[alerts.rules]]
name = "daily budget"
kind = "daily_spend"
channels = ["demo-slack"]
threshold_usd = "300"
levels = [0.5, 0.8, 1.0]

[[alerts.rules]]
name = "monthly budget"
kind = "monthly_budget"
channels = ["demo-slack"]
budget_usd = "10000"

[[alerts.rules]]
name = "cache hit ratio"
kind = "cache_hit_ratio"
channels = ["demo-slack"]
per = "feature"
floor = 0.3

[[alerts.rules]]
name = "collector"
kind = "data_stale"
channels = ["demo-slack"]
max_age = "1h"

# Last week's CSV, written into reports/ and summarised to the simulated Slack, and each
# morning yesterday's digest.
[reports]
channels = ["demo-slack"]
daily = true
"""


#: Days of the demo's history that every cut is collected for (the key cut: all of them).
CUT_DAYS = 14


def write_demo_config(directory: Path, base_url: str, port: int = 8501) -> Path:
    """The demo's config.toml, key file and webhook file; returns the config path."""
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "admin_key"
    key_file.write_text(DEMO_KEY + "\n", encoding="utf-8")
    webhook_file = directory / "slack_webhook"
    webhook_file.write_text(f"{base_url}/_sim/slack/T0DEMO/B0DEMO/demo\n", encoding="utf-8")
    for secret in (key_file, webhook_file):
        os.chmod(secret, 0o600)
    config_path = directory / "config.toml"
    config_path.write_text(CONFIG_TEMPLATE.format(
        timezone=DEMO_TIMEZONE, base_url=base_url, key_file=key_file.resolve(),
        webhook_file=webhook_file.resolve(), port=port), encoding="utf-8")
    os.chmod(config_path, 0o600)  # spendwatch refuses a config open to group or others
    return config_path


def run_demo(directory: str, days: int, seed: int, serve: bool = True,
             port: int = 8501) -> None:
    """Simulate, backfill ``days``, print totals against the ground truth, check alerts; with
    ``serve``, then run the worker and the dashboard until Ctrl-C."""
    from alerts.check import check
    from alerts.states import State
    from collectors.simulator import start_simulator
    from collectors.sync import CollectOptions, collect
    from spendwatch.cli.progress import ProgressBar
    from alerts.model import CheckReport
    from alerts.words import scope_detail
    from reports.daily import write_due_digests
    from reports.runs import send_queued, write_due_reports

    # Fast mode and US-only inference on, so the people page shows them; the config names no
    # ``cuts``: every cut (people, products, RBAC groups) is collected.
    simulator = start_simulator(seed=seed, admin_keys=[DEMO_KEY], fast_and_us=True)
    try:
        config = load_config(write_demo_config(Path(directory), simulator.url, port))
        click.echo(f"simulated organization served at {simulator.url}")
        now = utcnow()
        today = local_today(now, config.tz)
        first = today - timedelta(days=days)
        since, _ = local_range(first, first, config.tz)
        click.echo(f"collecting {days} days of history into {config.database_label} ...")
        # The key cut for every day, then the other cuts (prices, people, products) for the
        # last CUT_DAYS: each cut reads the same hours again, and a demo should not take
        # minutes. The worker keeps every cut current from there.
        key_only = replace(config, organizations=tuple(replace(o, cuts=())
                                                       for o in config.organizations))
        cut_first = max(first, today - timedelta(days=CUT_DAYS))
        cut_since, _ = local_range(cut_first, cut_first, config.tz)
        results = collect(key_only, CollectOptions(since=since), now=now,
                          progress_factory=ProgressBar)
        click.echo(f"collecting prices, people and products of the last "
                   f"{(today - cut_first).days} days ...")
        results += collect(config, CollectOptions(since=cut_since), now=now,
                           progress_factory=ProgressBar)
        for result in results:
            if not result.ok:
                raise click.ClickException(result.error or "collection failed")
        last = today - timedelta(days=1)
        by_model, by_feature, book = read(config, demo_figures, first, last)
        start, end = local_range(first, last, config.tz)
        truth = simulator.org.truth(start, end)
        _print_summary(first, last, by_model, by_feature, truth)
        click.echo(f"\nCaching saved {usd(book.totals.cache_savings_usd)} and the Batch API "
                   f"{usd(book.totals.batch_savings_usd)} over these {book.days} days.")
        for item in book.potential[:3]:
            click.echo(clean(f"Could save: {item.change}"))
        report = check(config, utcnow())
        firing = [e for e in report.evaluations if e.state == State.FIRING]
        click.echo(f"\nAlerts: {len(firing)} firing, {len(report.deliveries)} messages sent "
                   "to the simulated Slack")
        for evaluation in firing[:5]:
            scope = scope_detail(evaluation.scope)
            click.echo(clean(f"  FIRING {evaluation.rule}{f' ({scope})' if scope else ''}: "
                             f"{evaluation.summary}"))
        for run in write_due_reports(config, utcnow()):
            if run.path is not None:
                click.echo(f"\nWeekly report {run.week}: {run.path} ({run.detail}), its "
                           "summary sent to the simulated Slack")
        for digest_run in write_due_digests(config, utcnow()):
            if digest_run.action == "queued":
                click.echo(f"Daily digest of {digest_run.day} ({digest_run.detail}) sent to "
                           "the simulated Slack")
        send_queued(config, utcnow(), CheckReport())
        if serve:
            _serve(config)
        else:
            click.echo("\nNext: `spendwatch --config <demo folder>/config.toml spend --by "
                       "model,feature` (or `savings`, `reconcile`, `alerts check`).")
    finally:
        simulator.close()


def _serve(config: Config) -> None:
    """The worker (in a thread) and the dashboard (a child process), until interrupted."""
    import signal
    import threading

    from collectors.scheduler import start_background_schedule
    from spendwatch.cli.dashboard import start_dashboard, url
    from spendwatch.cli.worker import worker_round

    stop = threading.Event()
    worker = start_background_schedule(config, worker_round, stop)
    dashboard = start_dashboard(config)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(f"\nThe dashboard is at {url(config)} (the worker collects every "
               f"{config.collection.interval_minutes} minutes). Press Ctrl-C to stop.")
    try:
        while not stop.wait(1):
            if dashboard.poll() is not None:
                raise click.ClickException("the dashboard stopped; see the messages above")
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        dashboard.terminate()
        worker.shutdown(wait=True)
        try:
            dashboard.wait(timeout=10)
        except Exception:
            dashboard.kill()


def demo_figures(batch: Batch, first: date, last: date
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Ledger]:
    """What the demo prints, in one reader batch: spend by model, by feature, the savings."""
    return (spend(batch, first, last, ["model"]), spend(batch, first, last, ["feature"]),
            ledger(batch, first, last))


def _print_summary(first: date, last: date, by_model: list[dict[str, Any]],
                   by_feature: list[dict[str, Any]], truth: dict[str, Any]) -> None:
    total = sum((r["cost_usd"] for r in by_model), Decimal(0))
    click.echo(f"\nSpend {first} .. {last} ({DEMO_TIMEZONE}), from the warehouse:")
    for row in by_model:
        click.echo(f"  {clean(row['model'] or NO_MODEL):45}"
                   f" {usd(row['cost_usd']):>13}")
    click.echo("By feature:")
    for row in by_feature[:8]:
        click.echo(f"  {clean(row['feature']):45} {usd(row['cost_usd']):>13}")
    expected = Decimal(truth["cost_usd"])
    click.echo(f"  {'TOTAL':45} {usd(total):>13}")
    click.echo(f"{'Simulator ground truth:':47} {usd(expected):>13}")
    if round_cents(total) == round_cents(expected):
        click.echo("The warehouse matches the simulator's ground truth to the cent.")
    else:
        raise click.ClickException(f"MISMATCH: the warehouse differs from the ground truth "
                                   f"by {money_str(total - expected)} dollars")
