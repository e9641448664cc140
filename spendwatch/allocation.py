"""Splitting legacy cost across API keys and hours.

The legacy cost report is daily, per workspace and line (model, service tier, context window,
cost and token type), never per API key. Each such line is split across the API keys and hours
that used the same line that UTC day, in proportion to their estimated cost of it. Every key on
one line pays the same unit price, so that proportion is the proportion of the line's tokens
(web search: of its searches). The shares are rounded to 12 decimals of a dollar by the largest
remainder method, so they add up exactly to the billed amount. They are stored with basis
"allocated".

A line with nothing to follow (code execution and session runtime have no usage rows, or the
usage is missing) is kept whole, for the whole day, with no API key and basis "billed".
Usage that no line follows (the legacy report never includes Priority Tier, for one) is listed
in ``usage_unbilled`` and keeps its estimate, or shows as unpriced: never as $0.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any, Sequence

import duckdb
import pyarrow as pa

from spendwatch.pricing import canonical_model

QUANTUM = Decimal("1e-12")  # DECIMAL(38, 12)
WEIGHT_COLUMN = {"uncached_input_tokens": "uncached_input_tokens",
                 "cache_creation.ephemeral_5m_input_tokens": "cache_write_5m_tokens",
                 "cache_creation.ephemeral_1h_input_tokens": "cache_write_1h_tokens",
                 "cache_read_input_tokens": "cache_read_tokens",
                 "output_tokens": "output_tokens"}
_USAGE_COLUMNS = ("row_key", "bucket_start", "api_key_id", "workspace_id", "model", "service_tier",
                  "context_window", "uncached_input_tokens", "cache_write_5m_tokens",
                  "cache_write_1h_tokens", "cache_read_tokens", "output_tokens",
                  "web_search_requests")


def split_exactly(amount: Decimal, weights: Sequence[int]) -> list[Decimal]:
    """Shares of ``amount`` proportional to ``weights`` that add up to ``amount`` exactly.

    Each share is a multiple of QUANTUM. ``amount`` must itself be a multiple of QUANTUM and
    ``weights`` must be non-negative with a positive sum. Raises ValueError otherwise.
    """
    total = sum(weights)
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError("weights must be non-negative with a positive sum")
    if amount % QUANTUM:
        raise ValueError(f"{amount} has more than 12 decimals")
    sign = -1 if amount < 0 else 1
    units = int(abs(amount) / QUANTUM)
    exact = [units * w for w in weights]  # in units of QUANTUM / total
    floors = [e // total for e in exact]
    left = units - sum(floors)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] % total), i))
    for i in by_remainder[:left]:
        floors[i] += 1
    return [sign * Decimal(f) * QUANTUM for f in floors]


def _matches(line: tuple[Any, ...], usage: dict[str, Any]) -> bool:
    """Usage follows a line in the same workspace (null: the default workspace) whose model,
    service tier and context window match where the line names them (web search lines name
    none)."""
    workspace, model, tier, window = line
    return (usage["workspace_id"] == workspace
            and (model is None or canonical_model(usage["model"] or "") == canonical_model(model))
            and (tier is None or usage["service_tier"] == tier)
            and (window is None or usage["context_window"] == window))


_ALLOCATED_COLUMNS = ("row_key", "organization", "bucket_start", "bucket_width", "workspace_id",
                      "api_key_id", "model", "service_tier", "context_window", "cost_type",
                      "token_type", "amount_usd", "cost_basis", "provisional", "source_row_key")
_ARROW_TYPES = {"bucket_start": pa.timestamp("us", tz="UTC"), "amount_usd": pa.decimal128(38, 12),
                "provisional": pa.bool_()}


def reallocate(conn: duckdb.DuckDBPyConnection, organization: str, day_start: datetime,
               day_end: datetime) -> int:
    """Rebuild ``cost_allocated`` for one organization's UTC day; returns rows written.

    Call inside the writer's transaction, after the day's usage or cost rows changed.
    """
    span = [organization, day_start, day_end]
    for table in ("cost_allocated", "usage_unbilled"):
        conn.execute(f"DELETE FROM {table} WHERE organization = ? AND bucket_start >= ? "
                     "AND bucket_start < ?", span)
    lines = conn.execute("""
        SELECT row_key, bucket_start, workspace_id, model, service_tier, context_window,
               cost_type, token_type, amount_usd, provisional
        FROM cost_buckets WHERE organization = ? AND bucket_width = '1d'
          AND bucket_start >= ? AND bucket_start < ?""", span).fetchall()
    if not lines:
        return 0
    usage: dict[str | None, list[dict[str, Any]]] = {}  # by workspace
    for record in conn.execute(f"SELECT {', '.join(_USAGE_COLUMNS)} FROM usage_hourly WHERE "
                               "organization = ? AND bucket_start >= ? AND bucket_start < ?",
                               span).fetchall():
        row = dict(zip(_USAGE_COLUMNS, record))
        usage.setdefault(row["workspace_id"], []).append(row)
    out: dict[str, list[Any]] = {c: [] for c in _ALLOCATED_COLUMNS}
    followed: set[tuple[str, str]] = set()  # (usage row_key, usage column) some line follows

    def add(**values: Any) -> None:
        for column in _ALLOCATED_COLUMNS:
            out[column].append(values[column])

    for (source_key, start, workspace, model, tier, window, cost_type, token_type, amount,
         provisional) in lines:
        column = (WEIGHT_COLUMN.get(token_type) if cost_type == "tokens"
                  else "web_search_requests" if cost_type == "web_search" else None)
        line_key = (workspace, model, tier, window)
        followers = [] if column is None else [
            r for r in usage.get(workspace, []) if r[column] > 0 and _matches(line_key, r)]
        line = dict(organization=organization, workspace_id=workspace, model=model,
                    service_tier=tier, context_window=window, cost_type=cost_type,
                    token_type=token_type, provisional=provisional, source_row_key=source_key)
        if column is None or not followers:
            add(row_key=json.dumps([organization, start.isoformat(), None, source_key]),
                bucket_start=start, bucket_width="1d", api_key_id=None, amount_usd=amount,
                cost_basis="billed", **line)
            continue
        weights: dict[tuple[datetime, str | None], int] = {}
        for r in followers:  # a line naming no model is followed by every model's rows
            followed.add((r["row_key"], column))
            slot = (r["bucket_start"], r["api_key_id"])
            weights[slot] = weights.get(slot, 0) + r[column]
        shares = split_exactly(Decimal(amount), list(weights.values()))
        for (hour, api_key), share in zip(weights, shares):
            add(row_key=json.dumps([organization, hour.isoformat(), api_key, source_key]),
                bucket_start=hour, bucket_width="1h", api_key_id=api_key, amount_usd=share,
                cost_basis="allocated", **line)
    table = pa.table({c: pa.array(v, type=_ARROW_TYPES.get(c, pa.string()))
                      for c, v in out.items()})
    conn.register("incoming_allocations", table)
    conn.execute(f"INSERT INTO cost_allocated ({', '.join(_ALLOCATED_COLUMNS)}) "
                 f"SELECT {', '.join(_ALLOCATED_COLUMNS)} FROM incoming_allocations")
    conn.unregister("incoming_allocations")
    _record_unfollowed(conn, organization, usage, followed)
    return len(out["row_key"])


def _record_unfollowed(conn: duckdb.DuckDBPyConnection, organization: str,
                       usage: dict[str | None, list[dict[str, Any]]],
                       followed: set[tuple[str, str]]) -> None:
    """Usage no cost line follows stays estimated (``usage_unbilled``), never $0."""
    rows: dict[str, list[Any]] = {"row_key": [], "component": [], "organization": [],
                                  "bucket_start": []}
    for workspace_rows in usage.values():
        for r in workspace_rows:
            for column in (*WEIGHT_COLUMN.values(), "web_search_requests"):
                if r[column] > 0 and (r["row_key"], column) not in followed:
                    rows["row_key"].append(r["row_key"])
                    rows["component"].append(column)
                    rows["organization"].append(organization)
                    rows["bucket_start"].append(r["bucket_start"])
    if not rows["row_key"]:
        return
    conn.register("incoming_unbilled", pa.table({
        c: pa.array(v, type=_ARROW_TYPES.get(c, pa.string())) for c, v in rows.items()}))
    conn.execute("INSERT INTO usage_unbilled SELECT row_key, component, organization, "
                 "bucket_start FROM incoming_unbilled")
    conn.unregister("incoming_unbilled")
