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
(``spendwatch reconcile`` lists them in ``--json`` only).

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
from datetime import date
from decimal import Decimal
from typing import Any, Sequence

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
        rows.append(ReconciliationRow(day, org, model, est, billed.get(key, Decimal(0)),
                                      unpriced, spent.get(key, Decimal(0)),
                                      key in estimated or key in billed))
    rows.sort(key=lambda r: (r.date, r.organization, r.model is None, r.model or ""))
    return rows
