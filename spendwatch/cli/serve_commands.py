"""The commands that keep running until stopped: the worker (``run``), the dashboard, the demo
and the local API simulator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import click

from spendwatch.cli.shell import check_organizations, config_of, worker_logging


@click.command()
@click.option("--org", "orgs", multiple=True, metavar="NAME",
              help="Only collect and report this organization (repeat for several); the "
                   "other workers of a shared warehouse take the rest.")
@click.pass_context
def run(ctx: click.Context, orgs: Sequence[str]) -> None:
    """Run the worker: collect on a schedule; after each collection write the weekly report
    when it is due and check alerts; until stopped (Ctrl-C or SIGTERM)."""
    from spendwatch.cli.worker import run as run_worker

    config = config_of(ctx)
    check_organizations(config, orgs)
    worker_logging(ctx)
    run_worker(config, orgs)


@click.command()
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port (default: [dashboard] port, 8501).")
@click.pass_context
def dashboard(ctx: click.Context, port: int | None) -> None:
    """Serve the web dashboard on this machine (127.0.0.1 unless configured)."""
    from spendwatch.cli.dashboard import check_exposure, run_dashboard, url

    config = config_of(ctx)
    if port is not None:
        config = replace(config, dashboard=replace(config.dashboard, port=port))
    check_exposure(config)  # refused before a word is printed: one line, exit 2
    click.echo(f"spendwatch dashboard: {url(config)}", err=True)
    run_dashboard(config)


@click.command()
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


@click.command()
@click.option("--port", default=8787, show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option("--admin-key", "admin_keys", multiple=True, default=["sk-ant-admin01-sim"],
              show_default=True, help="Admin key the simulator accepts (not a real key).")
def simulator(port: int, seed: int, admin_keys: Sequence[str]) -> None:
    """Serve the local simulator of the Anthropic usage and cost APIs."""
    from collectors.simulator.__main__ import serve_forever

    serve_forever(port=port, seed=seed, admin_keys=list(admin_keys), now=None)
