"""Estimated cost of stored usage rows, kept beside them in ``usage_estimates``.

Every usage row is priced with :meth:`spendwatch.pricing.PriceTable.estimate` when it is
written: rows of the price cut (spendwatch.cuts) exactly, rows of every other cut with their
share of the price cut's estimate (:func:`price_factors`), so US-only inference and fast mode
are priced even where a row does not say which of its tokens had them. The table's fingerprint is kept in ``meta``; when prices change (a new shipped file,
a config override), :func:`ensure_current` reprices every stored row in one transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterable, Sequence

import duckdb
import pyarrow as pa

from spendwatch import facts
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
                 web_search_requests: int, inference_geo: str | None = None,
                 speed: str | None = None) -> tuple[list[Decimal | None], str | None]:
    """(one value per ESTIMATE_COLUMNS, unpriced reason) for one stored usage row, priced with
    the dimensions it has (a key-cut row has no inference geo or speed: see
    :func:`price_factors`); a 200k-1M context window puts Haiku 5.5 on its over-100k rate.
    """
    estimate = table.estimate(model, bucket_start.astimezone(timezone.utc).date(), tokens,
                              service_tier=service_tier, inference_geo=inference_geo,
                              speed=speed,
                              long_context=context_window == "200k-1M",
                              web_search_requests=web_search_requests)
    if not estimate.priced:
        return [None] * len(ESTIMATE_COLUMNS), estimate.unpriced_reason
    return [estimate.by_component.get(_COMPONENT_OF[c], Decimal(0)) for c in ESTIMATE_COLUMNS], None


#: How a cut's rows find their share of the price cut: the dimensions they have in common.
KEY_MATCH = ("model", "service_tier", "context_window")
CUT_MATCH = ("model", "service_tier", "speed")
#: A cut that knows neither context window nor speed (the products cut) shares by these.
MATCH_OF = {"products": ("model", "service_tier")}
_PRICE_FIELDS = ("bucket_start", "model", "service_tier", "context_window", "inference_geo",
                 "speed", "uncached_input_tokens", "cache_write_5m_tokens",
                 "cache_write_1h_tokens", "cache_read_tokens", "output_tokens")
_TOKEN_COLUMNS = ESTIMATE_COLUMNS[:5]
_QUANTUM = Decimal(1).scaleb(-12)

Factors = dict[tuple[Any, ...], "Factor"]


class Factor:
    """What the price cut knows of one (organization, hour, shared dimensions) group: per
    token column, its exact estimate over its plain one (the one a row without inference geo
    or speed, or without context window, gets), or why it cannot be priced."""

    __slots__ = ("exact", "plain", "reason")

    def __init__(self) -> None:
        self.exact = [Decimal(0)] * len(_TOKEN_COLUMNS)
        self.plain = [Decimal(0)] * len(_TOKEN_COLUMNS)
        self.reason: str | None = None

    def apply(self, values: list[Decimal | None]) -> list[Decimal | None]:
        out = list(values)
        for i, (exact, plain) in enumerate(zip(self.exact, self.plain)):
            value = out[i]
            if value is not None and plain:
                out[i] = (value * exact / plain).quantize(_QUANTUM)
        return out


def price_factors(conn: duckdb.DuckDBPyConnection, table: PriceTable, where_sql: str,
                  params: Sequence[Any], match: Sequence[str]) -> Factors:
    """The price cut's factors for the rows of ``where_sql``, grouped by ``match``.

    A key-cut row knows model, tier and context window but not inference geo or speed; a
    people-cut row knows speed but not geo or context window. Priced with what it knows and
    times its group's factor, each row gets its share of the price cut's exact estimate (the
    US-only 1.1x, fast mode, Haiku 5.5's long-context rate): the group's rows add up to the
    price cut's estimate. A group the price cut does not have (not read yet, or a cut the key
    cannot read) keeps the plain estimate.
    """
    records = conn.execute(
        f"SELECT organization, {', '.join(_PRICE_FIELDS)} FROM usage_cuts "
        f"WHERE cut = 'price' AND {where_sql}", list(params)).fetchall()
    factors: Factors = {}
    for org, start, model, tier, window, geo, speed, *counts in records:
        tokens = TokenCounts(*counts)
        row = dict(model=model, service_tier=tier, context_window=window, speed=speed)
        key = (org, start, *(row[m] for m in match))
        factor = factors.get(key)
        if factor is None:
            factor = factors[key] = Factor()
        exact, reason = estimate_row(table, model, start, tier, window, tokens, 0,
                                     inference_geo=geo, speed=speed)
        known = {m: row[m] for m in match}
        plain, _ = estimate_row(table, model, start, tier, known.get("context_window"), tokens,
                                0, speed=known.get("speed"))
        if reason is not None:
            factor.reason = factor.reason or reason
            continue
        for i in range(len(_TOKEN_COLUMNS)):
            factor.exact[i] += exact[i] or Decimal(0)
            factor.plain[i] += plain[i] or Decimal(0)
    return factors


def _arrow(records: Iterable[Sequence[Any]], table: PriceTable, factors: Factors,
           match: Sequence[str], fields: Sequence[str]) -> pa.Table:
    """Estimates of ``records`` (columns ``fields``), each priced with the dimensions it has,
    then times its group's factor (rows of a group the factors do not have: as priced)."""
    columns: dict[str, list[Any]] = {c: [] for c in ("row_key", *ESTIMATE_COLUMNS,
                                                     "unpriced_reason")}
    for record in records:
        row = dict(zip(fields, record))
        values, reason = estimate_row(
            table, row["model"], row["bucket_start"], row["service_tier"],
            row.get("context_window"),
            TokenCounts(row["uncached_input_tokens"], row["cache_write_5m_tokens"],
                        row["cache_write_1h_tokens"], row["cache_read_tokens"],
                        row["output_tokens"]),
            row["web_search_requests"], inference_geo=row.get("inference_geo"),
            speed=row.get("speed"))
        factor = factors.get((row["organization"], row["bucket_start"],
                              *(row.get(m) for m in match)))
        if factor is not None and reason is None:
            if factor.reason is not None:
                values, reason = [None] * len(ESTIMATE_COLUMNS), factor.reason
            else:
                values = factor.apply(values)
        columns["row_key"].append(row["row_key"])
        for column, value in zip(ESTIMATE_COLUMNS, values):
            columns[column].append(value)
        columns["unpriced_reason"].append(reason)
    return pa.table({c: pa.array(v, type=_DOLLARS if c in ESTIMATE_COLUMNS else pa.string())
                     for c, v in columns.items()})


def write_estimates(conn: duckdb.DuckDBPyConnection, table: PriceTable, where_sql: str,
                    params: Sequence[Any]) -> None:
    """(Re)price the key cut's usage rows matching ``where_sql`` (columns organization,
    bucket_start, ...), with the price cut's factors; call inside the writer's transaction."""
    fields = ("organization", *_USAGE_FIELDS)
    records = conn.execute(f"SELECT {', '.join(fields)} FROM usage_hourly "
                           f"WHERE {where_sql}", list(params)).fetchall()
    conn.execute("DELETE FROM usage_estimates WHERE row_key IN "
                 f"(SELECT row_key FROM usage_hourly WHERE {where_sql})", list(params))
    if not records:
        return
    factors = price_factors(conn, table, where_sql, params, KEY_MATCH)
    conn.register("incoming_estimates", _arrow(records, table, factors, KEY_MATCH, fields))
    conn.execute("INSERT INTO usage_estimates SELECT * FROM incoming_estimates")
    conn.unregister("incoming_estimates")


_CUT_FIELDS = ("row_key", "organization", "cut", "bucket_start", "model", "service_tier",
               "context_window", "inference_geo", "speed", "uncached_input_tokens",
               "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens",
               "output_tokens", "web_search_requests")


def write_cut_estimates(conn: duckdb.DuckDBPyConnection, table: PriceTable, where_sql: str,
                        params: Sequence[Any], cut: str | None = None) -> None:
    """(Re)price the other cuts' usage rows matching ``where_sql`` (hours: organization,
    bucket_start), of every cut or of ``cut``: the price cut exactly (every dimension that
    changes a price is known), the others with its factors over the same hours."""
    rows_sql, rows_params = where_sql, list(params)
    if cut is not None:
        rows_sql, rows_params = f"({where_sql}) AND cut = ?", [*params, cut]
    records = conn.execute(f"SELECT {', '.join(_CUT_FIELDS)} FROM usage_cuts "
                           f"WHERE {rows_sql}", rows_params).fetchall()
    conn.execute("DELETE FROM cut_estimates WHERE row_key IN "
                 f"(SELECT row_key FROM usage_cuts WHERE {rows_sql})", rows_params)
    if not records:
        return
    exact = [r for r in records if r[2] == "price"]
    batches = []
    if exact:
        batches.append(_arrow(exact, table, {}, (), _CUT_FIELDS))  # every price dimension known
    for match in {MATCH_OF.get(r[2], CUT_MATCH) for r in records if r[2] != "price"}:
        shared = [r for r in records
                  if r[2] != "price" and MATCH_OF.get(r[2], CUT_MATCH) == match]
        factors = price_factors(conn, table, where_sql, params, match)
        batches.append(_arrow(shared, table, factors, match, _CUT_FIELDS))
    for batch in batches:
        conn.register("incoming_estimates", batch)
        conn.execute("INSERT INTO cut_estimates SELECT * FROM incoming_estimates")
        conn.unregister("incoming_estimates")


def reprice_window(conn: duckdb.DuckDBPyConnection, table: PriceTable, where_sql: str,
                   params: Sequence[Any]) -> None:
    """Every usage row of ``where_sql``, every cut: after the price cut's rows changed."""
    write_estimates(conn, table, where_sql, params)
    write_cut_estimates(conn, table, where_sql, params)


def delete_orphans(conn: duckdb.DuckDBPyConnection) -> None:
    """Drop estimates whose usage row is gone (a re-read window lost a row)."""
    conn.execute("DELETE FROM usage_estimates WHERE row_key NOT IN "
                 "(SELECT row_key FROM usage_hourly)")
    conn.execute("DELETE FROM cut_estimates WHERE row_key NOT IN "
                 "(SELECT row_key FROM usage_cuts)")


def ensure_current(conn: duckdb.DuckDBPyConnection, table: PriceTable) -> bool:
    """Reprice every stored row if the price table changed since they were priced.

    Call inside a transaction. Returns True when it repriced.
    """
    row = conn.execute("SELECT value FROM meta WHERE key = ?", [FINGERPRINT_KEY]).fetchone()
    if row and row[0] == table.fingerprint:
        return False
    reprice_window(conn, table, "true", [])
    facts.rebuild(conn)
    conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                 "value = excluded.value", [FINGERPRINT_KEY, table.fingerprint])
    log.info("prices changed: repriced every stored usage row")
    return True
