"""Shared warehouse queries: spend and tokens by any dimension, over local-time days.

All aggregation happens in DuckDB with bound parameters. Cost is billed cost from the cost
API; legacy cost comes in UTC-day buckets and is attributed to the local date with the same
calendar date (it cannot be split by hour).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Sequence
from zoneinfo import ZoneInfo

import duckdb

from spendwatch.config import FeatureRule
from spendwatch.features import api_key_label, feature_for, workspace_label
from spendwatch.timeutil import local_range

SPEND_DIMENSIONS = ("date", "organization", "workspace", "api_key", "feature", "model",
                    "service_tier", "cache_status", "cost_basis")
METRICS = ("cost_usd", "uncached_input_tokens", "cache_write_5m_tokens",
           "cache_write_1h_tokens", "cache_read_tokens", "output_tokens", "web_search_requests")
TOKEN_METRICS = METRICS[1:]
EXTRA_METRICS = ("list_cost_usd", "unpriced_tokens")
CACHE_STATUSES = ("uncached_input", "cache_write_5m", "cache_write_1h", "cache_read", "output",
                  "other")
# cost/token type -> cache status; web search, code execution and session runtime are "other".
CACHE_STATUS_SQL = """CASE token_type
    WHEN 'uncached_input_tokens' THEN 'uncached_input'
    WHEN 'cache_creation.ephemeral_5m_input_tokens' THEN 'cache_write_5m'
    WHEN 'cache_creation.ephemeral_1h_input_tokens' THEN 'cache_write_1h'
    WHEN 'cache_read_input_tokens' THEN 'cache_read'
    WHEN 'output_tokens' THEN 'output'
    ELSE 'other' END"""
# A "day" is local; a legacy whole-day bucket (a UTC day) goes to the date of the same name.
LOCAL_DATE_SQL = ("CASE WHEN bucket_width = '1d' THEN (bucket_start AT TIME ZONE 'UTC')::DATE "
                  "ELSE (bucket_start AT TIME ZONE $tz)::DATE END")


@dataclass(frozen=True)
class NameBook:
    """Names of workspaces and API keys, per organization, from the warehouse."""

    workspaces: dict[tuple[str, str], str]
    api_keys: dict[tuple[str, str], str]

    @classmethod
    def load(cls, conn: duckdb.DuckDBPyConnection) -> "NameBook":
        ws = {(o, i): n for o, i, n in conn.execute(
            "SELECT organization, workspace_id, name FROM workspaces").fetchall()}
        keys = {(o, i): n for o, i, n in conn.execute(
            "SELECT organization, api_key_id, name FROM api_keys").fetchall()}
        return cls(ws, keys)

    def workspace(self, organization: str, workspace_id: str | None) -> str | None:
        return self.workspaces.get((organization, workspace_id)) if workspace_id else None

    def api_key(self, organization: str, api_key_id: str | None) -> str | None:
        return self.api_keys.get((organization, api_key_id)) if api_key_id else None


def feature_map_sql(conn: duckdb.DuckDBPyConnection, names: NameBook,
                 rules: Sequence[FeatureRule]) -> tuple[str, dict[str, Any]]:
    """A VALUES table (organization, workspace_id, api_key_id, feature) for every pair seen."""
    pairs = conn.execute("""
        SELECT DISTINCT organization, workspace_id, api_key_id FROM usage_hourly
        UNION SELECT DISTINCT organization, workspace_id, api_key_id FROM cost_buckets
    """).fetchall()
    if not pairs:
        return ("SELECT NULL::VARCHAR AS organization, NULL::VARCHAR AS workspace_id, "
                "NULL::VARCHAR AS api_key_id, NULL::VARCHAR AS feature WHERE false"), {}
    params: dict[str, Any] = {}
    tuples = []
    for n, (org, ws, key) in enumerate(pairs):
        feature = feature_for(rules, org, ws, names.workspace(org, ws), key,
                              names.api_key(org, key))
        params.update({f"fo{n}": org, f"fw{n}": ws, f"fk{n}": key, f"ff{n}": feature})
        tuples.append(f"($fo{n}::VARCHAR, $fw{n}::VARCHAR, $fk{n}::VARCHAR, $ff{n}::VARCHAR)")
    values = ", ".join(tuples)
    return (f"SELECT * FROM (VALUES {values}) AS f(organization, workspace_id, api_key_id, "
            "feature)"), params


def spend(conn: duckdb.DuckDBPyConnection, tz: ZoneInfo, since: date, until: date,
          by: Sequence[str], features: Sequence[FeatureRule] = (),
          organizations: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Spend and tokens over local days ``since``..``until`` (both included), grouped ``by``.

    Cost is billed where the cost API has reported, allocated for legacy cost split across API
    keys, estimated elsewhere (see the ``spend_facts`` view). Each result holds the dimensions
    asked for (``workspace`` and ``api_key`` as display names, with ``workspace_id`` /
    ``api_key_id`` beside them), every metric in METRICS and EXTRA_METRICS; money is Decimal
    dollars. ``unpriced_tokens`` counts estimated usage that has no price (its cost is not
    counted, never taken as $0). Rows are ordered by date, then cost (highest first).
    Raises ValueError for an unknown dimension.
    """
    unknown = [d for d in by if d not in SPEND_DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown dimension {unknown[0]!r}; use any of "
                         + ", ".join(SPEND_DIMENSIONS))
    names = NameBook.load(conn)
    utc_start, utc_end = local_range(since, until, tz)
    group_columns = []
    for dim in by:
        group_columns += {"workspace": ["workspace_id"], "api_key": ["api_key_id"]}.get(dim, [dim])
    feature_sql, feature_params = (feature_map_sql(conn, names, features) if "feature" in by
                                   else ("", {}))
    feature_join = ("LEFT JOIN feature_map f ON f.organization = facts.organization "
                    "AND f.workspace_id IS NOT DISTINCT FROM facts.workspace_id "
                    "AND f.api_key_id IS NOT DISTINCT FROM facts.api_key_id"
                    if feature_sql else "")
    group_exprs = [{"feature": "f.feature"}.get(c, f"facts.{c}") for c in group_columns]
    select_dims = ", ".join(f"{e} AS {c}" for e, c in zip(group_exprs, group_columns))
    sums = ", ".join(f"sum({m}) AS {m}" for m in (*METRICS, *EXTRA_METRICS))
    org_filter = "AND facts.organization IN (SELECT unnest($orgs))" if organizations else ""
    sql = f"""
        WITH {"feature_map AS (" + feature_sql + ")," if feature_sql else ""}
        facts AS (SELECT *, {LOCAL_DATE_SQL} AS date, {CACHE_STATUS_SQL} AS cache_status
                  FROM spend_facts
                  WHERE bucket_start >= $scan_from AND bucket_start < $scan_to)
        SELECT {select_dims + ',' if select_dims else ''} {sums}
        FROM facts {feature_join}
        WHERE facts.date BETWEEN $since AND $until {org_filter}
        {"GROUP BY " + ", ".join(group_exprs) if group_exprs else ""}
    """
    params: dict[str, Any] = {"tz": str(tz.key), "since": since, "until": until,
                              "scan_from": utc_start - timedelta(days=1),
                              "scan_to": utc_end + timedelta(days=1), **feature_params}
    if organizations:
        params["orgs"] = list(organizations)
    records = conn.execute(sql, params).fetchall()
    columns = [*group_columns, *METRICS, *EXTRA_METRICS]
    results = [finish_row(dict(zip(columns, rec)), by, names) for rec in records]
    results = [r for r in results if not is_empty_row(r)]
    results.sort(key=lambda r: (str(r.get("date", "")), -r["cost_usd"],
                                [str(r.get(d, "")) for d in by]))
    return results


def is_empty_row(row: dict[str, Any]) -> bool:
    """A group with neither cost nor tokens (a cost basis row of token counts only)."""
    return not row["cost_usd"] and not any(row[m] for m in TOKEN_METRICS) and \
        not row["unpriced_tokens"]


def finish_row(row: dict[str, Any], by: Sequence[str], names: NameBook) -> dict[str, Any]:
    org = row.get("organization")
    if "workspace" in by:
        ws = row["workspace_id"]
        row["workspace"] = workspace_label(ws, names.workspace(org, ws) if org else
                                           _any_name(names.workspaces, ws))
    if "api_key" in by:
        key = row["api_key_id"]
        row["api_key"] = api_key_label(key, names.api_key(org, key) if org else
                                       _any_name(names.api_keys, key))
    row["cost_usd"] = row["cost_usd"] if row["cost_usd"] is not None else Decimal(0)
    for metric in (*TOKEN_METRICS, "unpriced_tokens"):
        row[metric] = int(row[metric] or 0)
    return row


def _any_name(book: dict[tuple[str, str], str], item_id: str | None) -> str | None:
    if item_id is None:
        return None
    for (_, i), name in book.items():
        if i == item_id:
            return name
    return None


def money_str(amount: Decimal) -> str:
    """A dollar amount as a decimal string: exact, at least two decimals, no exponent."""
    normalized = amount.normalize()
    if normalized.as_tuple().exponent > -2:  # type: ignore[operator]
        normalized = normalized.quantize(Decimal("0.01"))
    return format(normalized, "f")


def unpriced_usage(conn: duckdb.DuckDBPyConnection, tz: ZoneInfo, since: date,
                   until: date) -> list[dict[str, Any]]:
    """Usage rows with no price over local days ``since``..``until``, per model and reason.

    Each result: ``model``, ``reason``, ``rows`` (usage rows), ``tokens``. Their cost is left
    out of every estimate, never counted as $0.
    """
    utc_start, utc_end = local_range(since, until, tz)
    return [{"model": model, "reason": reason, "rows": int(rows), "tokens": int(tokens)}
            for model, reason, rows, tokens in conn.execute("""
        SELECT u.model, e.unpriced_reason, count(*),
               sum(u.uncached_input_tokens + u.cache_write_5m_tokens + u.cache_write_1h_tokens
                   + u.cache_read_tokens + u.output_tokens)
        FROM usage_hourly u JOIN usage_estimates e USING (row_key)
        WHERE e.unpriced_reason IS NOT NULL AND u.bucket_start >= ? AND u.bucket_start < ?
        GROUP BY ALL ORDER BY 4 DESC""", [utc_start, utc_end]).fetchall()]
