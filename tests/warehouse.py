"""Reading the warehouse back in tests, independently of the query code under test."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb

import lake
from spendwatch.config import Config
from spendwatch.warehouse.spend import EXTRA_METRICS, METRICS, TOKEN_METRICS

TOKEN_COLUMNS = ("uncached_input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
                 "cache_read_tokens", "output_tokens")


def open_warehouse(db: Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """The warehouse at ``db`` (``FOLDER/data/spendwatch.duckdb``, as ``write_config`` names
    it), opened directly: the file, or on ``--backend ducklake`` FOLDER's DuckLake."""
    if lake.active():
        return lake.connect(db.parent.parent, read_only=read_only)
    return duckdb.connect(str(db), read_only=read_only)


def totals(db: Path, start: datetime, end: datetime, organization: str | None = None) -> dict:
    """Cost and token totals of buckets starting in [start, end)."""
    conn = open_warehouse(db)
    try:
        org_sql = "AND organization = ?" if organization else ""
        args = [start, end] + ([organization] if organization else [])
        (cost,) = conn.execute("SELECT coalesce(sum(amount_usd), 0) FROM cost_buckets WHERE "
                               f"bucket_start >= ? AND bucket_start < ? {org_sql}", args).fetchone()
        tokens = conn.execute("SELECT " + ", ".join(f"coalesce(sum({c}), 0)" for c in TOKEN_COLUMNS)
                              + ", coalesce(sum(web_search_requests), 0) FROM usage_hourly WHERE "
                              f"bucket_start >= ? AND bucket_start < ? {org_sql}", args).fetchone()
    finally:
        conn.close()
    return {"cost_usd": Decimal(cost), "tokens": dict(zip(TOKEN_COLUMNS, map(int, tokens[:5]))),
            "web_search_requests": int(tokens[5])}


def truth_totals(truth: dict) -> dict:
    """The simulator's ground truth in the same shape as :func:`totals`."""
    return {"cost_usd": Decimal(truth["cost_usd"]),
            "tokens": {c: int(truth["tokens"][c]) for c in TOKEN_COLUMNS},
            "web_search_requests": int(truth["web_search_requests"])}


def query(db: Path, sql: str, *args: object) -> list[tuple]:
    conn = open_warehouse(db)
    try:
        return conn.execute(sql, list(args)).fetchall()
    finally:
        conn.close()


def db_path(config: Config) -> Path:
    """``config``'s database as tests name it: its file, or on ``--backend ducklake`` the
    path :func:`open_warehouse` maps to the config folder's DuckLake."""
    if config.storage.is_lake:
        return config.path.parent / "data" / "spendwatch.duckdb"
    return config.database_path


def stored_bytes(db: Path) -> bytes:
    """Everything the warehouse at ``db`` holds, to look for a secret in: the file and its
    log, or a DuckLake's data files and every table's rows as text."""
    if not lake.active():
        wal = db.with_name(db.name + ".wal")
        return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    folder = db.parent.parent
    raw = b"".join(p.read_bytes() for p in sorted((folder / "lake").rglob("*")) if p.is_file())
    conn = open_warehouse(db)
    try:
        for table in lake.tables(conn):
            raw += repr(conn.execute(f"SELECT * FROM {table}").fetchall()).encode()
    finally:
        conn.close()
    return raw


def exists(db: Path) -> bool:
    """Whether the warehouse at ``db`` was created (a file, or a DuckLake with tables)."""
    if not lake.active():
        return db.exists()
    try:
        conn = open_warehouse(db)
    except duckdb.Error:
        return False
    try:
        return bool(lake.tables(conn))
    finally:
        conn.close()


def folded(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, dict[str, object]]:
    """Rows summed per ``keys``: metrics added, a None (no list price, requests not reported)
    kept apart as the query keeps it: None requests on a row with tokens (a usage row of it
    reported no count) makes the sum None; on a row of cost only it is no requests at all."""
    out: dict[tuple, dict[str, object]] = {}
    for row in rows:
        into = out.setdefault(tuple(row[k] for k in keys), {})
        for metric in (*METRICS, *EXTRA_METRICS):
            value, held = row[metric], into.get(metric, 0)
            if metric == "requests":
                unknown = value is None and any(row[m] for m in TOKEN_METRICS)
                into[metric] = None if unknown or held is None else held + (value or 0)
            elif value is not None:
                into[metric] = held + value
    return {k: v for k, v in out.items() if any(v.get(m) for m in (*METRICS, "unpriced_tokens"))}
