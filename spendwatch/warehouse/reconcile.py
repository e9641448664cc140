"""Reconciliation: estimated (usage x price table) against billed (the cost API), per day and model.

For each local day and model, over the hours the cost API has reported (billed or allocated):

    estimated_usd  = sum of the stored estimates of those hours' usage rows (tokens and web search)
    billed_usd     = sum of billed/allocated cost of cost types "tokens" and "web_search"
    difference_usd = estimated_usd - billed_usd
    difference_pct = difference_usd / billed_usd x 100   (None when billed_usd is 0)

A drift beyond a few percent means a gap in the price table (a new model, a changed price) or
spend outside the priced dimensions (US-only inference, fast mode, priority tiers, negotiated
discounts). Usage with no price is counted in ``unpriced_tokens`` and left out of
``estimated_usd``; such a day is not a drift but a gap to fill.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Sequence
from zoneinfo import ZoneInfo

import duckdb

from spendwatch.warehouse.spend import LOCAL_DATE_SQL
from spendwatch.timeutil import local_range

_HUNDRED = Decimal(100)


@dataclass(frozen=True)
class ReconciliationRow:
    """Estimated against billed for one local day, organization and model."""

    date: date
    organization: str
    model: str | None
    estimated_usd: Decimal
    billed_usd: Decimal
    unpriced_tokens: int

    @property
    def difference_usd(self) -> Decimal:
        return self.estimated_usd - self.billed_usd

    @property
    def difference_pct(self) -> Decimal | None:
        if not self.billed_usd:
            return None
        return self.difference_usd / self.billed_usd * _HUNDRED


def reconciliation(conn: duckdb.DuckDBPyConnection, tz: ZoneInfo, since: date, until: date,
                   organizations: Sequence[str] = ()) -> list[ReconciliationRow]:
    """Per local day (``since``..``until``, both included), organization and model."""
    utc_start, utc_end = local_range(since, until, tz)
    org_filter = "AND organization IN (SELECT unnest($orgs))" if organizations else ""
    sql = f"""
        WITH facts AS (
            SELECT *, {LOCAL_DATE_SQL} AS date FROM spend_facts
            WHERE bucket_start >= $scan_from AND bucket_start < $scan_to {org_filter}
              AND cost_type IN ('tokens', 'web_search')),
        billed_buckets AS (SELECT DISTINCT organization, bucket_start, bucket_end
                           FROM cost_buckets),
        estimated AS (
            SELECT {LOCAL_DATE_SQL.replace("bucket_width", "'1h'")} AS date, u.organization,
                   u.model,
                   sum(e.est_input_usd + e.est_cache_write_5m_usd + e.est_cache_write_1h_usd
                       + e.est_cache_read_usd + e.est_output_usd + e.est_web_search_usd)
                       AS estimated_usd,
                   sum(CASE WHEN e.unpriced_reason IS NULL THEN 0 ELSE
                       u.uncached_input_tokens + u.cache_write_5m_tokens
                       + u.cache_write_1h_tokens + u.cache_read_tokens + u.output_tokens END)
                       AS unpriced_tokens
            FROM usage_hourly u JOIN usage_estimates e USING (row_key)
            WHERE u.bucket_start >= $scan_from AND u.bucket_start < $scan_to {org_filter}
              AND EXISTS (SELECT 1 FROM billed_buckets b WHERE b.organization = u.organization
                          AND b.bucket_start <= u.bucket_start
                          AND u.bucket_start < b.bucket_end)
            GROUP BY ALL),
        billed AS (
            SELECT date, organization, model, sum(cost_usd) AS billed_usd FROM facts
            WHERE cost_basis IN ('billed', 'allocated') GROUP BY ALL)
        SELECT coalesce(e.date, b.date) AS date, coalesce(e.organization, b.organization),
               coalesce(e.model, b.model), coalesce(e.estimated_usd, 0),
               coalesce(b.billed_usd, 0), coalesce(e.unpriced_tokens, 0)
        FROM estimated e FULL JOIN billed b ON e.date = b.date
             AND e.organization = b.organization AND e.model IS NOT DISTINCT FROM b.model
        WHERE coalesce(e.date, b.date) BETWEEN $since AND $until
        ORDER BY 1, 2, 3 NULLS LAST
    """
    params: dict[str, Any] = {"tz": str(tz.key), "since": since, "until": until,
                              "scan_from": utc_start - timedelta(days=1),
                              "scan_to": utc_end + timedelta(days=1)}
    if organizations:
        params["orgs"] = list(organizations)
    return [ReconciliationRow(day, org, model, Decimal(est), Decimal(billed), int(unpriced))
            for day, org, model, est, billed, unpriced in conn.execute(sql, params).fetchall()]
