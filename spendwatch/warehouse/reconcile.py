"""Reconciliation: estimated (usage x price table) against billed (the cost API), per day and model.

For each local day and model, over the hours the cost API has reported (billed or allocated):

    estimated_usd  = sum of the stored estimates of those hours' usage rows (tokens and web search)
    billed_usd     = sum of billed/allocated cost of cost types "tokens" and "web_search"
    difference_usd = estimated_usd - billed_usd
    difference_pct = difference_usd / billed_usd x 100   (None when billed_usd is 0)

``billed_usd`` comes from THE spend query (:func:`spendwatch.warehouse.spend.spend`, cost
bases billed and allocated, cost types tokens and web_search), so its days follow the legacy
day rule there. ``spend_usd`` is that query's whole spend of the day, organization and model
(every basis and cost type: what ``spendwatch spend --by date,organization,model`` says); a
day's ``spend_usd`` adds up to the CLI's day. Rows that only have spend (hours the cost API has
not reported yet, cost that is not a model's) have ``compared`` false: nothing to reconcile
(``spendwatch reconcile`` lists them with their spend and "-" for the rest).

``estimated_usd`` is priced from hourly usage, hour by hour, so it is not placed by the legacy
day rule: a legacy cost line kept whole (one that could not be split across hours) is compared
with the usage of the local day of the same name, which in a zone far from UTC covers other
hours than the UTC day it bills. Legacy token cost is allocated to hours, so this concerns only
what stayed whole; a drift on such a day says so, not that a price is wrong.

A drift beyond a few percent means a gap in the price table (a new model, a changed price) or
spend outside the priced dimensions (US-only inference, fast mode, priority tiers, negotiated
discounts). Usage with no price is counted in ``unpriced_tokens`` and left out of
``estimated_usd``; such a day is not a drift but a gap to fill.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Sequence

from spendwatch.cuts import CUTS
from spendwatch.timeutil import local_range
from spendwatch.warehouse.batch import Batch
from spendwatch.warehouse.spend import spend

_HUNDRED = Decimal(100)
#: What the cost API bills that usage x price estimates: tokens and web search.
RECONCILED_COST_TYPES = ("tokens", "web_search")


@dataclass(frozen=True)
class ReconciliationRow:
    """Estimated against billed for one local day, organization and model."""

    date: date
    organization: str
    model: str | None
    estimated_usd: Decimal
    billed_usd: Decimal
    unpriced_tokens: int
    spend_usd: Decimal = Decimal(0)
    compared: bool = True

    @property
    def difference_usd(self) -> Decimal:
        return self.estimated_usd - self.billed_usd

    @property
    def difference_pct(self) -> Decimal | None:
        if not self.billed_usd:
            return None
        return self.difference_usd / self.billed_usd * _HUNDRED


def _estimated(batch: Batch, since: date, until: date, organizations: Sequence[str]
               ) -> dict[tuple[date, str, str | None], tuple[Decimal, int]]:
    """Stored estimates of usage in hours the cost API reported, per local day, org, model."""
    utc_start, utc_end = local_range(since, until, batch.config.tz)
    org_filter = "AND u.organization IN (SELECT unnest($orgs::VARCHAR[]))" if organizations else ""
    params: dict[str, Any] = {"tz": str(batch.config.tz.key), "start": utc_start,
                              "end": utc_end}
    if organizations:
        params["orgs"] = list(organizations)
    sql = f"""
        WITH billed_buckets AS (SELECT DISTINCT organization, bucket_start, bucket_end
                                FROM cost_buckets)
        SELECT timezone($tz, u.bucket_start)::DATE, u.organization, u.model,
               sum(e.est_input_usd + e.est_cache_write_5m_usd + e.est_cache_write_1h_usd
                   + e.est_cache_read_usd + e.est_output_usd + e.est_web_search_usd),
               sum(CASE WHEN e.unpriced_reason IS NULL THEN 0 ELSE
                   u.uncached_input_tokens + u.cache_write_5m_tokens
                   + u.cache_write_1h_tokens + u.cache_read_tokens + u.output_tokens END)
        FROM usage_hourly u JOIN usage_estimates e USING (row_key)
        WHERE u.bucket_start >= $start AND u.bucket_start < $end {org_filter}
          AND e.bucket_start >= $start AND e.bucket_start < $end
          AND EXISTS (SELECT 1 FROM billed_buckets b WHERE b.organization = u.organization
                      AND b.bucket_start <= u.bucket_start AND u.bucket_start < b.bucket_end)
        GROUP BY ALL"""
    return {(day, org, model): (Decimal(est or 0), int(unpriced or 0))
            for day, org, model, est, unpriced in batch.conn.execute(sql, params).fetchall()}


def reconciliation(batch: Batch, since: date, until: date,
                   organizations: Sequence[str] = ()) -> list[ReconciliationRow]:
    """Per local day (``since``..``until``, both included), organization and model, ordered by
    day, organization and model (no model last). See the module docstring."""
    by = ["date", "organization", "model"]
    estimated = _estimated(batch, since, until, organizations)
    billed = {(r["date"], r["organization"], r["model"]): r["cost_usd"]
              for r in spend(batch, since, until, by,
                             {"cost_type": list(RECONCILED_COST_TYPES)},
                             organizations=organizations, cost_basis=("billed", "allocated"))}
    spent = {(r["date"], r["organization"], r["model"]): r["cost_usd"]
             for r in spend(batch, since, until, by, organizations=organizations)}
    rows = []
    for key in {*estimated, *billed, *spent}:
        day, org, model = key
        est, unpriced = estimated.get(key, (Decimal(0), 0))
        # Spend that is not a model's has no price to estimate it by: nothing to reconcile.
        rows.append(ReconciliationRow(day, org, model, est, billed.get(key, Decimal(0)),
                                      unpriced, spent.get(key, Decimal(0)),
                                      model is not None and (key in estimated or key in billed)))
    rows.sort(key=lambda r: (r.date, r.organization, r.model is None, r.model or ""))
    return rows


# --- cut agreement ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CutDisagreement:
    """An hour whose cut does not add up to the key cut: billed cost or tokens."""

    hour: datetime
    organization: str
    cut: str
    measure: str            # cost_usd | tokens
    key_value: Decimal
    cut_value: Decimal

    @property
    def difference(self) -> Decimal:
        return self.cut_value - self.key_value


def cut_agreement(batch: Batch, since: date, until: date) -> list[CutDisagreement]:
    """Every hour of local days ``since``..``until`` where an additive cut (spendwatch.cuts:
    price, people, profiles) disagrees with the key cut, in billed cost (to the cent and below:
    exactly) or in tokens; only hours both cuts have read (the stream's covered range). The API
    reports each cut whole, so any difference is shown, never hidden: a page lost, a window
    read while the API was revising it (the next run re-reads it), or an API that rounds."""
    utc_start, utc_end = local_range(since, until, batch.config.tz)
    additive = [c.name for c in CUTS if c.additive]
    sql = """
        WITH covered AS (
            SELECT organization, split_part(stream, ':', 1) AS kind,
                   split_part(stream, ':', 2) AS cut, covered_from, covered_until
            FROM sync_state WHERE stream LIKE '%:%'),
        key_cost AS (SELECT organization, bucket_start, sum(amount_usd) AS v FROM cost_buckets
                     WHERE bucket_width = '1h' AND bucket_start >= $start AND bucket_start < $end
                     GROUP BY ALL),
        -- tokens as DECIMAL(38, 12) too: a CASE over DECIMAL(38, 0) and DECIMAL(38, 12)
        -- is DECIMAL(38, 0), and would cut the cents off the money beside it.
        key_tokens AS (SELECT organization, bucket_start, sum(uncached_input_tokens
                           + cache_write_5m_tokens + cache_write_1h_tokens + cache_read_tokens
                           + output_tokens)::DECIMAL(38, 12) AS v FROM usage_hourly
                       WHERE bucket_start >= $start AND bucket_start < $end GROUP BY ALL),
        cut_cost AS (SELECT organization, cut, bucket_start, sum(amount_usd) AS v FROM cost_cuts
                     WHERE bucket_start >= $start AND bucket_start < $end GROUP BY ALL),
        cut_tokens AS (SELECT organization, cut, bucket_start, sum(uncached_input_tokens
                           + cache_write_5m_tokens + cache_write_1h_tokens + cache_read_tokens
                           + output_tokens)::DECIMAL(38, 12) AS v FROM usage_cuts
                       WHERE bucket_start >= $start AND bucket_start < $end GROUP BY ALL),
        hours AS (SELECT DISTINCT c.organization, c.kind, c.cut, h.bucket_start
                  FROM covered c JOIN (SELECT organization, bucket_start FROM key_cost UNION
                                       SELECT organization, bucket_start FROM key_tokens
                                       UNION SELECT organization, bucket_start FROM cut_cost
                                       UNION SELECT organization, bucket_start FROM cut_tokens
                                       ) h ON h.organization = c.organization
                    AND h.bucket_start >= c.covered_from AND h.bucket_start < c.covered_until
                  WHERE list_contains($cuts::VARCHAR[], c.cut))
        SELECT h.bucket_start, h.organization, h.cut,
               CASE h.kind WHEN 'cost' THEN 'cost_usd' ELSE 'tokens' END,
               coalesce(CASE h.kind WHEN 'cost' THEN kc.v ELSE kt.v END, 0),
               coalesce(CASE h.kind WHEN 'cost' THEN cc.v ELSE ct.v END, 0)
        FROM hours h
        LEFT JOIN key_cost kc ON kc.organization = h.organization AND kc.bucket_start = h.bucket_start
        LEFT JOIN key_tokens kt ON kt.organization = h.organization AND kt.bucket_start = h.bucket_start
        LEFT JOIN cut_cost cc ON cc.organization = h.organization AND cc.cut = h.cut
             AND cc.bucket_start = h.bucket_start
        LEFT JOIN cut_tokens ct ON ct.organization = h.organization AND ct.cut = h.cut
             AND ct.bucket_start = h.bucket_start
        WHERE coalesce(CASE h.kind WHEN 'cost' THEN kc.v ELSE kt.v END, 0)
              <> coalesce(CASE h.kind WHEN 'cost' THEN cc.v ELSE ct.v END, 0)
        ORDER BY 1, 2, 3, 4"""
    return [CutDisagreement(hour, org, cut, measure, Decimal(key), Decimal(value))
            for hour, org, cut, measure, key, value in batch.conn.execute(
                sql, {"start": utc_start, "end": utc_end, "cuts": additive}).fetchall()]
