"""Estimated cost of stored usage rows, kept beside them in ``usage_estimates``.

Every usage row is priced with :meth:`spendwatch.pricing.PriceTable.estimate` when it is
written. The table's fingerprint is kept in ``meta``; when prices change (a new shipped file,
a config override), :func:`ensure_current` reprices every stored row in one transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterable, Sequence

import duckdb
import pyarrow as pa

from spendwatch.pricing import PriceTable, TokenCounts

log = logging.getLogger(__name__)

ESTIMATE_COLUMNS = ("est_input_usd", "est_cache_write_5m_usd", "est_cache_write_1h_usd",
                    "est_cache_read_usd", "est_output_usd", "est_web_search_usd")
_COMPONENT_OF = dict(zip(ESTIMATE_COLUMNS, ("input", "cache_write_5m", "cache_write_1h",
                                            "cache_read", "output", "web_search")))
_USAGE_FIELDS = ("row_key", "bucket_start", "model", "service_tier", "context_window",
                 "uncached_input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
                 "cache_read_tokens", "output_tokens", "web_search_requests")
_DOLLARS = pa.decimal128(38, 12)
FINGERPRINT_KEY = "price_table_fingerprint"


def estimate_row(table: PriceTable, model: str | None, bucket_start: datetime,
                 service_tier: str | None, context_window: str | None, tokens: TokenCounts,
                 web_search_requests: int) -> tuple[list[Decimal | None], str | None]:
    """(one value per ESTIMATE_COLUMNS, unpriced reason) for one stored usage row.

    Stored rows carry no inference_geo or speed (see spendwatch.pricing); a 200k-1M context
    window puts Haiku 5.5 on its over-100k rate.
    """
    estimate = table.estimate(model, bucket_start.astimezone(timezone.utc).date(), tokens,
                              service_tier=service_tier,
                              long_context=context_window == "200k-1M",
                              web_search_requests=web_search_requests)
    if not estimate.priced:
        return [None] * len(ESTIMATE_COLUMNS), estimate.unpriced_reason
    return [estimate.by_component.get(_COMPONENT_OF[c], Decimal(0)) for c in ESTIMATE_COLUMNS], None


def _arrow(records: Iterable[Sequence[Any]], table: PriceTable) -> pa.Table:
    columns: dict[str, list[Any]] = {c: [] for c in ("row_key", *ESTIMATE_COLUMNS,
                                                     "unpriced_reason")}
    for (row_key, bucket_start, model, tier, window, uncached, w5m, w1h, read, output,
         searches) in records:
        values, reason = estimate_row(table, model, bucket_start, tier, window,
                                      TokenCounts(uncached, w5m, w1h, read, output), searches)
        columns["row_key"].append(row_key)
        for column, value in zip(ESTIMATE_COLUMNS, values):
            columns[column].append(value)
        columns["unpriced_reason"].append(reason)
    return pa.table({c: pa.array(v, type=_DOLLARS if c in ESTIMATE_COLUMNS else pa.string())
                     for c, v in columns.items()})


def write_estimates(conn: duckdb.DuckDBPyConnection, table: PriceTable, where_sql: str,
                    params: Sequence[Any]) -> None:
    """(Re)price the usage rows matching ``where_sql``; call inside the writer's transaction."""
    records = conn.execute(f"SELECT {', '.join(_USAGE_FIELDS)} FROM usage_hourly "
                           f"WHERE {where_sql}", list(params)).fetchall()
    conn.execute("DELETE FROM usage_estimates WHERE row_key IN "
                 f"(SELECT row_key FROM usage_hourly WHERE {where_sql})", list(params))
    if not records:
        return
    conn.register("incoming_estimates", _arrow(records, table))
    conn.execute("INSERT INTO usage_estimates SELECT * FROM incoming_estimates")
    conn.unregister("incoming_estimates")


def delete_orphans(conn: duckdb.DuckDBPyConnection) -> None:
    """Drop estimates whose usage row is gone (a re-read window lost a row)."""
    conn.execute("DELETE FROM usage_estimates WHERE row_key NOT IN "
                 "(SELECT row_key FROM usage_hourly)")


def ensure_current(conn: duckdb.DuckDBPyConnection, table: PriceTable) -> bool:
    """Reprice every stored row if the price table changed since they were priced.

    Call inside a transaction. Returns True when it repriced.
    """
    row = conn.execute("SELECT value FROM meta WHERE key = ?", [FINGERPRINT_KEY]).fetchone()
    if row and row[0] == table.fingerprint:
        return False
    write_estimates(conn, table, "true", [])
    conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                 "value = excluded.value", [FINGERPRINT_KEY, table.fingerprint])
    log.info("prices changed: repriced every stored usage row")
    return True
