"""``spendwatch storage migrate --to TARGET`` (a whole warehouse into another backend, and
back) and ``spendwatch export parquet --out DIR`` (the spend facts for any other engine)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from spendwatch.cli.shell import config_of
from spendwatch.config import Config, StorageConfig, load_config
from spendwatch.numbers import tokens, usd


def target_of(config: Config, to: str) -> Config:
    """``--to``: a config file (``.toml``) whose ``[storage]`` names the target, such as a
    DuckLake; else a DuckDB file's path (relative to the current folder)."""
    if to.endswith(".toml"):  # its relative paths are its own folder's
        other = load_config(to)
        return replace(config, storage=other.storage, path=other.path)
    return replace(config, storage=StorageConfig(database=str(Path(to).expanduser().resolve()),
                                                 lock_timeout_seconds=config.storage
                                                 .lock_timeout_seconds))


@click.group("storage")
def storage_group() -> None:
    """Move the warehouse between a DuckDB file and a DuckLake."""


@storage_group.command("migrate")
@click.option("--to", "to", required=True, metavar="TARGET",
              help="A config file whose [storage] names the new warehouse (a DuckLake), or a "
                   "DuckDB file's path. It must hold no data yet.")
@click.pass_context
def migrate_command(ctx: click.Context, to: str) -> None:
    """Copy this config's whole warehouse into TARGET and verify it (every table's rows, and
    each organization's cost and tokens per day, equal in both). The source is not changed;
    point [storage] at the target when it says so."""
    from spendwatch.transfer import copy_warehouse

    config = config_of(ctx)
    target = target_of(config, to)
    click.echo(f"copying {config.database_label} into {target.database_label} ...", err=True)
    result = copy_warehouse(config, target)
    click.echo(f"copied {result.tables} tables, {tokens(result.rows)} rows; verified: every "
               f"table's rows and {tokens(result.organization_days)} organization-days' totals "
               f"equal ({usd(result.total_usd)} in all). Point storage.database at the target "
               "to use it.")


@click.group("export")
def export_group() -> None:
    """Write the warehouse's data for other tools."""


@export_group.command("parquet")
@click.option("--out", "out", required=True, metavar="DIR",
              help="A new or empty folder.")
@click.pass_context
def parquet_command(ctx: click.Context, out: str) -> None:
    """Write every stored spend fact as Parquet, partitioned by organization and month
    (DIR/facts/organization=NAME/month=YYYY-MM/), with workspace and API key names, for any
    other warehouse engine to load."""
    from spendwatch.transfer import export_parquet

    result = export_parquet(config_of(ctx), Path(out))
    click.echo(f"wrote {tokens(result.rows)} facts in {result.files} Parquet files under "
               f"{result.folder / 'facts'}")
