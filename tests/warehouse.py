"""Reading the warehouse back in tests, independently of the query code under test."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb

TOKEN_COLUMNS = ("uncached_input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
                 "cache_read_tokens", "output_tokens")


def totals(db: Path, start: datetime, end: datetime, organization: str | None = None) -> dict:
    """Cost and token totals of buckets starting in [start, end)."""
    conn = duckdb.connect(str(db), read_only=True)
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
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return conn.execute(sql, list(args)).fetchall()
    finally:
        conn.close()
