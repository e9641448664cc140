"""Facts: every dollar and token, one row per bucket, dimensions and cache status, with its
basis, stored in the ``facts`` table that every spend query reads.

A fact is billed (the cost API), allocated (legacy daily cost split across keys), or estimated
(usage x price table, for hours the cost API has not reported). Token rows carry no cost; cost
rows no tokens. Each cut of the API's data (``spendwatch.cuts``; ``key`` for the key cut of
``usage_hourly`` / ``cost_buckets``) has its own facts, told apart by ``cut``.

Beside them, ``facts_daily`` holds the hourly facts summed per UTC day: every dimension a spend
query groups or filters by but the cost basis (so an hour's billed cost and its tokens are one
row), the token type kept; the hour, context window, provisional flag and unpriced reason summed
away. :func:`refresh` and :func:`rebuild` keep it in the same transaction as ``facts``, so a
spend query of a week not by cost basis reads its whole UTC days there (a sixth of the rows) and
only the hours at its edges, and the legacy whole-day lines, in ``facts``.

Two definitions, one SQL: the views ``spend_facts`` (key cut) and ``cut_facts`` (the other
cuts) compute facts from the raw rows over all history, and :func:`refresh` stores the same
rows for one organization and range in ``facts``. The window write (``collectors.sync``) calls
:func:`refresh` in its own transaction for the hours it replaced (the key cut's whole UTC
day: its legacy cost is split per day), a reprice calls :func:`rebuild`; so a reader of
``facts`` sees exactly what the views would compute, at the cost of the range it asks for,
whatever history holds. A test compares the two after backfills, re-reads, revisions,
reprices and dropped rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Sequence

import duckdb

from spendwatch.timeutil import ceil_day, floor_day

#: (usage column, token type, estimate column, cost type) of each usage part.
_USAGE_PARTS = (("uncached_input_tokens", "uncached_input_tokens", "est_input_usd", "tokens"),
                ("cache_write_5m_tokens", "cache_creation.ephemeral_5m_input_tokens",
                 "est_cache_write_5m_usd", "tokens"),
                ("cache_write_1h_tokens", "cache_creation.ephemeral_1h_input_tokens",
                 "est_cache_write_1h_usd", "tokens"),
                ("cache_read_tokens", "cache_read_input_tokens", "est_cache_read_usd", "tokens"),
                ("output_tokens", "output_tokens", "est_output_usd", "tokens"),
                ("web_search_requests", None, "est_web_search_usd", "web_search"))
_TOKEN_NAMES = [p[0] for p in _USAGE_PARTS]
#: The cut dimensions the key cut does not have (null in its facts).
_CUT_ONLY = ("inference_geo", "speed", "product", "actor_key", "actor_type", "rbac_group_id",
             "user_profile_id")
#: Every column of ``facts``, in order, with its type.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("cut", "VARCHAR NOT NULL"), ("organization", "VARCHAR NOT NULL"),
    ("bucket_start", "TIMESTAMPTZ NOT NULL"), ("bucket_width", "VARCHAR NOT NULL"),
    ("workspace_id", "VARCHAR"), ("api_key_id", "VARCHAR"), ("model", "VARCHAR"),
    ("service_tier", "VARCHAR"), ("context_window", "VARCHAR"),
    *((c, "VARCHAR") for c in _CUT_ONLY),
    ("cost_type", "VARCHAR"), ("token_type", "VARCHAR"),
    ("cost_usd", "DECIMAL(38, 12)"), ("list_cost_usd", "DECIMAL(38, 12)"),
    ("cost_basis", "VARCHAR"), ("provisional", "BOOLEAN"), ("unpriced_reason", "VARCHAR"),
    ("unpriced_tokens", "BIGINT"), *((c, "BIGINT") for c in _TOKEN_NAMES),
    ("requests", "BIGINT"))
_NAMES = ", ".join(c for c, _ in COLUMNS)
#: The key cut's columns after ``cut`` (spend_facts' shape).
_FACT_KEYS = ("organization, bucket_start, bucket_width, workspace_id, api_key_id, model, "
              "service_tier, context_window, cost_type, token_type")
_CUT_KEYS = ("organization, bucket_start, '1h' AS bucket_width, workspace_id, "
             "api_key_id, model, service_tier, context_window, inference_geo, speed, "
             "product, actor_key, actor_type, rbac_group_id, user_profile_id")
#: A range of one organization's buckets ($org, $start, $end), for :func:`refresh`.
_IN_RANGE = "{t}organization = $org AND {t}bucket_start >= $start AND {t}bucket_start < $end"
#: The cost buckets that overlap the range (a legacy day may start before it).
_OVERLAPS = "organization = $org AND bucket_end > $start AND bucket_start < $end"


BILLED_HOURS = "bucket_width = '1h'"


def _zero_tokens(except_column: str | None = None) -> str:
    return ", ".join(f"{c if c == except_column else '0'} AS {c}" for c in _TOKEN_NAMES)


#: The usage part that carries a usage row's request count (once per row): its output.
REQUESTS_PART = "output_tokens"


def _requests(column: str) -> str:
    """The request count of a usage part: the row's on its output part (NULL where the API
    does not report requests: the legacy API), none on the others."""
    return "u.requests" if column == REQUESTS_PART else "NULL"


def _has_part(column: str) -> str:
    """Whether a usage row has the part ``column`` (its output part too when it only has
    requests)."""
    if column == REQUESTS_PART:
        return f"(u.{column} <> 0 OR coalesce(u.requests, 0) <> 0)"
    return f"u.{column} <> 0"


def _where(condition: str, bounded: bool, table: str = "") -> str:
    """``condition`` AND the range of :func:`refresh` when ``bounded``."""
    if not bounded:
        return condition
    bound = _IN_RANGE.format(t=f"{table}." if table else "")
    return f"{condition} AND {bound}" if condition else bound


def _estimates_in_range(bounded: bool) -> str:
    """The range of :func:`refresh` on the estimates ``e`` too (they carry their row's
    organization and hour): the join then reads the range's estimates, not all of them."""
    return f" AND {_IN_RANGE.format(t='e.')}" if bounded else ""


def spend_facts_sql(bounded: bool = False) -> str:
    """The key cut's facts (over all history; of $org in [$start, $end) when ``bounded``)."""
    billed = (f"SELECT {_FACT_KEYS}, amount_usd AS cost_usd, list_amount_usd AS list_cost_usd, "
              f"'billed' AS cost_basis, provisional, NULL AS unpriced_reason, "
              f"0 AS unpriced_tokens, {_zero_tokens()}, NULL::BIGINT AS requests "
              f"FROM cost_buckets WHERE {_where(BILLED_HOURS, bounded)}")
    allocated = (f"SELECT {_FACT_KEYS}, amount_usd, NULL, cost_basis, provisional, NULL, 0, "
                 f"{_zero_tokens()}, NULL FROM cost_allocated"
                 + (f" WHERE {_where('', True)}" if bounded else ""))
    usage_keys = ("u.organization, u.bucket_start, '1h', u.workspace_id, u.api_key_id, u.model, "
                  "u.service_tier, u.context_window")
    parts = [billed, allocated]
    for column, token_type, estimate, cost_type in _USAGE_PARTS:
        token_sql = f"'{token_type}'" if token_type else "NULL"
        parts.append(
            f"SELECT {usage_keys}, '{cost_type}', {token_sql}, NULL, NULL, NULL, u.provisional, "
            f"NULL, 0, {_zero_tokens(column)}, {_requests(column)} FROM usage_hourly u "
            f"WHERE {_where(_has_part(column), bounded, 'u')}")
        parts.append(
            f"SELECT {usage_keys}, '{cost_type}', {token_sql}, e.{estimate}, e.{estimate}, "
            "'estimated', u.provisional, e.unpriced_reason, "
            f"CASE WHEN e.unpriced_reason IS NULL OR '{cost_type}' <> 'tokens' THEN 0 "
            f"ELSE u.{column} END, "
            f"{_zero_tokens()}, NULL FROM usage_hourly u JOIN usage_estimates e USING (row_key) "
            f"WHERE {_where(f'u.{column} <> 0', bounded, 'u')}{_estimates_in_range(bounded)} "
            "AND (NOT EXISTS (SELECT 1 FROM "
            "billed_buckets b WHERE b.organization = u.organization AND b.bucket_start <= "
            "u.bucket_start AND u.bucket_start < b.bucket_end) OR EXISTS (SELECT 1 FROM "
            f"usage_unbilled x WHERE x.row_key = u.row_key AND x.component = '{column}'))")
    return ("WITH billed_buckets AS (SELECT DISTINCT organization, bucket_start, bucket_end "
            f"FROM cost_buckets{' WHERE ' + _OVERLAPS if bounded else ''}) "
            + "\nUNION ALL\n".join(parts))


def cut_facts_sql(bounded: bool = False) -> str:
    """The other cuts' facts (spendwatch.cuts), in spend_facts' shape plus ``cut`` and the cut
    dimensions: billed where the cut's cost has been read for the hour, else estimated. With
    ``bounded``, of $org in [$start, $end) and the cuts in $cuts only."""
    u_keys = ("u.organization, u.bucket_start, '1h', u.workspace_id, u.api_key_id, u.model, "
              "u.service_tier, u.context_window, u.inference_geo, u.speed, u.product, u.actor_key, "
              "u.actor_type, u.rbac_group_id, u.user_profile_id")
    cuts = " AND {t}cut IN (SELECT unnest($cuts::VARCHAR[]))" if bounded else ""
    billed = (f"SELECT cut, {_CUT_KEYS}, cost_type, token_type, amount_usd AS cost_usd, "
              "list_amount_usd AS list_cost_usd, 'billed' AS cost_basis, provisional, "
              f"NULL AS unpriced_reason, 0 AS unpriced_tokens, {_zero_tokens()}, "
              "NULL::BIGINT AS requests FROM cost_cuts"
              + (f" WHERE {_where('', True)}{cuts.format(t='')}" if bounded else ""))
    parts = [billed]
    for column, token_type, estimate, cost_type in _USAGE_PARTS:
        token_sql = f"'{token_type}'" if token_type else "NULL"
        where = _where(f"u.{column} <> 0", bounded, "u") + cuts.format(t="u.")
        part = _where(_has_part(column), bounded, "u") + cuts.format(t="u.")
        parts.append(
            f"SELECT u.cut, {u_keys}, '{cost_type}', {token_sql}, NULL, NULL, NULL, "
            f"u.provisional, NULL, 0, {_zero_tokens(column)}, {_requests(column)} "
            f"FROM usage_cuts u WHERE {part}")
        parts.append(
            f"SELECT u.cut, {u_keys}, '{cost_type}', {token_sql}, e.{estimate}, e.{estimate}, "
            "'estimated', u.provisional, e.unpriced_reason, "
            f"CASE WHEN e.unpriced_reason IS NULL OR '{cost_type}' <> 'tokens' THEN 0 "
            f"ELSE u.{column} END, "
            f"{_zero_tokens()}, NULL FROM usage_cuts u JOIN cut_estimates e USING (row_key) "
            f"WHERE {where}{_estimates_in_range(bounded)} AND NOT EXISTS (SELECT 1 FROM billed_cut_buckets b WHERE "
            "b.organization = u.organization AND b.cut = u.cut "
            "AND b.bucket_start = u.bucket_start)")
    buckets = "SELECT DISTINCT organization, cut, bucket_start FROM cost_cuts"
    if bounded:
        buckets += f" WHERE {_where('', True)}{cuts.format(t='')}"
    return f"WITH billed_cut_buckets AS ({buckets}) " + "\nUNION ALL\n".join(parts)


SPEND_FACTS_VIEW = f"CREATE OR REPLACE VIEW spend_facts AS {spend_facts_sql()}"
CUT_FACTS_VIEW = f"CREATE OR REPLACE VIEW cut_facts AS {cut_facts_sql()}"
#: The key cut's facts in the columns of ``facts``.
_KEY_SELECT = ("SELECT 'key' AS cut, organization, bucket_start, bucket_width, workspace_id, "
               "api_key_id, model, service_tier, context_window, "
               + ", ".join(f"NULL AS {c}" for c in _CUT_ONLY)
               + ", cost_type, token_type, cost_usd, list_cost_usd, cost_basis, provisional, "
               "unpriced_reason, unpriced_tokens, " + ", ".join(_TOKEN_NAMES) + ", requests")
_CUT_SELECT = f"SELECT {_NAMES}"


#: The identity columns of a fact whose every stored combination ``fact_keys`` lists (what
#: the feature map is built from, without scanning the facts).
KEY_COLUMNS = ("cut", "organization", "workspace_id", "api_key_id", "product", "actor_key",
               "actor_type", "rbac_group_id")
_KEY_NAMES = ", ".join(KEY_COLUMNS)


#: The daily rollup's grouping columns (``bucket_start`` is the UTC day's midnight) and sums;
#: ``requests_unknown`` counts its usage rows that report no request count (the legacy API).
DAILY_KEYS = ("cut", "organization", "bucket_start", "workspace_id", "api_key_id", "model",
              "service_tier", *_CUT_ONLY, "cost_type", "token_type")
DAILY_SUMS = ("cost_usd", "list_cost_usd", "unpriced_tokens", *_TOKEN_NAMES, "requests")
#: A fact's count toward ``requests_unknown``: a usage row's output part with no request count.
REQUESTS_UNKNOWN_SQL = ("coalesce(token_type = 'output_tokens' AND cost_basis IS NULL "
                        "AND requests IS NULL, false)::BIGINT")
_UTC_DAY = "timezone('UTC', timezone('UTC', bucket_start)::DATE::TIMESTAMP)"
_DAILY_NAMES = ", ".join((*DAILY_KEYS, *DAILY_SUMS, "requests_unknown"))
_DAILY_SELECT = ("SELECT " + ", ".join(_UTC_DAY + " AS bucket_start" if c == "bucket_start"
                                       else c for c in DAILY_KEYS) + ", "
                 + ", ".join(f"sum({c})" for c in DAILY_SUMS)
                 + f", sum({REQUESTS_UNKNOWN_SQL}) FROM facts WHERE bucket_width = '1h'")


def create(conn: duckdb.DuckDBPyConnection) -> None:
    """The ``facts`` table (empty)."""
    columns = ",\n    ".join(f"{name} {kind}" for name, kind in COLUMNS)
    conn.execute(f"CREATE TABLE facts (\n    {columns}\n)")


def create_daily(conn: duckdb.DuckDBPyConnection) -> None:
    """The ``facts_daily`` table, filled from the stored facts."""
    types = dict(COLUMNS)
    conn.execute("CREATE TABLE facts_daily (" + ", ".join(
        f"{c} {types[c]}" for c in (*DAILY_KEYS, *DAILY_SUMS))
        + ", requests_unknown BIGINT NOT NULL)")
    _add_daily(conn, "true", {})


def _add_daily(conn: duckdb.DuckDBPyConnection, where: str, params: dict[str, object]) -> None:
    """The daily sums of the hourly facts ``where`` selects (whole UTC days)."""
    conn.execute(f"INSERT INTO facts_daily ({_DAILY_NAMES}) {_DAILY_SELECT} AND {where} "
                 "GROUP BY ALL ORDER BY bucket_start", params)


#: Each organization's sync_state in one value: its rows' count and the sum of their
#: ``updated_at`` (every window write, of any spendwatch version, sets its stream's).
_SYNC_FINGERPRINT = ("SELECT organization, count(*)::VARCHAR || ':' || "
                     "sum(epoch_us(updated_at))::VARCHAR AS synced FROM sync_state{where} "
                     "GROUP BY organization")


def create_daily_state(conn: duckdb.DuckDBPyConnection) -> None:
    """The ``daily_state`` table: per organization, the sync_state its daily sums agree with
    (a window write of this version records it in its transaction)."""
    conn.execute("CREATE TABLE daily_state (organization VARCHAR NOT NULL, "
                 "synced VARCHAR NOT NULL)")
    mark_daily(conn)


def mark_daily(conn: duckdb.DuckDBPyConnection, organization: str | None = None) -> None:
    """Record that ``organization``'s (None: every one's) daily sums agree with its facts as
    sync_state stands now. Call in the transaction that made them agree."""
    where, params = (" WHERE organization = $org", {"org": organization}) \
        if organization is not None else ("", {})
    conn.execute(f"DELETE FROM daily_state{where}", params)
    conn.execute("INSERT INTO daily_state (organization, synced) "
                 + _SYNC_FINGERPRINT.format(where=where), params)


def stale_organizations(conn: duckdb.DuckDBPyConnection) -> set[str]:
    """Organizations whose daily sums may disagree with their facts: a window write that did
    not record daily_state (an older spendwatch, which keeps no daily sums) has written them
    since. Spend reads their facts hour by hour; this version's next write of theirs sums
    their days again (:func:`heal_daily`)."""
    return {org for (org,) in conn.execute(
        f"SELECT s.organization FROM ({_SYNC_FINGERPRINT.format(where='')}) s "
        "LEFT JOIN daily_state d USING (organization) "
        "WHERE d.synced IS DISTINCT FROM s.synced").fetchall()}


def heal_daily(conn: duckdb.DuckDBPyConnection, organization: str) -> bool:
    """Sum all of ``organization``'s days again when its daily sums may be stale (see
    :func:`stale_organizations`); True when they were. Call in a write's transaction, before
    it changes sync_state, and :func:`mark_daily` after."""
    if organization not in stale_organizations(conn):
        return False
    conn.execute("DELETE FROM facts_daily WHERE organization = $org", {"org": organization})
    _add_daily(conn, "organization = $org", {"org": organization})
    return True


def create_keys(conn: duckdb.DuckDBPyConnection) -> None:
    """The ``fact_keys`` table, filled from the stored facts."""
    conn.execute("CREATE TABLE fact_keys (" + ", ".join(
        f"{c} VARCHAR{' NOT NULL' if c in ('cut', 'organization') else ''}"
        for c in KEY_COLUMNS) + ")")
    conn.execute(f"INSERT INTO fact_keys SELECT DISTINCT {_KEY_NAMES} FROM facts")


def _add_keys(conn: duckdb.DuckDBPyConnection, where: str, params: dict[str, object]) -> None:
    """New identity combinations of the facts ``where`` selects (never removed: a key that
    no longer spends keeps its feature)."""
    conn.execute(f"INSERT INTO fact_keys SELECT DISTINCT {_KEY_NAMES} FROM facts WHERE {where} "
                 f"EXCEPT SELECT {_KEY_NAMES} FROM fact_keys", params)


def rebuild(conn: duckdb.DuckDBPyConnection) -> None:
    """Every fact again from the raw rows (after a reprice, or a migration). Call in a
    transaction."""
    conn.execute("DELETE FROM facts")
    conn.execute(f"INSERT INTO facts ({_NAMES}) {_KEY_SELECT} FROM ({spend_facts_sql()}) "
                 f"ORDER BY bucket_start")
    conn.execute(f"INSERT INTO facts ({_NAMES}) {_CUT_SELECT} FROM ({cut_facts_sql()}) "
                 f"ORDER BY bucket_start")
    if has_table(conn, "fact_keys"):
        conn.execute("DELETE FROM fact_keys")
        _add_keys(conn, "true", {})
    if has_table(conn, "facts_daily"):
        conn.execute("DELETE FROM facts_daily")
        _add_daily(conn, "true", {})
    if has_table(conn, "daily_state"):
        mark_daily(conn)


def reprice(conn: duckdb.DuckDBPyConnection) -> None:
    """The facts again where they are estimated, after the estimates were repriced.

    Only an estimated fact depends on the price table, and a reprice changes no hour's
    billing: the facts are refreshed (:func:`refresh`) over each run of consecutive UTC days
    that holds an estimated fact, per cut and organization, not over the whole history. Call
    in a transaction."""
    runs = conn.execute("""
        WITH days AS (
            SELECT DISTINCT cut, organization, timezone('UTC', bucket_start)::DATE AS day
            FROM facts WHERE cost_basis = 'estimated'),
        numbered AS (
            SELECT *, day - (row_number() OVER (PARTITION BY cut, organization
                                                ORDER BY day))::INTEGER AS run
            FROM days)
        SELECT cut, organization, min(day), max(day) FROM numbered
        GROUP BY cut, organization, run ORDER BY 2, 1, 3""").fetchall()
    for cut, organization, first, last in runs:
        start = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
        end = datetime(last.year, last.month, last.day, tzinfo=timezone.utc) + timedelta(days=1)
        refresh(conn, organization, start, end, [cut])


def has_table(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether ``table`` exists (``fact_keys``: migration 8, ``facts_daily``: 14; the rebuilds
    of migrations 7 and 11 run before them)."""
    found = conn.execute("SELECT count(*) FROM information_schema.tables "
                         "WHERE table_name = ? AND table_catalog = current_database() "
                         "AND table_schema = current_schema()", [table]).fetchone()
    return bool(found and found[0])


def refresh(conn: duckdb.DuckDBPyConnection, organization: str, start: datetime,
            end: datetime, cuts: Sequence[str]) -> None:
    """Replace the facts of ``organization``'s buckets in [start, end) of ``cuts`` (``key``
    for the key cut) with what the raw rows say now. Call in the write's transaction, after
    the raw rows changed."""
    params = {"org": organization, "start": start, "end": end}
    others = [c for c in cuts if c != "key"]
    conn.execute("DELETE FROM facts WHERE organization = $org AND bucket_start >= $start "
                 "AND bucket_start < $end AND cut IN (SELECT unnest($cuts::VARCHAR[]))",
                 {**params, "cuts": list(cuts)})
    if "key" in cuts:
        conn.execute(f"INSERT INTO facts ({_NAMES}) {_KEY_SELECT} FROM "
                     f"({spend_facts_sql(bounded=True)})", params)
    if others:
        conn.execute(f"INSERT INTO facts ({_NAMES}) {_CUT_SELECT} FROM "
                     f"({cut_facts_sql(bounded=True)})", {**params, "cuts": others})
    chosen = {**params, "cuts": list(cuts)}
    _add_keys(conn, "organization = $org AND bucket_start >= $start AND bucket_start < $end "
                    "AND cut IN (SELECT unnest($cuts::VARCHAR[]))", chosen)
    # The daily sums of every UTC day the range touches (its other hours' facts are as stored).
    days = {**chosen, "start": floor_day(start), "end": ceil_day(end)}
    conn.execute("DELETE FROM facts_daily WHERE organization = $org AND bucket_start >= $start "
                 "AND bucket_start < $end AND cut IN (SELECT unnest($cuts::VARCHAR[]))", days)
    _add_daily(conn, "organization = $org AND bucket_start >= $start AND bucket_start < $end "
                     "AND cut IN (SELECT unnest($cuts::VARCHAR[]))", days)
