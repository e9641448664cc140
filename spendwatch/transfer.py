"""Moving a warehouse: a whole copy into another backend (``spendwatch storage migrate --to``),
verified, and the spend facts as Parquet for any other engine (``spendwatch export parquet``).

A copy reads the source through a reader (its last committed state; a DuckLake's snapshot) and
writes the target in one writer transaction, table by table in Arrow batches (memory stays
flat however long the history), into a target migrated to the same schema and holding nothing
yet. It is then verified: every table's row count, and each organization's cost and tokens per
UTC day in the raw rows and in the stored facts, equal in both, or the copy is an error (the
target is left as written, to look at; the source is never touched).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb

from spendwatch import storage
from spendwatch.config import Config
from spendwatch.errors import ConfigError, SpendwatchError
from spendwatch.files import private_folder

#: Rows per Arrow batch of a copy.
BATCH_ROWS = 100_000
#: The per-organization, per-day totals a copy is verified by.
_DAY_TOTALS = {
    "cost_buckets": "sum(amount_usd)",
    "usage_hourly": "sum(uncached_input_tokens + cache_write_5m_tokens + cache_write_1h_tokens"
                    " + cache_read_tokens + output_tokens)",
    "facts": "sum(cost_usd)",
    "facts_daily": "sum(cost_usd)",
}


#: Tables a new warehouse's migrations fill (its lock rows, its salt): replaced by the source's.
_OWN_ROWS = ("locks", "meta")


class CopyMismatch(SpendwatchError):
    """The target's rows or totals differ from the source's after a copy."""


@dataclass(frozen=True)
class CopyResult:
    tables: int
    rows: int
    organization_days: int   # (organization, day) totals compared
    total_usd: Decimal       # the billed and estimated facts of the key cut, in both


def arrow_batches(relation: duckdb.DuckDBPyRelation) -> object:
    """A query's rows as an Arrow stream of :data:`BATCH_ROWS`-row batches, read as they are
    written (DuckDB 2.0 calls it ``to_arrow_reader``, 1.4 ``fetch_arrow_reader``). A relation,
    not an executed result: 2.0 copies a DB-API result's rows whole before streaming them."""
    reader = (getattr(relation, "to_arrow_reader", None)
              or getattr(relation, "fetch_arrow_reader"))
    return reader(BATCH_ROWS)


def _tables(conn: duckdb.DuckDBPyConnection) -> list[str]:
    return [t for (t,) in conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND "
        "schema_name = current_schema() AND NOT temporary ORDER BY table_name").fetchall()]


def _counts(conn: duckdb.DuckDBPyConnection, tables: list[str]) -> dict[str, int]:
    return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
            for t in tables}


def day_totals(conn: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, str], Decimal]:
    """(table, organization, UTC day) -> the total a copy is verified by."""
    out: dict[tuple[str, str, str], Decimal] = {}
    for table, total in _DAY_TOTALS.items():
        cut = " WHERE cut = 'key'" if table.startswith("facts") else ""
        for organization, day, value in conn.execute(
                f"SELECT organization, CAST(CAST(bucket_start AS DATE) AS VARCHAR), {total} "
                f"FROM {table}{cut} GROUP BY ALL").fetchall():
            out[(table, organization, day)] = Decimal(value or 0)
    return out


def copy_warehouse(source: Config, target: Config) -> CopyResult:
    """Copy ``source``'s whole warehouse into ``target``'s, which must hold no data yet, and
    verify it. Raises ConfigError (the target holds data, or is the source), CopyMismatch."""
    if source.database_label == target.database_label:
        raise ConfigError("the source and the target are the same warehouse; name another "
                          "with --to")
    with storage.reader(source) as src:
        tables = [t for t in _tables(src) if t != "schema_migrations"]
        with storage.writer(target) as dst:
            held = {t: n for t, n in _counts(dst, [t for t in _tables(dst) if t in tables
                                                   and t not in _OWN_ROWS]).items() if n}
            if held:
                raise ConfigError(f"the target {target.database_label} already holds data "
                                  f"({', '.join(sorted(held))}); point --to at a new, empty "
                                  "warehouse")
            missing = [t for t in tables if t not in set(_tables(dst))]
            if missing:
                raise ConfigError(f"the target has no table {missing[0]}: it was made by "
                                  "another spendwatch version; use the same one for both")
            with storage.transaction(dst):
                for table in tables:
                    dst.execute(f"DELETE FROM {table}")  # the new warehouse's own rows
                    columns = ", ".join(c for (c,) in src.execute(
                        "SELECT column_name FROM duckdb_columns() WHERE database_name = "
                        "current_database() AND table_name = ? ORDER BY column_index",
                        [table]).fetchall())
                    batches = arrow_batches(src.sql(f"SELECT {columns} FROM {table}"))
                    storage.register(dst, "copied_rows", batches)
                    dst.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} "
                                "FROM copied_rows")
                    storage.unregister(dst, "copied_rows")
            before, after = _counts(src, tables), _counts(dst, tables)
            totals_before, totals_after = day_totals(src), day_totals(dst)
    for table in tables:
        if before[table] != after[table]:
            raise CopyMismatch(f"the copy of {table} holds {after[table]} rows, the source "
                               f"{before[table]}; the target is left as written, the source "
                               "untouched")
    for key in sorted(set(totals_before) | set(totals_after)):
        if totals_before.get(key) != totals_after.get(key):
            table, organization, day = key
            raise CopyMismatch(f"the copy's {table} total of {organization!r} on {day} is "
                               f"{totals_after.get(key)}, the source's {totals_before.get(key)}")
    total = sum((v for (t, _, _), v in totals_before.items() if t == "facts"), Decimal(0))
    days = {(o, d) for (_, o, d) in totals_before}
    return CopyResult(len(tables), sum(before.values()), len(days), total)


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    files: int
    rows: int


def export_parquet(config: Config, out: Path) -> ExportResult:
    """Every stored fact (each cut's, billed, allocated and estimated) as Parquet under
    ``out/organization=NAME/month=YYYY-MM/``, the month in the configured time zone, with the
    names of workspaces and API keys beside them. ``out`` must be empty or new."""
    out = out.expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} is not an empty folder; name a new folder with --out")
    try:
        private_folder(out)
    except OSError as exc:
        raise ConfigError(f"{out} cannot be created ({exc.strerror or type(exc).__name__}); "
                          "name a folder of yours with --out") from None
    with storage.reader(config) as conn:
        tz = config.timezone.replace("'", "''")
        facts_dir = str(out / "facts").replace("'", "''")
        (rows,) = conn.execute(f"""
            COPY (SELECT f.*, CAST(timezone('{tz}', f.bucket_start) AS DATE) AS local_date,
                         strftime(timezone('{tz}', f.bucket_start), '%Y-%m') AS month,
                         w.name AS workspace_name, k.name AS api_key_name
                  FROM facts f
                  LEFT JOIN workspaces w USING (organization, workspace_id)
                  LEFT JOIN api_keys k USING (organization, api_key_id))
            TO '{facts_dir}' (FORMAT parquet, PARTITION_BY (organization, month))"""
        ).fetchone() or (0,)  # COPY answers with the rows it wrote
    files = sum(1 for p in out.rglob("*.parquet"))
    return ExportResult(out, files, int(rows))
