"""The savings ledger: what caching, batch and routing saved, wasted, and could still save.

Every figure comes from stored usage tokens (``usage_hourly``) priced with the price table
(:meth:`spendwatch.pricing.PriceTable.unit_price`) on the bucket's UTC day, with the row's
service tier and ``long_context = (context_window == "200k-1M")``; stored usage carries no
inference_geo or speed, so global inference at standard speed is assumed (as for every
estimate). Web search, code execution and session runtime are not affected by the levers and
are left out. A row whose model or tier has no price (a priority tier, an unpriced model) is
counted in ``unpriced_tokens`` and left out of every dollar figure: it is never taken as $0.

Days are local days in the configured time zone, both ends included, exactly as
:func:`spendwatch.warehouse.spend.spend` counts them; features come from the same feature rules
(the reader batch's feature map, :attr:`spendwatch.warehouse.batch.Batch.feature_map`). Aggregation happens in DuckDB (per local date, UTC
day, organization, feature, model, service tier and context window); the formulas below run in
Python over those small aggregates, in Decimal, exactly.

Notation
--------
For one aggregate: tokens ``U`` (uncached input), ``W5`` (5-minute cache writes), ``W1``
(1-hour cache writes), ``R`` (cache reads), ``O`` (output); unit prices in dollars per million
tokens ``p_in, p_w5, p_w1, p_r, p_out`` at the row's tier ("tier prices"), ``s_*`` the same at
the standard tier ("standard prices"); ``M = 1,000,000``.

Realized (per local date, organization, feature and model)
---------------------------------------------------------
- actual          = (U p_in + W5 p_w5 + W1 p_w1 + R p_r + O p_out) / M   (what was used)
- no_cache        = ((U + W5 + W1 + R) p_in + O p_out) / M   (cache writes and reads priced as
                    uncached input, at the actual tier)
- cache_savings   = no_cache - actual
                  = (R (p_in - p_r) - W5 (p_w5 - p_in) - W1 (p_w1 - p_in)) / M
                    (reads saved minus the write premium; negative when writes are wasted)
- baseline        = ((U + W5 + W1 + R) s_in + O s_out) / M   (no lever: no cache, standard tier)
- batch_savings   = baseline - no_cache   (0 on the standard tier; half of baseline on batch)
- realized_total  = baseline - actual = cache_savings + batch_savings

Cache waste (per local date, organization, feature and model)
-------------------------------------------------------------
Usage comes in UTC-hour buckets, so a write cannot be matched to the read that used it. The
approximation: the cache writes (5-minute and 1-hour separately) of an (organization, feature,
model) in UTC hour ``h`` are *wasted* when that (organization, feature, model) has no cache
read at all in hour ``h`` nor in hour ``h + 1`` (any tier, context window, workspace or key of
the feature). A 5-minute write late in an hour can be read early in the next; a 1-hour write can
be read until the same minute of the next hour; so a write with no read in either hour was
certainly never read. Waste is therefore a **lower bound**: a write followed by reads of
*another* prefix in the same hours is not seen as waste. Writes of hour ``h`` are judged only
once hour ``h + 1`` has been collected (``sync_state.covered_until >= h + 2 hours``).

- waste_usd = (wasted W5 (p_w5 - p_in) + wasted W1 (p_w1 - p_in)) / M
  (the premium paid for a cache nobody read; the input price part would have been paid anyway)

Potential (per organization and feature over the period; per-model detail)
--------------------------------------------------------------------------
``days`` = local days in the period; ``monthly = period dollars x 30 / days``.

- batch (features with ``batch_eligible = true`` in config): for the rows still on the
  standard tier, savings = actual x (1 - batch_multiplier), batch_multiplier from the price
  table (0.5) on the row's UTC day.
- caching (features with input tokens whose hit ratio is below ``savings.cache_hit_target``):
  total_input = U + W5 + W1 + R over the feature (every row, priced or not);
  hit_ratio = R / total_input;
  extra_reads = min(target x total_input - R, U);
  savings = extra_reads x sum_g(U_g (p_in,g - p_r,g)) / (sum_g U_g x M), over the feature's
  aggregates g: the extra reads are taken from uncached input in proportion to each
  model's (each aggregate's) uncached input and priced at its tier's input price minus cache
  read price. The write premium of the extra cache writes needed is ignored (it is small next
  to the reads when a prefix is reused, but not zero): this is an upper estimate. Unpriced
  aggregates take their share of the extra reads but add no dollars.
- routing (the feature's actual cost by model line; only haiku, sonnet and opus are routed,
  other and unknown lines are reported but not moved): S = cost_haiku + cost_sonnet +
  cost_opus, share_l = cost_l / S, target share t_l from ``savings.target_mix``;
  moved_opus = max(0, cost_opus - t_opus S) moves to sonnet and
  moved_sonnet = max(0, cost_sonnet - t_sonnet S) moves to haiku (one line down each, both
  from the original spend); savings = moved_opus (1 - ratio(sonnet, opus)) +
  moved_sonnet (1 - ratio(haiku, sonnet)), where ratio(lower, upper) = standard input price of
  the lower line's reference model / that of the upper line's (``savings.line_models``), on the
  last day of the period. Lines come from :func:`spendwatch.lines.model_lines` (the Models API
  table when it has been collected, else the documented fallback on the model ID).

Every function named in these formulas is a small pure function below, with its own docstring.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable, Mapping, Sequence

from spendwatch.config import Config
from spendwatch.lines import model_lines
from spendwatch.estimates import register_prices, utc_day
from spendwatch.pricing import (PRICED_TIERS, UNIT_PRICE_COLUMNS, PriceTable, TokenCounts,
                                price_table, sql_canonical_model, sql_no_price_reason,
                                sql_price_match)
from spendwatch.numbers import percent, usd
from spendwatch.warehouse.batch import Batch, FeatureMap
from spendwatch.warehouse.spend import feature_cut
from spendwatch.timeutil import local_range

log = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
DAYS_PER_MONTH = Decimal(30)
LEVERS = ("batch", "caching", "routing")
#: Lines that routing moves spend between, cheapest first: each moves one step down.
ROUTED_LINES = ("haiku", "sonnet", "opus")
STANDARD_TIER = "standard"
LONG_CONTEXT_WINDOW = "200k-1M"


# --- prices ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class UnitPrices:
    """Dollars per million tokens of each token kind, after the tier's modifiers."""

    input: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    output: Decimal


def unit_prices(table: PriceTable, model: str | None, day: date, service_tier: str | None,
                context_window: str | None) -> UnitPrices | None:
    """The five unit prices of ``model`` on UTC ``day`` at ``service_tier``, or None.

    ``long_context`` is ``context_window == "200k-1M"`` (Haiku 5.5's over-100k rate); None
    when any of the five has no price (unknown model, unpriced tier): never a silent $0.
    """
    if model is None:
        return None
    long_context = context_window == LONG_CONTEXT_WINDOW
    values = [table.unit_price(model, component, day, service_tier, long_context=long_context)
              for component in ("input", "cache_write_5m", "cache_write_1h", "cache_read",
                                "output")]
    if any(v is None for v in values):
        return None
    return UnitPrices(*values)  # type: ignore[arg-type]


def unpriced_reason(table: PriceTable, model: str | None, service_tier: str | None) -> str:
    """Why a row has no price, in a few words."""
    if model is None:
        return "tokens without a model"
    if service_tier not in PRICED_TIERS:
        return f"no public price for service tier {service_tier}"
    if not table.has_model(model):
        return f"no price for model {model}"
    return f"incomplete prices for {model}"


# --- the formulas (pure, Decimal) ------------------------------------------------------------

def token_cost(tokens: TokenCounts, prices: UnitPrices) -> Decimal:
    """actual = (U p_in + W5 p_w5 + W1 p_w1 + R p_r + O p_out) / M."""
    return (Decimal(tokens.input) * prices.input
            + Decimal(tokens.cache_write_5m) * prices.cache_write_5m
            + Decimal(tokens.cache_write_1h) * prices.cache_write_1h
            + Decimal(tokens.cache_read) * prices.cache_read
            + Decimal(tokens.output) * prices.output) / MILLION


def no_cache_cost(tokens: TokenCounts, prices: UnitPrices) -> Decimal:
    """no_cache = ((U + W5 + W1 + R) p_in + O p_out) / M: every prompt token as uncached input."""
    return (Decimal(tokens.prompt) * prices.input
            + Decimal(tokens.output) * prices.output) / MILLION


def cache_savings(tokens: TokenCounts, prices: UnitPrices) -> Decimal:
    """cache_savings = no_cache - actual = (R (p_in - p_r) - W5 (p_w5 - p_in) - W1 (p_w1 - p_in)) / M.

    Reads saved minus the write premium, at the row's own tier; negative when writes were not
    read enough to pay for themselves.
    """
    return no_cache_cost(tokens, prices) - token_cost(tokens, prices)


def batch_savings(tokens: TokenCounts, standard: UnitPrices, tier: UnitPrices) -> Decimal:
    """batch_savings = baseline - no_cache = no_cache(standard prices) - no_cache(tier prices).

    Zero on the standard tier (both price sets are the same).
    """
    return no_cache_cost(tokens, standard) - no_cache_cost(tokens, tier)


def realized_total(tokens: TokenCounts, standard: UnitPrices, tier: UnitPrices) -> Decimal:
    """realized_total = baseline - actual = cache_savings + batch_savings."""
    return no_cache_cost(tokens, standard) - token_cost(tokens, tier)


def is_wasted(reads_in_hour: int, reads_next_hour: int) -> bool:
    """Writes of hour h are wasted when their feature and model read nothing in h nor h + 1."""
    return reads_in_hour == 0 and reads_next_hour == 0


def waste_premium(wasted_5m: int, wasted_1h: int, prices: UnitPrices) -> Decimal:
    """waste_usd = (W5 (p_w5 - p_in) + W1 (p_w1 - p_in)) / M: the premium paid for nothing."""
    return (Decimal(wasted_5m) * (prices.cache_write_5m - prices.input)
            + Decimal(wasted_1h) * (prices.cache_write_1h - prices.input)) / MILLION


def monthly(period_usd: Decimal, days: int) -> Decimal:
    """A period's dollars scaled to a 30-day month: period_usd x 30 / days."""
    return period_usd * DAYS_PER_MONTH / Decimal(days)


def batch_potential(standard_cost: Decimal, batch_multiplier: Decimal) -> Decimal:
    """What the Batch API would save on standard-tier spend: cost x (1 - batch_multiplier)."""
    return standard_cost * (1 - batch_multiplier)


def hit_ratio(tokens: TokenCounts) -> Decimal | None:
    """R / (U + W5 + W1 + R), or None without input tokens."""
    if tokens.prompt == 0:
        return None
    return Decimal(tokens.cache_read) / Decimal(tokens.prompt)


def extra_reads(tokens: TokenCounts, target: Decimal) -> Decimal:
    """Reads needed to reach ``target``: min(target x total_input - R, U), never below 0."""
    needed = target * Decimal(tokens.prompt) - Decimal(tokens.cache_read)
    return max(Decimal(0), min(needed, Decimal(tokens.input)))


def caching_potential(extra: Decimal, uncached_and_prices: Sequence[tuple[int, UnitPrices]],
                      total_uncached: int) -> Decimal:
    """extra x sum_g(U_g (p_in,g - p_r,g)) / (U x M): extra reads spread over the aggregates g
    in proportion to their uncached input U_g (U = the feature's whole uncached input, priced
    or not), each priced at its input price minus its cache read price (at its tier). The
    write premium of the extra cache writes is ignored.
    """
    if extra == 0 or total_uncached == 0:
        return Decimal(0)
    weighted = sum((Decimal(u) * (p.input - p.cache_read) for u, p in uncached_and_prices),
                   Decimal(0))
    return extra * weighted / (Decimal(total_uncached) * MILLION)


def caching_savings(extra: Decimal, uncached_weight: Decimal, total_uncached: int) -> Decimal:
    """:func:`caching_potential` from its weighted sum: extra x W / U, where
    W = sum_g(U_g (p_in,g - p_r,g)) / M (dollars, over the priced aggregates) and U the
    feature's whole uncached input."""
    if extra == 0 or total_uncached == 0:
        return Decimal(0)
    return extra * uncached_weight / Decimal(total_uncached)


def price_ratio(lower_input: Decimal, upper_input: Decimal) -> Decimal:
    """ratio(lower, upper) = input price of the lower line's reference model / the upper's."""
    return lower_input / upper_input


def line_mix(cost_by_line: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """share_l = cost_l / (cost_haiku + cost_sonnet + cost_opus), for the routed lines."""
    routed = sum((cost_by_line.get(line, Decimal(0)) for line in ROUTED_LINES), Decimal(0))
    if routed == 0:
        return {line: Decimal(0) for line in ROUTED_LINES}
    return {line: cost_by_line.get(line, Decimal(0)) / routed for line in ROUTED_LINES}


def routing_moves(cost_by_line: Mapping[str, Decimal],
                  target_mix: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Dollars moved one line down: ``{"opus": to sonnet, "sonnet": to haiku}``.

    moved_l = max(0, cost_l - t_l x S) with S = cost_haiku + cost_sonnet + cost_opus, both from
    the original spend (opus moved into sonnet is not moved again).
    """
    routed = sum((cost_by_line.get(line, Decimal(0)) for line in ROUTED_LINES), Decimal(0))
    return {line: max(Decimal(0), cost_by_line.get(line, Decimal(0)) - target_mix[line] * routed)
            for line in ("opus", "sonnet")}


def routing_potential(moves: Mapping[str, Decimal], ratios: Mapping[str, Decimal]) -> Decimal:
    """moved_opus (1 - ratio(sonnet, opus)) + moved_sonnet (1 - ratio(haiku, sonnet)).

    ``ratios`` maps the upper line ("opus", "sonnet") to the ratio of its step down.
    """
    return sum((moved * (1 - ratios[line]) for line, moved in moves.items() if moved),
               Decimal(0))


def _days_text(days: int) -> str:
    return "1 day" if days == 1 else f"{days} days"


# --- results ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RealizedRow:
    """What the levers saved for one local date (None: the whole period, as in a
    :class:`Ledger`), organization, feature and model.

    Dollars cover the priced rows only (``tokens`` are theirs); ``unpriced_tokens`` are left out.
    """

    date: date | None
    organization: str
    feature: str
    model: str | None
    tokens: TokenCounts
    actual_usd: Decimal
    no_cache_usd: Decimal
    baseline_usd: Decimal
    cache_savings_usd: Decimal
    batch_savings_usd: Decimal
    realized_total_usd: Decimal
    unpriced_tokens: int = 0
    unpriced_reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class WasteRow:
    """Cache writes nobody read (see the module docstring for the hourly approximation)."""

    date: date
    organization: str
    feature: str
    model: str | None
    wasted_5m_tokens: int
    wasted_1h_tokens: int
    waste_usd: Decimal
    unpriced_tokens: int = 0

    @property
    def wasted_tokens(self) -> int:
        return self.wasted_5m_tokens + self.wasted_1h_tokens


@dataclass(frozen=True)
class PotentialRow:
    """What one lever could still save for one feature, over the period and per month.

    ``detail`` holds the inputs of the formula (documented per lever in :func:`potential`).
    """

    lever: str
    organization: str
    feature: str
    period_usd: Decimal
    monthly_usd: Decimal
    change: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LedgerTotals:
    """Sums over a ledger's rows."""

    actual_usd: Decimal
    no_cache_usd: Decimal
    baseline_usd: Decimal
    cache_savings_usd: Decimal
    batch_savings_usd: Decimal
    realized_total_usd: Decimal
    wasted_tokens: int
    waste_usd: Decimal
    potential_period_usd: Mapping[str, Decimal]
    potential_monthly_usd: Mapping[str, Decimal]
    unpriced_tokens: int


@dataclass(frozen=True)
class Ledger:
    """The whole savings ledger of local days ``since``..``until``: ``realized`` per
    organization, feature and model over the period (``date`` None; :func:`realized` has
    them per day), ``waste`` per day, ``potential`` per lever and feature."""

    since: date
    until: date
    days: int
    realized: list[RealizedRow]
    waste: list[WasteRow]
    potential: list[PotentialRow]
    totals: LedgerTotals


# --- reading the warehouse -------------------------------------------------------------------

def _check_period(since: date, until: date) -> int:
    if until < since:
        raise ValueError(f"the period ends ({until}) before it starts ({since})")
    return (until - since).days + 1


_TOKENS = ("uncached_input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
           "cache_read_tokens", "output_tokens")


def _usage_sql(fmap: FeatureMap, organizations: Sequence[str], dated: bool = True) -> str:
    """Usage rows of the period with their UTC day, feature and (``dated``) local date (a CTE
    body). A figure of the whole period needs no local date: the scan range is the period's
    local days (converting every hour to its local date was a fifth of a year's ledger).

    Features judged on another cut than the key cut (``fmap.basis``, see
    spendwatch.features) read that cut's usage; it has no context window, so each of its rows
    is split over the windows in the proportions, token type by token type, of the key cut's
    usage of the same organization, hour, model and service tier (the key cut's own split when
    the cut's totals agree with it, as they do to the token; tokens are summed, then rounded).
    """
    org_filter = "AND u.organization IN (SELECT unnest($orgs))" if organizations else ""
    nonzero = " OR ".join(f"u.{t} <> 0" for t in _TOKENS)
    local_date = "({t}.bucket_start AT TIME ZONE $tz)::DATE AS date, " if dated else ""
    if fmap.basis is None:
        return f"""
        feature_map AS ({fmap.sql}),
        usage AS (
            SELECT {local_date.format(t="u")}{utc_day("u.bucket_start")} AS utc_day,
                   u.bucket_start, u.organization,
                   coalesce(f.feature, u.api_key_id, u.workspace_id, '(no feature)') AS feature,
                   u.model, u.service_tier, u.context_window, {", ".join(f"u.{t}" for t in _TOKENS)}
            FROM usage_hourly u
            LEFT JOIN feature_map f ON {fmap.join("u")}
            WHERE u.bucket_start >= $scan_from AND u.bucket_start < $scan_to {org_filter}
                AND ({nonzero}))"""
    keys = "organization, bucket_start, model, service_tier"
    on = " AND ".join(f"{{a}}.{k} IS NOT DISTINCT FROM c.{k}" for k in keys.split(", "))
    total = " + ".join(_TOKENS)
    shares = ", ".join(
        f"c.{t} * CASE WHEN t.{t} > 0 THEN w.{t}::DECIMAL(38, 12) / t.{t} "
        f"WHEN t.total > 0 THEN w.total::DECIMAL(38, 12) / t.total "
        f"WHEN t.n > 0 THEN 1.0 / t.n ELSE 1 END AS {t}" for t in _TOKENS)
    return f"""
        feature_map AS ({fmap.sql}),
        cut_rows AS (
            SELECT u.bucket_start, u.organization,
                   coalesce(f.feature, u.actor_key, u.api_key_id, '(no feature)') AS feature,
                   u.model, u.service_tier, {", ".join(f"u.{t}" for t in _TOKENS)}
            FROM usage_cuts u
            LEFT JOIN feature_map f ON {fmap.join("u")}
            WHERE u.cut = '{fmap.basis}' AND u.bucket_start >= $scan_from
                AND u.bucket_start < $scan_to {org_filter} AND ({nonzero})),
        key_windows AS (
            SELECT {keys}, context_window, {", ".join(f"sum({t}) AS {t}" for t in _TOKENS)},
                   sum({total}) AS total
            FROM usage_hourly u
            WHERE bucket_start >= $scan_from AND bucket_start < $scan_to {org_filter}
            GROUP BY {keys}, context_window),
        key_totals AS (
            SELECT {keys}, {", ".join(f"sum({t}) AS {t}" for t in _TOKENS)},
                   sum(total) AS total, count(*) AS n
            FROM key_windows GROUP BY {keys}),
        usage AS (
            SELECT {local_date.format(t="c")}{utc_day("c.bucket_start")} AS utc_day,
                   c.bucket_start, c.organization, c.feature, c.model, c.service_tier,
                   w.context_window, {shares}
            FROM cut_rows c
            LEFT JOIN key_totals t ON {on.format(a="t")}
            LEFT JOIN key_windows w ON {on.format(a="w")})"""


def _params(config: Config, since: date, until: date, organizations: Sequence[str],
            feature_params: Mapping[str, Any], scan_extra: timedelta = timedelta(0),
            dated: bool = True) -> dict[str, Any]:
    """The parameters of the period's scan (``$scan_from``/``$scan_to``: its local days, and
    ``scan_extra`` more), its organizations and features, and (``dated``) ``$tz``."""
    start, end = local_range(since, until, config.tz)
    params: dict[str, Any] = {"scan_from": start, "scan_to": end + scan_extra,
                              **feature_params}
    if dated:
        params["tz"] = str(config.tz.key)
    if organizations:
        params["orgs"] = list(organizations)
    return params


#: What a ledger group is: a period's (a local date's, with ``date`` first: :func:`_groups`).
_GROUP_KEYS = "utc_day, organization, feature, model, service_tier, context_window"


def _feature_map(batch: Batch, organizations: Sequence[str]) -> FeatureMap:
    """The feature map of the cut features are judged on (THE choice of
    :func:`spendwatch.warehouse.spend.feature_cut`, so savings and spend agree)."""
    return batch.feature_map_for(feature_cut(batch, organizations))


def _reason_sql(g: str = "g") -> str:
    """:func:`unpriced_reason` in SQL, for a group ``g`` that found no unit prices."""
    return (f"CASE WHEN {g}.model IS NULL THEN 'tokens without a model' "
            f"ELSE {sql_no_price_reason(g, 'm', 'NULL')} END")


def _price_join(g: str, p: str, tier: str | None = None) -> str:
    """Unit prices of group ``g`` on its UTC day: at its tier, or at ``tier``; global
    inference at standard speed (stored usage knows neither)."""
    match = sql_price_match(g, p, f"{g}.utc_day", f"{g}.context_window", "NULL", "NULL",
                            tier=f"'{tier}'" if tier else None)
    return f"LEFT JOIN unit_prices {p} ON {match}"


@dataclass(frozen=True)
class _Groups:
    """The query of :func:`_groups`: a WITH list whose last relation is ``ledger_groups``."""

    sql: str
    params: dict[str, Any]


def _groups(batch: Batch, since: date, until: date, organizations: Sequence[str],
            dated: bool = False) -> _Groups:
    """Usage tokens summed per UTC day, organization, feature, model, tier and window (and
    ``dated``, per local date first), rounded to whole tokens, each with its unit prices per
    token at its tier (``p_*``, NULL when unpriced, with ``reason``) and at the standard tier
    (``s_*``), and the batch multiplier of its day. One scan of the period's usage (its scan
    range is the period's local days: a group's hours all fall on them); every figure of the
    ledger is aggregated from these groups in the same query (:func:`_aggregate`: handing a
    year's 256,000 groups to Python and back as Arrow cost a tenth of the ledger). Features
    judged on another cut have fractional tokens (shares of the key cut's): they are rounded
    per group, so the dated groups of :func:`realized` (a UTC day split over two local dates
    rounds twice) may add up to a token more or less per group than a period's."""
    fmap = _feature_map(batch, organizations)
    register_prices(batch.conn, price_table(batch.config.prices))
    tier = ", ".join(f"p.{c} AS p_{c}" for c in UNIT_PRICE_COLUMNS)
    keys = f"date, {_GROUP_KEYS}" if dated else _GROUP_KEYS
    sql = f"""
        WITH {_usage_sql(fmap, organizations, dated)},
        summed AS (
            SELECT {keys}, {", ".join(f"round(sum({t}))::HUGEINT AS {t}" for t in _TOKENS)}
            FROM usage
            GROUP BY {keys}),
        ledger_groups AS (
            SELECT g.*, {tier}, s.input_usd AS s_input_usd, s.output_usd AS s_output_usd,
                   p.batch_multiplier AS batch_multiplier,
                   CASE WHEN p.model IS NULL OR s.model IS NULL THEN {_reason_sql()} END
                       AS reason
            FROM summed g
            {_price_join("g", "p")}
            {_price_join("g", "s", STANDARD_TIER)}
            LEFT JOIN priced_models m ON m.model = {sql_canonical_model("g.model")})"""
    return _Groups(sql, _params(batch.config, since, until, organizations, fmap.params,
                                dated=dated))


def _aggregate(batch: Batch, groups: _Groups, sql: str) -> list[tuple[Any, ...]]:
    """``sql`` over the groups of :func:`_groups` (as the relation ``g``)."""
    return batch.conn.execute(f"{groups.sql} {sql.replace('{groups}', 'ledger_groups g')}",
                              groups.params).fetchall()


#: SQL over a group g: its dollars (per-token prices, so no division by a million).
_ACTUAL = ("(g.uncached_input_tokens * g.p_input_usd + g.cache_write_5m_tokens * "
           "g.p_cache_write_5m_usd + g.cache_write_1h_tokens * g.p_cache_write_1h_usd + "
           "g.cache_read_tokens * g.p_cache_read_usd + g.output_tokens * g.p_output_usd)")
_PROMPT = ("(g.uncached_input_tokens + g.cache_write_5m_tokens + g.cache_write_1h_tokens + "
           "g.cache_read_tokens)")
_NO_CACHE = f"({_PROMPT} * g.p_input_usd + g.output_tokens * g.p_output_usd)"
_BASELINE = f"({_PROMPT} * g.s_input_usd + g.output_tokens * g.s_output_usd)"
_ALL_TOKENS = f"({_PROMPT} + g.output_tokens)"


def _money(value: Any) -> Decimal:
    return Decimal(0) if value is None else Decimal(value)


def _tokens(values: Sequence[Any]) -> TokenCounts:
    return TokenCounts(*(int(v or 0) for v in values))


def _add(a: TokenCounts, b: TokenCounts) -> TokenCounts:
    return TokenCounts(a.input + b.input, a.cache_write_5m + b.cache_write_5m,
                       a.cache_write_1h + b.cache_write_1h, a.cache_read + b.cache_read,
                       a.output + b.output)


def _total(tokens: TokenCounts) -> int:
    return tokens.prompt + tokens.output


# --- realized --------------------------------------------------------------------------------

#: The realized figures of a grain's groups, after its keys: priced tokens, actual, no-cache
#: and baseline dollars, unpriced tokens and their reasons (:func:`_realized_row`).
_REALIZED_SQL = f"""
    {", ".join(f"sum(g.{t}) FILTER (WHERE g.reason IS NULL)" for t in _TOKENS)},
    sum({_ACTUAL}::DECIMAL(38, 18)) FILTER (WHERE g.reason IS NULL),
    sum({_NO_CACHE}::DECIMAL(38, 18)) FILTER (WHERE g.reason IS NULL),
    sum({_BASELINE}::DECIMAL(38, 18)) FILTER (WHERE g.reason IS NULL),
    coalesce(sum({_ALL_TOKENS}) FILTER (WHERE g.reason IS NOT NULL), 0),
    list(DISTINCT g.reason ORDER BY g.reason) FILTER (WHERE g.reason IS NOT NULL)"""


def _realized_row(day: date | None, org: str, feature: str, model: str | None,
                  values: Sequence[Any]) -> RealizedRow:
    """A RealizedRow from the keys and the columns of :data:`_REALIZED_SQL`."""
    *tokens, actual, no_cache, baseline, unpriced, reasons = values
    actual, no_cache, baseline = _money(actual), _money(no_cache), _money(baseline)
    return RealizedRow(
        date=day, organization=org, feature=feature, model=model, tokens=_tokens(tokens),
        actual_usd=actual, no_cache_usd=no_cache, baseline_usd=baseline,
        cache_savings_usd=no_cache - actual, batch_savings_usd=baseline - no_cache,
        realized_total_usd=baseline - actual, unpriced_tokens=int(unpriced),
        unpriced_reasons=tuple(reasons or ()))


def _realized(batch: Batch, groups: _Groups) -> list[RealizedRow]:
    """Realized rows per local date (the ledger's, per period, come from :func:`_model_sums`)."""
    keys = "g.date, g.organization, g.feature, g.model"
    rows = _aggregate(batch, groups, f"""
        SELECT {keys}, {_REALIZED_SQL}
        FROM {{groups}}
        GROUP BY {keys}
        ORDER BY g.date, g.organization, g.feature, g.model NULLS FIRST""")
    return [_realized_row(day, org, feature, model, values)
            for day, org, feature, model, *values in rows]


def realized(batch: Batch, since: date, until: date,
             organizations: Sequence[str] = ()) -> list[RealizedRow]:
    """Realized savings per local date, organization, feature and model (module docstring).

    ``since``..``until`` are local days in ``config.tz``, both included. Raises ValueError when
    ``until`` is before ``since``.
    """
    _check_period(since, until)
    return _realized(batch, _groups(batch, since, until, organizations, dated=True))


# --- cache waste -----------------------------------------------------------------------------

def cache_waste(batch: Batch, since: date, until: date,
                organizations: Sequence[str] = ()) -> list[WasteRow]:
    """Cache writes not read within their window, per local date, organization, feature, model.

    Hour by hour (see the module docstring): writes of hour h are wasted when the same
    organization, feature and model has no cache read in hour h nor h + 1; judged only once
    h + 1 is collected. A lower bound. Raises ValueError when ``until`` is before ``since``.
    """
    _check_period(since, until)
    config, fmap = batch.config, _feature_map(batch, organizations)
    register_prices(batch.conn, price_table(config.prices))
    keys = "organization, feature, model"
    same = " AND ".join(["{a}.organization = {b}.organization", "{a}.feature = {b}.feature",
                         "{a}.model IS NOT DISTINCT FROM {b}.model"])
    stream = "usage" if fmap.basis is None else f"usage:{fmap.basis}"
    # The hours of each organization, feature and model first (their reads, whether they
    # wrote), the hours that wasted their writes from those alone (no reads in them nor in
    # the next hour: few, usually), and only those hours' writes per tier and window, dated
    # and priced. (Joining every hour's writes with two hours of reads took most of a
    # year's ledger.)
    sql = f"""
        WITH {_usage_sql(fmap, organizations, dated=False)},
        hours AS (SELECT {keys}, bucket_start, sum(cache_read_tokens) AS reads,
                         bool_or(cache_write_5m_tokens <> 0 OR cache_write_1h_tokens <> 0)
                             AS wrote
                  FROM usage GROUP BY {keys}, bucket_start),
        dead AS (
            SELECT h.organization, h.feature, h.model, h.bucket_start
            FROM hours h
            JOIN sync_state s ON s.organization = h.organization AND s.stream = '{stream}'
                AND h.bucket_start + INTERVAL 2 HOUR <= s.covered_until
            WHERE h.wrote AND h.reads = 0 AND h.bucket_start < $scan_to - INTERVAL 1 HOUR
              AND NOT EXISTS (SELECT 1 FROM hours n WHERE {same.format(a="n", b="h")}
                              AND n.bucket_start = h.bucket_start + INTERVAL 1 HOUR
                              AND n.reads <> 0)),
        writes AS (SELECT u.utc_day, u.organization, u.feature, u.model, u.service_tier,
                          u.context_window, u.bucket_start,
                          round(sum(u.cache_write_5m_tokens))::HUGEINT AS w5,
                          round(sum(u.cache_write_1h_tokens))::HUGEINT AS w1
                   FROM usage u
                   JOIN dead d ON {same.format(a="d", b="u")} AND d.bucket_start = u.bucket_start
                   WHERE u.cache_write_5m_tokens <> 0 OR u.cache_write_1h_tokens <> 0
                   GROUP BY ALL),
        wasted AS (
            SELECT (bucket_start AT TIME ZONE $tz)::DATE AS date, {_GROUP_KEYS},
                   sum(w5) AS w5, sum(w1) AS w1
            FROM writes
            GROUP BY ALL)
        SELECT g.date, g.organization, g.feature, g.model, sum(g.w5), sum(g.w1),
               sum((g.w5 * (p.cache_write_5m_usd - p.input_usd)
                    + g.w1 * (p.cache_write_1h_usd - p.input_usd))::DECIMAL(38, 18))
                   FILTER (WHERE p.model IS NOT NULL),
               coalesce(sum(g.w5 + g.w1) FILTER (WHERE p.model IS NULL), 0)
        FROM wasted g
        {_price_join("g", "p")}
        GROUP BY g.date, g.organization, g.feature, g.model
        ORDER BY g.date, g.organization, g.feature, g.model NULLS FIRST"""
    params = _params(config, since, until, organizations, fmap.params,
                     scan_extra=timedelta(hours=1))  # reads of the hour after the last one
    return [WasteRow(day, org, feature, model, int(w5), int(w1), _money(usd_), int(unpriced))
            for day, org, feature, model, w5, w1, usd_, unpriced
            in batch.conn.execute(sql, params).fetchall()]


# --- potential -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _ModelSums:
    """What the levers need of one organization, feature and model over the period."""

    model: str | None
    tokens: TokenCounts              # every row, priced or not
    cost: Decimal                    # actual cost of the rows priced at their tier
    unpriced_tokens: int             # tokens of the rows not priced at their tier
    uncached_weight: Decimal         # sum U (p_in - p_r) of the priced rows, in dollars
    unpriced_uncached: int           # U of the rows not priced at their tier
    standard_cost: Decimal           # cost of the priced standard-tier rows
    batch_saving: Decimal            # sum cost x (1 - batch_multiplier) of those rows
    standard_unpriced: int           # tokens of the standard-tier rows without a price


def _model_sums(batch: Batch, groups: _Groups, with_realized: bool = False
                ) -> tuple[dict[tuple[str, str], list[_ModelSums]], list[RealizedRow]]:
    """What the levers need per organization, feature and model, and (``with_realized``) the
    realized rows of the same grain, from one aggregation of the groups."""
    priced, unpriced = "FILTER (WHERE g.reason IS NULL)", "FILTER (WHERE g.reason IS NOT NULL)"
    standard = "coalesce(g.service_tier, 'standard') = 'standard'"
    realized = f", {_REALIZED_SQL}" if with_realized else ""
    rows = _aggregate(batch, groups, f"""
        SELECT g.organization, g.feature, g.model,
               {", ".join(f"sum(g.{t})" for t in _TOKENS)},
               sum({_ACTUAL}::DECIMAL(38, 18)) {priced},
               coalesce(sum({_ALL_TOKENS}) {unpriced}, 0),
               sum((g.uncached_input_tokens * (g.p_input_usd - g.p_cache_read_usd))
                   ::DECIMAL(38, 18)) {priced},
               coalesce(sum(g.uncached_input_tokens) {unpriced}, 0),
               sum({_ACTUAL}::DECIMAL(38, 18))
                   FILTER (WHERE {standard} AND g.reason IS NULL
                           AND g.batch_multiplier IS NOT NULL),
               sum(({_ACTUAL} * (1 - g.batch_multiplier::DECIMAL(9, 6)))::DECIMAL(38, 18))
                   FILTER (WHERE {standard} AND g.reason IS NULL),
               coalesce(sum({_ALL_TOKENS}) FILTER (WHERE {standard} AND (g.reason IS NOT NULL
                   OR g.batch_multiplier IS NULL)), 0){realized}
        FROM {{groups}}
        GROUP BY g.organization, g.feature, g.model
        ORDER BY g.organization, g.feature, g.model NULLS FIRST""")
    out: dict[tuple[str, str], list[_ModelSums]] = defaultdict(list)
    realized_rows = []
    for row in rows:
        org, feature, model, u, w5, w1, r, o, cost, up, weight, uu, std, saving, sup = row[:15]
        out[(org, feature)].append(_ModelSums(
            model, _tokens((u, w5, w1, r, o)), _money(cost), int(up), _money(weight),
            int(uu), _money(std), _money(saving), int(sup)))
        if with_realized:
            realized_rows.append(_realized_row(None, org, feature, model, row[15:]))
    return out, realized_rows


def _batch_lever(org: str, feature: str, models: Sequence[_ModelSums],
                 days: int) -> PotentialRow | None:
    standard_cost = sum((m.standard_cost for m in models), Decimal(0))
    savings = sum((m.batch_saving for m in models), Decimal(0))
    if savings <= 0:
        return None
    month = monthly(savings, days)
    return PotentialRow(
        "batch", org, feature, savings, month,
        f"move feature {feature} to the Batch API: about {usd(month)} a month "
        f"({usd(savings)} in {_days_text(days)})",
        {"standard_cost_usd": standard_cost,
         "by_model": {m.model or "": m.batch_saving for m in models if m.batch_saving},
         "unpriced_tokens": sum(m.standard_unpriced for m in models)})


def _caching_lever(org: str, feature: str, models: Sequence[_ModelSums], target: Decimal,
                   days: int) -> PotentialRow | None:
    tokens = TokenCounts()
    for m in models:
        tokens = _add(tokens, m.tokens)
    ratio = hit_ratio(tokens)
    if ratio is None or ratio >= target:
        return None
    extra = extra_reads(tokens, target)
    weight = sum((m.uncached_weight for m in models), Decimal(0))
    savings = caching_savings(extra, weight, tokens.input)
    if savings <= 0:
        return None
    by_model = {m.model or "": caching_savings(extra, m.uncached_weight, tokens.input)
                for m in models if m.uncached_weight}
    month = monthly(savings, days)
    return PotentialRow(
        "caching", org, feature, savings, month,
        f"raise the cache hit ratio of feature {feature} from {percent(ratio)} to "
        f"{percent(target)}: about {usd(month)} a month ({usd(savings)} in "
        f"{_days_text(days)}; the extra cache writes are not counted)",
        {"hit_ratio": ratio, "target": target, "total_input_tokens": tokens.prompt,
         "cache_read_tokens": tokens.cache_read, "uncached_input_tokens": tokens.input,
         "extra_reads": extra, "by_model": by_model,
         "unpriced_uncached_input_tokens": sum(m.unpriced_uncached for m in models)})


def _routing_ratios(config: Config, table: PriceTable, until: date) -> dict[str, Decimal] | None:
    """{"opus": ratio(sonnet, opus), "sonnet": ratio(haiku, sonnet)} on ``until``, or None."""
    inputs = {}
    for line in ROUTED_LINES:
        model = config.savings.line_models[line]
        price = table.unit_price(model, "input", until, STANDARD_TIER)
        if not price:
            log.warning("no input price for %s (savings.line_models.%s) on %s: no routing "
                        "potential", model, line, until)
            return None
        inputs[line] = price
    return {"opus": price_ratio(inputs["sonnet"], inputs["opus"]),
            "sonnet": price_ratio(inputs["haiku"], inputs["sonnet"])}


def _routing_lever(org: str, feature: str, models: Sequence[_ModelSums],
                   lines: Mapping[str | None, str | None], ratios: Mapping[str, Decimal],
                   config: Config, days: int) -> PotentialRow | None:
    cost_by_line: dict[str, Decimal] = defaultdict(Decimal)
    cost_by_model: dict[str, Decimal] = defaultdict(Decimal)
    for m in models:
        if m.cost or m.unpriced_tokens < _total(m.tokens):
            cost_by_line[lines.get(m.model) or "unknown"] += m.cost
            cost_by_model[m.model or ""] += m.cost
    moves = routing_moves(cost_by_line, config.savings.target_mix)
    savings = routing_potential(moves, ratios)
    if savings <= 0:
        return None
    month = monthly(savings, days)
    target = config.savings.target_mix
    steps = [f"{usd(moves[line])} of {line} spend to {down}"
             for line, down in (("opus", "sonnet"), ("sonnet", "haiku")) if moves[line]]
    mix_text = "/".join(str(int((target[line] * 100).to_integral_value(ROUND_HALF_UP)))
                        for line in ROUTED_LINES)
    return PotentialRow(
        "routing", org, feature, savings, month,
        f"route feature {feature} toward the {mix_text} haiku/sonnet/opus mix (move "
        f"{' and '.join(steps)}): about {usd(month)} a month ({usd(savings)} in "
        f"{_days_text(days)})",
        {"cost_by_line": dict(cost_by_line), "cost_by_model": dict(cost_by_model),
         "current_mix": line_mix(cost_by_line), "target_mix": dict(target),
         "moved_opus_to_sonnet_usd": moves["opus"],
         "moved_sonnet_to_haiku_usd": moves["sonnet"],
         "price_ratios": {"sonnet/opus": ratios["opus"], "haiku/sonnet": ratios["sonnet"]},
         "reference_models": dict(config.savings.line_models),
         "not_routed_usd": {line: cost for line, cost in cost_by_line.items()
                            if line not in ROUTED_LINES},
         "unpriced_tokens": sum(m.unpriced_tokens for m in models)})


def _potential(batch: Batch, by_feature: Mapping[tuple[str, str], Sequence[_ModelSums]],
               until: date, days: int) -> list[PotentialRow]:
    config = batch.config
    eligible = {rule.name for rule in config.features if rule.batch_eligible}
    lines = model_lines(batch.conn, {m.model for ms in by_feature.values() for m in ms})
    ratios = _routing_ratios(config, price_table(config.prices), until)
    rows: list[PotentialRow] = []
    for (org, feature), models in by_feature.items():
        candidates = [
            _batch_lever(org, feature, models, days) if feature in eligible else None,
            _caching_lever(org, feature, models, config.savings.cache_hit_target, days),
            (_routing_lever(org, feature, models, lines, ratios, config, days)
             if ratios else None),
        ]
        rows += [row for row in candidates if row is not None]
    rows.sort(key=lambda r: (-r.period_usd, r.organization, r.feature, r.lever))
    return rows


def potential(batch: Batch, since: date, until: date,
              organizations: Sequence[str] = ()) -> list[PotentialRow]:
    """What each lever could still save, per organization and feature (module docstring).

    Only savings above $0 are listed, largest first. ``detail`` per lever:

    - batch: ``standard_cost_usd``, ``by_model`` (savings), ``unpriced_tokens``;
    - caching: ``hit_ratio``, ``target``, ``total_input_tokens``, ``cache_read_tokens``,
      ``uncached_input_tokens``, ``extra_reads``, ``by_model`` (savings),
      ``unpriced_uncached_input_tokens``;
    - routing: ``cost_by_line``, ``cost_by_model``, ``current_mix``, ``target_mix``,
      ``moved_opus_to_sonnet_usd``, ``moved_sonnet_to_haiku_usd``, ``price_ratios``,
      ``reference_models``, ``not_routed_usd`` (other and unknown lines), ``unpriced_tokens``.

    Raises ValueError when ``until`` is before ``since``.
    """
    days = _check_period(since, until)
    by_feature, _ = _model_sums(batch, _groups(batch, since, until, organizations))
    return _potential(batch, by_feature, until, days)


# --- the ledger ------------------------------------------------------------------------------

def _totals(realized_rows: Sequence[RealizedRow], waste_rows: Sequence[WasteRow],
            potential_rows: Sequence[PotentialRow]) -> LedgerTotals:
    def total(values: Iterable[Decimal]) -> Decimal:
        return sum(values, Decimal(0))

    return LedgerTotals(
        actual_usd=total(r.actual_usd for r in realized_rows),
        no_cache_usd=total(r.no_cache_usd for r in realized_rows),
        baseline_usd=total(r.baseline_usd for r in realized_rows),
        cache_savings_usd=total(r.cache_savings_usd for r in realized_rows),
        batch_savings_usd=total(r.batch_savings_usd for r in realized_rows),
        realized_total_usd=total(r.realized_total_usd for r in realized_rows),
        wasted_tokens=sum(w.wasted_tokens for w in waste_rows),
        waste_usd=total(w.waste_usd for w in waste_rows),
        potential_period_usd={lever: total(p.period_usd for p in potential_rows
                                           if p.lever == lever) for lever in LEVERS},
        potential_monthly_usd={lever: total(p.monthly_usd for p in potential_rows
                                            if p.lever == lever) for lever in LEVERS},
        unpriced_tokens=sum(r.unpriced_tokens for r in realized_rows),
    )


@dataclass(frozen=True)
class Headline:
    """What the Overview says of the savings: the ledger's realized totals and its potential
    rows (biggest first), without the cache waste (the ledger's second scan of the period)."""

    since: date
    until: date
    days: int
    realized: list[RealizedRow]  # per organization, feature and model, over the period
    totals: LedgerTotals         # its waste figures are zero: not read here
    potential: list[PotentialRow]


def headline(batch: Batch, since: date, until: date,
             organizations: Sequence[str] = ()) -> Headline:
    """:func:`ledger`'s realized totals and potential, from the same functions (so the same
    figures as the Savings page), in one scan of the period's usage. Raises ValueError when
    ``until`` is before ``since``."""
    days = _check_period(since, until)
    by_feature, realized_rows = _model_sums(batch, _groups(batch, since, until, organizations),
                                            with_realized=True)
    potential_rows = _potential(batch, by_feature, until, days)
    return Headline(since, until, days, realized_rows, _totals(realized_rows, [], potential_rows),
                    potential_rows)


def ledger(batch: Batch, since: date, until: date,
           organizations: Sequence[str] = ()) -> Ledger:
    """Realized savings, cache waste and potential of local days ``since``..``until``, with totals.

    Raises ValueError when ``until`` is before ``since``.
    """
    head = headline(batch, since, until, organizations)
    waste_rows = cache_waste(batch, since, until, organizations)
    return Ledger(since, until, head.days, head.realized, waste_rows, head.potential,
                  _totals(head.realized, waste_rows, head.potential))
