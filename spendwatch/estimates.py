"""Estimated cost of stored usage rows, kept beside them in ``usage_estimates``.

Every usage row is priced when it is written, in SQL: a join against the price table laid
out as a relation (:func:`spendwatch.pricing.unit_price_rows`, per model, tier, context
window, speed, inference geo and span of UTC days), the SQL twin of
:meth:`spendwatch.pricing.PriceTable.estimate` (``tests/test_estimates_sql.py`` holds the two
equal). Rows of the price cut (spendwatch.cuts) are priced exactly; rows of every other cut get
their share of the price cut's estimate of the same hour (:func:`write_estimates`), so US-only
inference and fast mode are priced even where a row does not say which of its tokens had them.
The table's fingerprint is kept in ``meta``; when prices change (a new shipped file, a config
override), :func:`ensure_current` reprices every stored row in one transaction: a handful of
statements, whatever the number of rows.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Sequence

import duckdb

from spendwatch import facts, storage
from spendwatch.pricing import (UNIT_PRICE_COLUMNS, PriceTable, TokenCounts, priced_models,
                                sql_canonical_model, sql_no_price_reason, sql_price_match,
                                unit_price_rows, web_search_rows)

log = logging.getLogger(__name__)

ESTIMATE_COLUMNS = ("est_input_usd", "est_cache_write_5m_usd", "est_cache_write_1h_usd",
                    "est_cache_read_usd", "est_output_usd", "est_web_search_usd")
_COMPONENT_OF = dict(zip(ESTIMATE_COLUMNS, ("input", "cache_write_5m", "cache_write_1h",
                                            "cache_read", "output", "web_search")))
_DOLLARS = "DECIMAL(38, 12)"
FINGERPRINT_KEY = "price_table_fingerprint"


def estimate_row(table: PriceTable, model: str | None, bucket_start: datetime,
                 service_tier: str | None, context_window: str | None, tokens: TokenCounts,
                 web_search_requests: int, inference_geo: str | None = None,
                 speed: str | None = None) -> tuple[list[Decimal | None], str | None]:
    """(one value per ESTIMATE_COLUMNS, unpriced reason) for one usage row, priced in Python
    with :meth:`PriceTable.estimate`: the reference the SQL pricing below is tested against
    (``tests/test_estimates_sql.py``); stored rows are priced by :func:`write_estimates`."""
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
MATCH_OF: dict[str, tuple[str, ...]] = {"products": ("model", "service_tier")}
_TOKENS = ("uncached_input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
           "cache_read_tokens", "output_tokens")
_TOKEN_COLUMNS = ESTIMATE_COLUMNS[:5]
#: 10^12: estimates are DECIMAL(38, 12); a share is computed on these integer units.
_UNITS = 1_000_000_000_000


# --- the price table as relations ------------------------------------------------------------

#: A relation's columns: name -> (SQL type, values), for spendwatch.storage.temp_table.
_Columns = dict[str, tuple[str, list[Any]]]
_RELATIONS: dict[str, tuple[_Columns, _Columns, _Columns]] = {}


def _exact(values: list[Any]) -> list[str | None]:
    """Decimals as their exact text (cast to DECIMAL by the relation's SQL type)."""
    return [None if v is None else str(v) for v in values]


def _relations(table: PriceTable) -> tuple[_Columns, _Columns, _Columns]:
    """The price table as relations' columns (built once per fingerprint)."""
    found = _RELATIONS.get(table.fingerprint)
    if found is None:
        names = ["model", "service_tier", "long_context", "speed", "inference_geo",
                 "valid_from", "valid_to", *UNIT_PRICE_COLUMNS, "batch_multiplier"]
        rows = unit_price_rows(table)
        per_token = "DECIMAL(18, 12)"
        types = ["VARCHAR", "VARCHAR", "BOOLEAN", "VARCHAR", "VARCHAR", "DATE", "DATE",
                 *([per_token] * len(UNIT_PRICE_COLUMNS)), per_token]
        units: _Columns = {
            n: (t, [r[i] for r in rows] if t != per_token else _exact([r[i] for r in rows]))
            for i, (n, t) in enumerate(zip(names, types))}
        web = web_search_rows(table)
        searches: _Columns = {"model": ("VARCHAR", [r[0] for r in web]),
                              "valid_from": ("DATE", [r[1] for r in web]),
                              "valid_to": ("DATE", [r[2] for r in web]),
                              "usd_per_request": (_DOLLARS, _exact([r[3] for r in web]))}
        models: _Columns = {"model": ("VARCHAR", list(priced_models(table)))}
        found = _RELATIONS[table.fingerprint] = (units, searches, models)
    return found


def register_prices(conn: duckdb.DuckDBPyConnection, table: PriceTable) -> None:
    """Make ``unit_prices``, ``web_search_prices`` and ``priced_models`` (the price table as
    relations, :func:`spendwatch.pricing.unit_price_rows`) readable by SQL on ``conn``:
    temporary tables of the connection (spendwatch.storage.temp_table)."""
    units, searches, models = _relations(table)
    storage.temp_table(conn, "unit_prices", units)
    storage.temp_table(conn, "web_search_prices", searches)
    storage.temp_table(conn, "priced_models", models)


def utc_day(column: str) -> str:
    """The UTC day of a TIMESTAMPTZ column, in SQL: whole days since the epoch (integer
    arithmetic, whatever the session's zone; a fifth of the cost of converting to UTC with
    ``timezone('UTC', ...)``, which a year's savings ledger did 700,000 times)."""
    return f"(DATE '1970-01-01' + (epoch_us({column}) // 86400000000)::INTEGER)"


def priced_sql(source: str, keep: Sequence[str], window: str, geo: str, speed: str,
               last: Sequence[str] = ()) -> str:
    """SELECT ``keep`` of the rows of ``source`` (aliased u), each one's estimate (the
    ESTIMATE_COLUMNS, ``unpriced_reason``) and then ``last`` of the rows, priced with
    ``window``, ``geo`` and ``speed`` (SQL expressions over u, NULL for a dimension the row
    does not know): the SQL twin of :func:`estimate_row`, which the tests hold it to. Needs
    :func:`register_prices`."""
    day = utc_day("u.bucket_start")
    has_tokens = " OR ".join(f"u.{t} <> 0" for t in _TOKENS)
    search_price = "coalesce(wm.usd_per_request, w.usd_per_request)"
    reason = f"""CASE
            WHEN ({has_tokens}) AND u.model IS NULL THEN 'tokens without a model'
            WHEN ({has_tokens}) AND p.model IS NULL THEN {sql_no_price_reason("u", "m", speed)}
            WHEN u.web_search_requests <> 0 AND {search_price} IS NULL
                THEN 'no price for web search'
            END"""
    tokens = [f"CASE WHEN NOT ({has_tokens}) THEN 0::DECIMAL(38, 12) "
              f"ELSE (u.{t} * p.{c})::DECIMAL(38, 12) END"
              for t, c in zip(_TOKENS, UNIT_PRICE_COLUMNS)]
    search = ("CASE WHEN u.web_search_requests = 0 THEN 0::DECIMAL(38, 12) "
              f"ELSE (u.web_search_requests * {search_price})::DECIMAL(38, 12) END")
    inner = ", ".join(f"{v} AS {c}" for v, c in zip([*tokens, search], ESTIMATE_COLUMNS))
    outer = ", ".join(f"CASE WHEN x.unpriced_reason IS NULL THEN x.{c} END AS {c}"
                      for c in ESTIMATE_COLUMNS)
    kept = ", ".join(f"u.{k}" for k in (*keep, *[c for c in last if c not in keep]))
    trailing = "".join(f", x.{k}" for k in last)
    return f"""
        SELECT {", ".join(f"x.{k}" for k in keep)}, {outer}, x.unpriced_reason{trailing}
        FROM (
            SELECT {kept}, {inner}, {reason} AS unpriced_reason
            FROM ({source}) u
            LEFT JOIN unit_prices p ON {sql_price_match("u", "p", day, window, geo, speed)}
            LEFT JOIN web_search_prices wm ON wm.model = {sql_canonical_model("u.model")}
                AND {day} >= wm.valid_from AND {day} < wm.valid_to
            LEFT JOIN web_search_prices w ON w.model = '*'
                AND {day} >= w.valid_from AND {day} < w.valid_to
            LEFT JOIN priced_models m ON m.model = {sql_canonical_model("u.model")}) x"""


def _share(value: str, exact: str, plain: str) -> str:
    """value x exact / plain, rounded half up to 12 decimals, exactly (integer units:
    DuckDB divides DECIMALs as DOUBLE)."""
    a, b, c = (f"({x} * {_UNITS})::HUGEINT" for x in (value, exact, plain))
    return (f"(((2 * {a} * {b} + {c}) // (2 * {c}))::DECIMAL(38, 0) "
            f"* 0.000000000001::DECIMAL(38, 12))::DECIMAL(38, 12)")


def _estimates_sql(rows: str, own_geo: str, own_speed: str, price_where: str,
                   match: Sequence[str]) -> str:
    """The estimates (row_key, ESTIMATE_COLUMNS, unpriced_reason) of ``rows`` (a SELECT),
    each priced with the dimensions it has and then given its share of the price cut's exact
    estimate of its group (organization, hour, ``match``): see :func:`write_estimates`."""
    own = priced_sql(rows, ("row_key", "organization", "bucket_start", *match),
                     "u.context_window", own_geo, own_speed)
    known_window = "u.context_window" if "context_window" in match else "NULL"
    known_speed = "u.speed" if "speed" in match else "NULL"
    # Only token columns are shared: the price cut's searches neither add to the factors nor
    # leave a group unpriced (as a row of its own, each search is priced as it is).
    price_rows = (f"SELECT * REPLACE (0 AS web_search_requests) FROM usage_cuts "
                  f"WHERE cut = 'price' AND ({price_where})")
    exact = priced_sql(price_rows, ("row_key", "organization", "bucket_start", *match),
                       "u.context_window", "u.inference_geo", "u.speed")
    plain = priced_sql(price_rows, ("row_key",), known_window, "NULL", known_speed)
    group = ("organization", "bucket_start", *match)
    sums = ", ".join(
        f"sum(e.{c}) FILTER (WHERE e.unpriced_reason IS NULL) AS exact_{i}, "
        f"coalesce(sum(p.{c}) FILTER (WHERE e.unpriced_reason IS NULL), 0) AS plain_{i}"
        for i, c in enumerate(_TOKEN_COLUMNS))
    on = " AND ".join(f"f.{k} IS NOT DISTINCT FROM o.{k}" for k in group)
    values = []
    for i, c in enumerate(ESTIMATE_COLUMNS):
        if i < len(_TOKEN_COLUMNS):
            value = (f"CASE WHEN f.organization IS NOT NULL AND o.unpriced_reason IS NULL "
                     f"AND f.plain_{i} <> 0 AND o.{c} IS NOT NULL "
                     f"THEN {_share(f'o.{c}', f'f.exact_{i}', f'f.plain_{i}')} ELSE o.{c} END")
        else:
            value = f"o.{c}"
        values.append(f"CASE WHEN o.unpriced_reason IS NULL AND f.reason IS NOT NULL "
                      f"THEN NULL ELSE {value} END")
    return f"""
        WITH own AS ({own}),
        exact AS ({exact}),
        plain AS ({plain}),
        factors AS (
            SELECT {", ".join(f"e.{k}" for k in group)}, {sums},
                   min(e.unpriced_reason) AS reason
            FROM exact e JOIN plain p USING (row_key)
            GROUP BY {", ".join(f"e.{k}" for k in group)})
        SELECT o.row_key, {", ".join(values)},
               coalesce(o.unpriced_reason, f.reason) AS unpriced_reason,
               o.organization, o.bucket_start
        FROM own o LEFT JOIN factors f ON {on}"""


#: The columns of ``usage_estimates`` and ``cut_estimates``, in order (what an INSERT names).
STORED_COLUMNS = ("row_key", *ESTIMATE_COLUMNS, "unpriced_reason", "organization",
                  "bucket_start")
_INSERT = "INSERT INTO {table} (" + ", ".join(STORED_COLUMNS) + ") "


def _delete(conn: duckdb.DuckDBPyConnection, estimates: str, rows: str, where_sql: str,
            params: Sequence[Any], cut: str | None = None) -> None:
    """Drop the estimates of the ``rows`` matching ``where_sql`` (over organization and
    bucket_start, which the estimates carry too; "true" for all of them) and, in
    ``usage_cuts``, of ``cut`` only."""
    if cut is None:
        conn.execute(f"DELETE FROM {estimates}" if where_sql == "true"
                     else f"DELETE FROM {estimates} WHERE {where_sql}", list(params))
    else:
        conn.execute(f"DELETE FROM {estimates} WHERE ({where_sql}) AND row_key IN "
                     f"(SELECT row_key FROM {rows} WHERE ({where_sql}) AND cut = ?)",
                     [*params, *params, cut])


def write_estimates(conn: duckdb.DuckDBPyConnection, table: PriceTable, where_sql: str,
                    params: Sequence[Any]) -> None:
    """(Re)price the key cut's usage rows matching ``where_sql`` (columns organization,
    bucket_start, ...), with the price cut's shares, in SQL (one DELETE, one INSERT); call
    inside the writer's transaction.

    A key-cut row knows model, tier and context window but not inference geo or speed:
    priced with what it knows, it then gets its share of the price cut's exact estimate of the
    same organization, hour, model, tier and window (US-only inference, fast mode), so the
    group's rows add up to the price cut's estimate. A group the price cut does not have (not
    read yet, or a cut the key cannot read) keeps the plain estimate; a group with an
    unpriced price-cut row is unpriced.
    """
    register_prices(conn, table)
    _delete(conn, "usage_estimates", "usage_hourly", where_sql, params)
    sql = _estimates_sql(f"SELECT * FROM usage_hourly WHERE {where_sql}", "NULL", "NULL",
                         where_sql, KEY_MATCH)
    conn.execute(_INSERT.format(table="usage_estimates") + sql, [*params, *params, *params])


def write_cut_estimates(conn: duckdb.DuckDBPyConnection, table: PriceTable, where_sql: str,
                        params: Sequence[Any], cut: str | None = None) -> None:
    """(Re)price the other cuts' usage rows matching ``where_sql`` (hours: organization,
    bucket_start), of every cut or of ``cut``: the price cut exactly (every dimension that
    changes a price is known), the others with its shares over the same hours (matched by
    model, tier and speed; the products cut, which has no speed, by model and tier)."""
    register_prices(conn, table)
    _delete(conn, "cut_estimates", "usage_cuts", where_sql, params, cut)
    if cut in (None, "price"):
        exact = priced_sql(f"SELECT * FROM usage_cuts WHERE cut = 'price' AND ({where_sql})",
                           ("row_key",), "u.context_window", "u.inference_geo", "u.speed",
                           last=("organization", "bucket_start"))
        conn.execute(_INSERT.format(table="cut_estimates") + exact, list(params))
    # (which rows, their parameters, what they share the price cut's estimate by)
    groups: list[tuple[str, list[Any], tuple[str, ...]]]
    if cut is None:
        groups = [(f"cut = '{name}'", [], match) for name, match in MATCH_OF.items()]
        groups.append(("cut NOT IN ('price', " + ", ".join(f"'{m}'" for m in MATCH_OF) + ")",
                       [], CUT_MATCH))
    else:
        groups = [] if cut == "price" else [("cut = ?", [cut], MATCH_OF.get(cut, CUT_MATCH))]
    for which, extra, match in groups:
        rows = f"SELECT * FROM usage_cuts WHERE ({where_sql}) AND {which}"
        sql = _estimates_sql(rows, "u.inference_geo", "u.speed", where_sql, match)
        conn.execute(_INSERT.format(table="cut_estimates") + sql,
                     [*params, *extra, *params, *params])


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
    rows = conn.execute("SELECT value FROM meta WHERE key = ?", [FINGERPRINT_KEY]).fetchall()
    if rows and rows[0][0] == table.fingerprint:
        return False
    reprice_window(conn, table, "true", [])
    facts.reprice(conn)
    storage.set_meta(conn, FINGERPRINT_KEY, table.fingerprint)
    log.info("prices changed: repriced every stored usage row")
    return True
