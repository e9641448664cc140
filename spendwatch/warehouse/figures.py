"""What the surfaces show, built on THE spend query (:func:`spendwatch.warehouse.spend.spend`).

Every function takes a :class:`~spendwatch.warehouse.batch.Batch` (one open reader, the config,
and the name book and feature map built once for the batch; see
:func:`spendwatch.warehouse.batch.read`) and returns plain lists, dicts, dataclasses and
Decimals: never raw fact rows, never a connection. The dashboard (``app/``) caches these
results, not connections; the CLI, the alert rules, the weekly report and ``reconcile`` read the
same functions, so a figure two surfaces show can never differ.

Time
----
Local days are days in the configured time zone, both ends included. ``period`` buckets are
naive local timestamps (the start of the local hour, day or ISO week, Monday). A legacy cost
line (a whole UTC day) counts at local midnight of the date of the same name: the legacy day
rule of :mod:`spendwatch.warehouse.spend`, for days and UTC windows alike.

Nothing here writes: the dashboard creates and ends silences through :mod:`alerts`, like the
CLI.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

from spendwatch.config import Config, RuleConfig
from spendwatch.features import PERSON_TYPES, pseudonym
from spendwatch.lines import model_lines
from spendwatch.numbers import money_str
from spendwatch.savings import ROUTED_LINES, Headline, Ledger, headline, ledger
from spendwatch.savings import cache_waste as waste_rows
from spendwatch.text import csv_cell
from spendwatch.timeutil import DAY, HOUR, local_range, local_today
from spendwatch.warehouse.batch import Batch
from spendwatch.warehouse.spend import CACHE_STATUSES as CACHE_STATUSES
from spendwatch.warehouse.spend import GRAINS as GRAINS
from spendwatch.warehouse.spend import GROUP_KEYS as GROUP_KEYS
from spendwatch.warehouse.spend import METRICS as METRICS
from spendwatch.warehouse.spend import Filters, Row, feature_cut, total
from spendwatch.warehouse.spend import spend as spend  # the pages read it through this module

#: Dimensions spend can be broken down and filtered by (labels as the CLI prints them).
BREAKDOWN_DIMENSIONS = ("model", "feature", "workspace", "api_key", "service_tier",
                        "organization")
FILTER_DIMENSIONS = (*BREAKDOWN_DIMENSIONS, "cache_status", "cost_basis")
COST_BASES = ("billed", "allocated", "estimated")
INPUT_TOKEN_METRICS = ("uncached_input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
                       "cache_read_tokens")
#: What usually breaks a cache that worked: shown next to the moments the hit ratio fell.
CACHE_DROP_CAUSE = ("a changing value (a timestamp, an ID) or reordered tools early in the "
                    "cached prefix: every request writes a new cache and none reads it")


# --- spend ------------------------------------------------------------------------------------

def total_spend(batch: Batch, since: date, until: date,
                organizations: Sequence[str] = ()) -> Decimal:
    """Spend of local days ``since``..``until``: exactly ``spendwatch spend``'s total."""
    return total(batch, since, until, organizations=organizations)


#: How spend that is not a model's reads everywhere (code execution, session runtime, usage
#: the API reports without a model): the dashboard, the CLI, ``reconcile``, the demo, CSVs'
#: labels. One name, so a finance reader finds the same line on every surface.
NO_MODEL = "(not a model)"
#: How a missing value reads: see :data:`NO_MODEL`; "(none)" for any other dimension.
MISSING_LABELS = {"model": NO_MODEL}


def label_of(row: Row, dimension: str) -> str:
    """How a row's value of ``dimension`` reads on screen (see :data:`MISSING_LABELS`)."""
    value = row.get(dimension)
    return str(value) if value is not None else MISSING_LABELS.get(dimension, "(none)")


def value_of(row: Row, dimension: str) -> str | None:
    """The value of ``dimension`` that :func:`spend`'s ``filters`` take."""
    return row.get({"workspace": "workspace_id", "api_key": "api_key_id"}.get(dimension,
                                                                            dimension))


def dimension_values(batch: Batch, since: date,
                     until: date) -> dict[str, list[tuple[str | None, str]]]:
    """For each of :data:`FILTER_DIMENSIONS`, the (filter value, label) pairs seen in the
    period, biggest spender first (fixed lists for cache status and cost basis). One query,
    or two when features are judged on another cut than workspaces and keys."""
    if feature_cut(batch) is None:
        rows = spend(batch, since, until, BREAKDOWN_DIMENSIONS)
        feature_rows = rows
    else:
        rows = spend(batch, since, until, [d for d in BREAKDOWN_DIMENSIONS if d != "feature"])
        feature_rows = spend(batch, since, until, ["feature"])
    out: dict[str, list[tuple[str | None, str]]] = {}
    for dim in BREAKDOWN_DIMENSIONS:
        cost: dict[tuple[str | None, str], Decimal] = {}
        for row in (feature_rows if dim == "feature" else rows):
            key = (value_of(row, dim), label_of(row, dim))
            cost[key] = cost.get(key, Decimal(0)) + row["cost_usd"]
        out[dim] = [k for k, _ in sorted(cost.items(), key=lambda kv: (-kv[1], kv[0][1]))]
    out["cache_status"] = [(s, s) for s in CACHE_STATUSES]
    out["cost_basis"] = [(b, b) for b in COST_BASES]
    return out


def previous_period(since: date, until: date) -> tuple[date, date]:
    """The period of the same length that ends the day before ``since``."""
    days = (until - since).days + 1
    return since - timedelta(days=days), since - DAY


@dataclass(frozen=True)
class Comparison:
    """A period and the one it is compared with, like for like: local days ``since`` to
    ``until`` as a UTC window (``start``, ``end``), and the same number of days before it
    (``previous_start``, ``previous_end``). When the period holds ``now`` (today, partial),
    both end at the same local time of day: ``end`` is now, ``previous_end`` that time of day
    ``days`` earlier, so a day half over is never compared with whole days."""

    since: date
    until: date
    days: int
    start: datetime
    end: datetime
    previous_start: datetime
    previous_end: datetime
    partial: bool

    def previous_text(self, tz: ZoneInfo) -> str:
        """``2026-11-17 to 2026-11-23``, or ``2026-11-17 00:00 to 2026-11-23 14:09``."""
        first = self.previous_start.astimezone(tz)
        last = self.previous_end.astimezone(tz)
        if not self.partial:
            return f"{first:%Y-%m-%d} to {(last - DAY):%Y-%m-%d}"
        return f"{first:%Y-%m-%d} 00:00 to {last:%Y-%m-%d %H:%M}"


def comparison(config: Config, since: date, until: date, now: datetime | None = None
               ) -> Comparison:
    """The like-for-like :class:`Comparison` of local days ``since``..``until`` at ``now``."""
    tz = config.tz
    days = (until - since).days + 1
    start, end = local_range(since, until, tz)
    before_since, before_until = previous_period(since, until)
    previous_start, previous_end = local_range(before_since, before_until, tz)
    partial = now is not None and start <= now < end
    if partial:
        assert now is not None
        local_now = now.astimezone(tz)
        end = now
        previous_end = datetime.combine(local_now.date() - timedelta(days=days),
                                        local_now.time(), tzinfo=tz).astimezone(end.tzinfo)
    return Comparison(since, until, days, start, end, previous_start, previous_end, partial)


def is_stored(batch: Batch, start: datetime, end: datetime,
              organizations: Sequence[str] = ()) -> bool:
    """Whether every organization's usage and cost are stored over all of [start, end)."""
    span = stored_span(batch, organizations or [o.name for o in batch.config.organizations])
    return span is not None and span[0] <= start and end <= span[1]


def _kept_organizations(filters: Filters | None) -> list[str]:
    """The organizations a view's filters keep (none: every configured one)."""
    return [o for o in (filters or {}).get("organization", ()) if o is not None]


def compared_total(batch: Batch, since: date, until: date, filters: Filters | None = None,
                   now: datetime | None = None) -> Decimal | None:
    """The spend of the period that local days ``since``..``until`` are compared with at
    ``now`` (:func:`comparison`: the same hours when today is in it); None when that period
    is not stored whole (missing history is not $0)."""
    compared = comparison(batch.config, since, until, now)
    if not is_stored(batch, compared.previous_start, compared.previous_end,
                     _kept_organizations(filters)):
        return None
    return total(batch, filters=filters, start=compared.previous_start,
                 end=compared.previous_end)


def top_spenders(batch: Batch, since: date, until: date, dimension: str,
                 filters: Filters | None = None, limit: int = 10,
                 now: datetime | None = None) -> list[Row]:
    """The ``limit`` biggest spenders by ``dimension``, with the change against the previous
    period of the same length, like for like at ``now`` (:func:`comparison`: a partial
    today is compared with the same hours).

    Each row: ``label``, ``value`` (for filters), ``cost_usd``, ``previous_usd``,
    ``change_usd``, ``change_pct`` (None when nothing was spent before: new), ``share`` of
    the period's spend, ``tokens`` (every token of the usage), ``requests`` (None where the
    API reports none), and the cost ``per_mtok_usd`` (per million tokens) and
    ``per_request_usd`` (None without tokens or requests: see :func:`unit_cost`). When the
    previous period is not stored whole, ``previous_usd``, ``change_usd`` and ``change_pct``
    are None (missing history is not $0).
    """
    if dimension not in BREAKDOWN_DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}")
    compared = comparison(batch.config, since, until, now)
    now_rows = spend(batch, by=[dimension], filters=filters, start=compared.start,
                     end=compared.end)
    stored = is_stored(batch, compared.previous_start, compared.previous_end,
                       _kept_organizations(filters))
    then_rows = spend(batch, by=[dimension], filters=filters, start=compared.previous_start,
                      end=compared.previous_end) if stored else []
    # by the filter value (an ID for workspaces and keys): two keys may share a name
    previous = {value_of(r, dimension): r["cost_usd"] for r in then_rows}
    total = sum((r["cost_usd"] for r in now_rows), Decimal(0))
    out = []
    for row in sorted(now_rows, key=lambda r: -r["cost_usd"])[:limit]:
        label = label_of(row, dimension)
        was = previous.get(value_of(row, dimension), Decimal(0)) if stored else None
        tokens = token_total(row)
        out.append({"label": label, "value": value_of(row, dimension),
                    "cost_usd": row["cost_usd"], "previous_usd": was,
                    "change_usd": row["cost_usd"] - was if was is not None else None,
                    "change_pct": (row["cost_usd"] - was) / was * 100 if was else None,
                    "share": row["cost_usd"] / total if total else None,
                    "tokens": tokens, "requests": row["requests"],
                    "per_mtok_usd": unit_cost(row["cost_usd"], tokens, 1_000_000),
                    "per_request_usd": unit_cost(row["cost_usd"], row["requests"])})
    return out


def token_total(row: Mapping[str, Any]) -> int:
    """Every token of a spend row: uncached input, cache writes and reads, output."""
    return sum(int(row[m]) for m in (*INPUT_TOKEN_METRICS, "output_tokens"))


def unit_cost(cost: Decimal, units: int | None, per: int = 1) -> Decimal | None:
    """``cost`` per ``per`` units (dollars per million tokens, per request); None without
    units. The cost is all of the row's, web search and code execution included."""
    return cost * per / units if units else None


#: Human titles of the spend query's columns: the dashboard's tables and its CSV download.
COLUMN_TITLES = {
    "date": "Date", "organization": "Organization", "workspace": "Workspace",
    "workspace_id": "Workspace ID", "api_key": "API key", "api_key_id": "API key ID",
    "feature": "Feature", "model": "Model", "service_tier": "Service tier",
    "cache_status": "Cache status", "cost_basis": "Cost basis", "person": "Person",
    "person_id": "Person ID", "product": "Product", "rbac_group": "RBAC group",
    "user_profile": "User profile", "inference_geo": "Inference geo", "speed": "Speed",
    "cost_type": "Cost type", "cost_usd": "Cost (USD)",
    "uncached_input_tokens": "Uncached input tokens",
    "cache_write_5m_tokens": "Cache write 5m tokens",
    "cache_write_1h_tokens": "Cache write 1h tokens", "cache_read_tokens": "Cache read tokens",
    "output_tokens": "Output tokens", "web_search_requests": "Web searches",
    "unpriced_tokens": "Unpriced tokens",
}


def csv_columns(by: Sequence[str]) -> list[str]:
    """The columns of :func:`spend_csv`: the dimensions (workspace and API key followed by
    their IDs), then the metrics under the CLI's JSON names."""
    columns: list[str] = []
    for key in by:
        columns += {"workspace": ["workspace", "workspace_id"],
                    "api_key": ["api_key", "api_key_id"]}.get(key, [key])
    return [*columns, *METRICS, "unpriced_tokens"]


def spend_csv(rows: Iterable[Row], by: Sequence[str], human: bool = False) -> str:
    """A CSV of :func:`spend` rows (:func:`csv_columns`), money as exact decimal
    strings, as ``spendwatch spend --json`` writes it; text cells as every CSV writes them
    (:func:`spendwatch.text.csv_cell`: no cell a spreadsheet runs as a formula). The header
    is the JSON's names, or with ``human`` their titles (:data:`COLUMN_TITLES`: "Cost (USD)",
    for a spreadsheet; the rows are the same)."""
    columns = csv_columns(by)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([COLUMN_TITLES.get(c, c) for c in columns] if human else columns)
    for row in rows:
        writer.writerow([money_str(row[c]) if isinstance(row.get(c), Decimal) else
                         row[c] if isinstance(row.get(c), int) else csv_cell(row.get(c))
                         for c in columns])
    return out.getvalue()


# --- today, the month, the forecast ----------------------------------------------------------

@dataclass(frozen=True)
class MonthToDate:
    """Today's and this month's spend (local days) and the month-end forecast.

    ``stored_from`` is when the stored data begins (:func:`stored_from`); when the month is not
    stored from its first day (``complete`` false), month-to-date counts only what is stored
    and ``forecast_usd`` is None ("no data", as the ``monthly_budget`` rule says). The forecast
    is None too before one complete day is stored. ``history_days``: the complete days its
    daily rate was read from (:func:`month_end_forecast`).
    """

    today: date
    today_usd: Decimal
    month_to_date_usd: Decimal
    forecast_usd: Decimal | None
    days_in_month: int
    stored_from: datetime | None
    complete: bool
    history_days: int = 0


def days_in_month(day: date) -> int:
    first = day.replace(day=1)
    return ((first + timedelta(days=32)).replace(day=1) - first).days


#: The complete days before today the forecast's daily rate is read from, at most.
FORECAST_HISTORY_DAYS = 28
#: The rate's level: the mean of this many latest complete days (a jump shows within a week).
FORECAST_LEVEL_DAYS = 7
#: Complete days needed before the weekday shape is used (every weekday twice).
FORECAST_SHAPE_DAYS = 14
#: How the forecast is made, in words (the Overview's help, the README, the rule's docs).
FORECAST_METHOD = (
    "month to date, plus the rest of today and every day left in the month at a daily rate: "
    f"the mean of the last {FORECAST_LEVEL_DAYS} complete days, times the day's weekday share "
    f"of the last {FORECAST_HISTORY_DAYS} (once {FORECAST_SHAPE_DAYS} days are stored; "
    "weekends are usually quieter). No forecast before a complete day is stored")


def daily_rates(history: Mapping[date, Decimal]) -> dict[int, Decimal] | None:
    """The forecast's daily rate per weekday (0 = Monday) from the spend of complete local
    days (:data:`FORECAST_METHOD`); None without one such day."""
    days = sorted(history)[-FORECAST_HISTORY_DAYS:]
    if not days:
        return None
    latest = days[-FORECAST_LEVEL_DAYS:]
    level = sum((history[d] for d in latest), Decimal(0)) / len(latest)
    rates = {weekday: level for weekday in range(7)}
    if len(days) >= FORECAST_SHAPE_DAYS:
        by_weekday: dict[int, list[Decimal]] = {}
        for d in days:
            by_weekday.setdefault(d.weekday(), []).append(history[d])
        means = {w: sum(v, Decimal(0)) / len(v) for w, v in by_weekday.items()}
        # A weekday's share is its mean over the mean of the seven weekday means (not of all
        # the days: with 15-27 days some weekdays count three times), so a week's rates add
        # up to seven times the level.
        mean = sum(means.values(), Decimal(0)) / len(means)
        if mean > 0:
            rates = {w: level * means.get(w, mean) / mean for w in range(7)}
    return rates


def month_end_forecast(month_to_date_usd: Decimal, history: Mapping[date, Decimal],
                       now: datetime, tz: ZoneInfo) -> Decimal | None:
    """Month-to-date + the rest of today and the days left at :func:`daily_rates` (the
    method, :data:`FORECAST_METHOD`); None when ``history`` (spend per complete local day
    before today, only days stored) is empty. THE forecast: the Overview and the
    ``monthly_budget`` alert rule (:mod:`alerts.rules`) read it through
    :func:`month_to_date`."""
    rates = daily_rates(history)
    if rates is None:
        return None
    today = local_today(now, tz)
    today_start, today_end = local_range(today, today, tz)
    left_today = Decimal((today_end - max(now, today_start)).total_seconds()) / Decimal(
        (today_end - today_start).total_seconds())
    rest = rates[today.weekday()] * max(Decimal(0), left_today)
    day = today + DAY
    while day.month == today.month:
        rest += rates[day.weekday()]
        day += DAY
    return month_to_date_usd + rest


def stored_from(batch: Batch, organizations: Sequence[str]) -> datetime | None:
    """From when every organization's usage and cost are both stored without a gap
    (``sync_state``), None when one of them is missing. Alert rules use it too."""
    span = stored_span(batch, organizations)
    return span[0] if span else None


def stored_span(batch: Batch, organizations: Sequence[str]
                ) -> tuple[datetime, datetime] | None:
    """The UTC span over which every organization's usage and cost are both stored
    (``sync_state``: the latest start, the earliest end), None when one is missing."""
    starts, ends = [], []
    for org in organizations:
        row = batch.conn.execute("SELECT max(covered_from), min(covered_until), count(*) "
                                 "FROM sync_state WHERE organization = ? AND stream IN "
                                 "('usage', 'cost')", [org]).fetchone()
        if not row or row[2] < 2:
            return None
        starts.append(row[0])
        ends.append(row[1])
    return (max(starts), min(ends)) if starts else None


def month_to_date(batch: Batch, now: datetime, organizations: Sequence[str] = (),
                  filters: Filters | None = None) -> MonthToDate:
    """Today's spend, month-to-date spend and the month-end forecast at ``now``, over
    ``organizations`` (default: every configured one) and ``filters`` (an alert rule's
    scope). The forecast's history is the spend of the complete local days before today,
    the last :data:`FORECAST_HISTORY_DAYS` of them that are stored whole."""
    config = batch.config
    today = local_today(now, config.tz)
    first = today.replace(day=1)
    span = stored_span(batch, organizations or [o.name for o in config.organizations])
    begins = span[0] if span else None
    since = today - timedelta(days=FORECAST_HISTORY_DAYS)
    # From 30 days back at least: the Overview's last 30 days are then read from these rows.
    per_day = day_totals(days_by_basis(batch, min(since - DAY, first), today, filters,
                                       organizations))
    today_usd = per_day.get(today, Decimal(0))
    complete_usd = sum((v for d, v in per_day.items() if first <= d < today), Decimal(0))
    complete = begins is not None and begins <= local_range(first, first, config.tz)[0]
    # Only days stored whole: a day before the data begins or after it ends is not $0.
    history = {d: per_day.get(d, Decimal(0))
               for d in (since + timedelta(days=n) for n in range(FORECAST_HISTORY_DAYS))
               if span is not None and span[0] <= local_range(d, d, config.tz)[0]
               and local_range(d, d, config.tz)[1] <= span[1]}
    forecast = (month_end_forecast(complete_usd + today_usd, history, now, config.tz)
                if complete else None)
    return MonthToDate(today, today_usd, complete_usd + today_usd, forecast,
                       days_in_month(today), begins, complete, len(history))


@dataclass(frozen=True)
class LastMonth:
    """Last month against this one (local days): ``total_usd`` is last month's whole spend,
    ``to_date_usd`` its spend from its first day to the same day of the month and time of day
    as now (its last day when it is shorter). Each is None when its days are not stored whole
    (missing history is not $0)."""

    first: date                      # the first day of last month
    total_usd: Decimal | None
    to_date_usd: Decimal | None
    to_date_end: datetime            # where "to the same day" ends


def last_month(batch: Batch, now: datetime, organizations: Sequence[str] = ()) -> LastMonth:
    """:class:`LastMonth` at ``now`` over ``organizations`` (default: every configured one)."""
    tz = batch.config.tz
    today = local_today(now, tz)
    first = (today.replace(day=1) - DAY).replace(day=1)
    last = today.replace(day=1) - DAY
    start, end = local_range(first, last, tz)
    same_day = first.replace(day=min(today.day, last.day))
    local_now = now.astimezone(tz)
    cut = datetime.combine(same_day, local_now.time(), tzinfo=tz).astimezone(now.tzinfo)
    if today.day > last.day:  # this month is longer: all of last month
        cut = end
    orgs = organizations or [o.name for o in batch.config.organizations]
    whole, to_cut = is_stored(batch, start, end, orgs), is_stored(batch, start, cut, orgs)
    # One query of the month's days; "to the same day" adds its whole days before that day
    # and the hours of that day up to now's time of day (a second, small query).
    per_day = day_totals(days_by_basis(batch, first, last, organizations=organizations)
                         ) if whole or to_cut else {}
    month_usd = sum(per_day.values(), Decimal(0)) if whole else None
    to_date: Decimal | None = None
    if to_cut:
        if cut == end:
            to_date = sum(per_day.values(), Decimal(0))
        else:
            day_start, _ = local_range(same_day, same_day, tz)
            to_date = sum((v for d, v in per_day.items() if d < same_day), Decimal(0)) + total(
                batch, start=day_start, end=cut, organizations=organizations)
    return LastMonth(first, month_usd, to_date, cut)


def days_by_basis(batch: Batch, since: date, until: date, filters: Filters | None = None,
                  organizations: Sequence[str] = ()) -> list[Row]:
    """:func:`spend` by date and cost basis, shared within the batch: a call for days inside
    the days of an earlier call (same filters and organizations) reads that call's rows, so
    a page's day figures (month to date and its forecast, the last 30 days) cost one query."""
    key = ("days_by_basis", tuple(sorted((k, tuple(v)) for k, v in (filters or {}).items()
                                         if v)), tuple(organizations))
    for (first, last), rows in batch.memo.get(key, {}).items():
        if first <= since and until <= last:
            return [r for r in rows if since <= r["date"] <= until]
    rows = spend(batch, since, until, ["date", "cost_basis"], filters,
                 organizations=organizations)
    batch.memo.setdefault(key, {})[(since, until)] = rows
    return rows


def day_totals(rows: Iterable[Row]) -> dict[date, Decimal]:
    """The spend of each local date in rows of :func:`days_by_basis` (all bases)."""
    out: dict[date, Decimal] = {}
    for row in rows:
        out[row["date"]] = out.get(row["date"], Decimal(0)) + row["cost_usd"]
    return out


def daily_spend(batch: Batch, since: date, until: date) -> list[Row]:
    """Spend per local day and cost basis (billed, allocated, estimated): the Overview's and
    the Spend page's days. A day's rows add up to ``spendwatch spend --by date``'s day."""
    return [r for r in days_by_basis(batch, since, until) if r["cost_basis"] is not None]


@dataclass(frozen=True)
class Budget:
    """The monthly budget the Overview compares the forecast with."""

    rule: str
    budget_usd: Decimal
    organizations: tuple[str, ...]


def monthly_budget(config: Config) -> Budget | None:
    """The first ``monthly_budget`` rule over everything (or over organizations only), or None.

    A rule scoped to a feature, model, workspace or API key budgets a part of the spend, which
    the Overview's totals are not; it is left to the Alerts page.
    """
    candidates: list[RuleConfig] = [r for r in config.alerts.rules if r.kind == "monthly_budget"
                                    and set(r.scope) <= {"organization"}]
    candidates.sort(key=lambda r: bool(r.scope))
    if not candidates:
        return None
    rule = candidates[0]
    orgs = (rule.scope["organization"],) if "organization" in rule.scope else ()
    return Budget(rule.name, rule.params["budget_usd"], orgs)


# --- caching ----------------------------------------------------------------------------------

def hit_ratio(row: Mapping[str, Any]) -> Decimal | None:
    """Cache reads / (uncached input + cache writes + cache reads), None without input."""
    total = sum(int(row[m]) for m in INPUT_TOKEN_METRICS)
    return Decimal(int(row["cache_read_tokens"])) / Decimal(total) if total else None


def cache_hit_ratio(batch: Batch, since: date, until: date,
                    organizations: Sequence[str] = ()) -> Decimal | None:
    """The hit ratio over local days ``since``..``until`` (None when nothing was read in)."""
    rows = spend(batch, since, until, organizations=organizations)
    return hit_ratio({m: sum(r[m] for r in rows) for m in INPUT_TOKEN_METRICS})


#: What the hit ratio can be followed per: a cached prefix belongs to one feature and model.
CACHE_GROUPS: dict[str, tuple[str, ...]] = {"feature": ("feature",), "model": ("model",),
                                            "feature and model": ("feature", "model")}


def cache_series(batch: Batch, since: date, until: date, per: str, grain: str = "day", filters: Filters | None = None) -> list[Row]:
    """Input tokens and the hit ratio per ``grain`` bucket and ``per`` (a key of
    :data:`CACHE_GROUPS`: model, feature, or feature and model, labelled "feature / model").

    Each row: ``period``, ``group``, the four input token metrics, ``input_tokens`` (their sum)
    and ``hit_ratio`` (None without input); groups with no input at all are left out.
    """
    if per not in CACHE_GROUPS:
        raise ValueError(f"per must be one of {', '.join(CACHE_GROUPS)}, not {per!r}")
    dims = CACHE_GROUPS[per]
    out = []
    for row in spend(batch, since, until, ["period", *dims], filters, grain,
                     metrics=INPUT_TOKEN_METRICS):
        total = sum(row[m] for m in INPUT_TOKEN_METRICS)
        out.append({"period": row["period"],
                    "group": " / ".join(label_of(row, d) for d in dims),
                    **{m: row[m] for m in INPUT_TOKEN_METRICS}, "input_tokens": total,
                    "hit_ratio": hit_ratio(row)})
    return out


def top_groups(series: Sequence[Mapping[str, Any]], keep: int = 10,
               other: str = "other") -> list[Row]:
    """:func:`cache_series` rows with only the ``keep`` groups of most input tokens over the
    whole series; the rest summed per period into one ``other`` group, its hit ratio that of
    their summed tokens (a chart of 400 features' lines is unreadable)."""
    totals: dict[str, int] = {}
    for row in series:
        totals[row["group"]] = totals.get(row["group"], 0) + row["input_tokens"]
    if len(totals) <= keep:
        return [dict(r) for r in series]
    kept = set(sorted(totals, key=lambda g: (-totals[g], g))[:keep])
    out = [dict(r) for r in series if r["group"] in kept]
    rest: dict[Any, Row] = {}
    for row in series:
        if row["group"] not in kept:
            summed = rest.setdefault(row["period"], {"period": row["period"], "group": other,
                                                     **{m: 0 for m in INPUT_TOKEN_METRICS}})
            for m in INPUT_TOKEN_METRICS:
                summed[m] += row[m]
    for summed in rest.values():
        summed["input_tokens"] = sum(summed[m] for m in INPUT_TOKEN_METRICS)
        summed["hit_ratio"] = hit_ratio(summed)
    return out + sorted(rest.values(), key=lambda r: r["period"])


def cache_ratio_drops(series: Sequence[Mapping[str, Any]], *, fall: Decimal = Decimal("0.5"),
                      min_input_tokens: int = 100_000, history: int = 24,
                      min_history: int = 6) -> list[Row]:
    """The moments the hit ratio fell: hours whose ratio is at most ``fall`` x the usual one.

    ``series`` are hourly rows of :func:`cache_series` (``period``, ``group``,
    ``input_tokens``, ``hit_ratio``). The usual ratio of a group is the median of its last
    ``history`` hours with at least ``min_input_tokens`` input tokens (at least
    ``min_history`` of them, and above 0). Hours under ``min_input_tokens`` are not judged.
    Consecutive fallen hours make one moment: ``group``, ``start``, ``end`` (exclusive),
    ``hours``, ``lowest_ratio``, ``usual_ratio``, ``input_tokens``, ``cache_read_tokens``
    expected but missing (``missing_reads``). Newest first.
    """
    by_group: dict[str, list[Mapping[str, Any]]] = {}
    for row in sorted(series, key=lambda r: r["period"]):
        by_group.setdefault(row["group"], []).append(row)
    moments: list[Row] = []
    for group, rows in by_group.items():
        judged: list[Decimal] = []
        current: Row | None = None
        for row in rows:
            ratio = row["hit_ratio"]
            if ratio is None or row["input_tokens"] < min_input_tokens:
                continue
            usual = (Decimal(statistics.median(judged[-history:]))
                     if len(judged) >= min_history else None)
            if usual and ratio <= usual * fall:
                end = row["period"] + HOUR
                missing = int((usual - ratio) * row["input_tokens"])
                if current and current["end"] == row["period"]:
                    current.update(end=end, hours=current["hours"] + 1,
                                   lowest_ratio=min(current["lowest_ratio"], ratio),
                                   input_tokens=current["input_tokens"] + row["input_tokens"],
                                   missing_reads=current["missing_reads"] + missing)
                else:
                    current = {"group": group, "start": row["period"], "end": end, "hours": 1,
                               "lowest_ratio": ratio, "usual_ratio": usual,
                               "input_tokens": row["input_tokens"], "missing_reads": missing}
                    moments.append(current)
                continue  # a fallen hour does not drag the usual ratio down
            judged.append(ratio)
    moments.sort(key=lambda m: (m["start"], m["group"]), reverse=True)
    return moments


def cache_waste(batch: Batch, since: date, until: date) -> list[Row]:
    """Cache writes nobody read (:func:`spendwatch.savings.cache_waste`, a lower bound) per
    feature and model: ``feature``, ``model``, ``wasted_tokens``, ``waste_usd``; biggest first."""
    sums: dict[tuple[str, str | None], Row] = {}
    for w in waste_rows(batch, since, until):
        acc = sums.setdefault((w.feature, w.model), {"feature": w.feature, "model": w.model,
                                                     "wasted_tokens": 0,
                                                     "waste_usd": Decimal(0)})
        acc["wasted_tokens"] += w.wasted_tokens
        acc["waste_usd"] += w.waste_usd
    return sorted(sums.values(), key=lambda r: (-r["waste_usd"], r["feature"]))


# --- savings ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SavingsView:
    """The savings ledger of a period, and each feature's model mix against the target."""

    ledger: Ledger
    mix: list[Row] = field(default_factory=list)


def model_mix(book: Ledger, lines: Mapping[str | None, str | None],
              target: Mapping[str, Decimal]) -> list[Row]:
    """Per feature and line, the share of the feature's priced token cost (``actual_usd`` of
    the ledger, as the routing lever counts it) against the target share.

    Rows: ``feature``, ``line`` (haiku, sonnet, opus, or another line, or "unknown"),
    ``cost_usd``, ``share`` of the feature's routed lines (haiku+sonnet+opus; None for other
    lines) and ``target_share`` (None for other lines).
    """
    cost: dict[tuple[str, str], Decimal] = {}
    for r in book.realized:
        key = (r.feature, lines.get(r.model) or "unknown")
        cost[key] = cost.get(key, Decimal(0)) + r.actual_usd
    routed: dict[str, Decimal] = {}
    for (feature, line), usd in cost.items():
        if line in ROUTED_LINES:
            routed[feature] = routed.get(feature, Decimal(0)) + usd
    out = []
    for (feature, line), usd in sorted(cost.items()):
        share = (usd / routed[feature] if line in ROUTED_LINES and routed.get(feature)
                 else None)
        out.append({"feature": feature, "line": line, "cost_usd": usd, "share": share,
                    "target_share": target.get(line) if line in ROUTED_LINES else None})
    return out


def savings_headline(batch: Batch, since: date, until: date) -> Headline:
    """:func:`spendwatch.savings.headline`: the Overview's savings figures (the Savings
    page's, without its cache waste and model mix)."""
    return headline(batch, since, until)


def savings_view(batch: Batch, since: date, until: date) -> SavingsView:
    """:func:`spendwatch.savings.ledger` of the period, with :func:`model_mix`."""
    book = ledger(batch, since, until)
    lines = model_lines(batch.conn, {r.model for r in book.realized})
    return SavingsView(book, model_mix(book, lines, batch.config.savings.target_mix))


# --- freshness --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Freshness:
    """How recent one organization's data is.

    ``billed_through``: the end of the last hour (or day) the cost API reported; spend after it
    is estimated from usage, which reaches ``usage_through``. ``provisional_since``: the start
    of the oldest stored bucket that may still change (inside the re-read window), None when
    none is. ``last_run_*``: the last collection run; ``last_success_at``: the last one that
    worked. ``stale``: no successful collection for longer than :func:`stale_after`.
    """

    organization: str
    billed_through: datetime | None
    usage_through: datetime | None
    provisional_since: datetime | None
    last_run_at: datetime | None
    last_run_status: str | None
    last_run_error: str | None
    last_success_at: datetime | None
    stale: bool


def stale_after(config: Config) -> timedelta:
    """Data older than this is stale: three missed collections, at least 30 minutes (alert
    rules say "no data" past it, the Overview says so too)."""
    return max(timedelta(minutes=3 * config.collection.interval_minutes),
               timedelta(minutes=30))


def freshness(batch: Batch, now: datetime) -> list[Freshness]:
    """Per configured organization (and any other found in the database)."""
    conn, config = batch.conn, batch.config

    def per_org(sql: str) -> dict[str, Any]:
        return {org: value for org, value in conn.execute(sql).fetchall()}

    billed = per_org("SELECT organization, max(bucket_end) FROM cost_buckets GROUP BY 1")
    usage = per_org("SELECT organization, max(bucket_end) FROM usage_hourly GROUP BY 1")
    provisional = per_org("""
        SELECT organization, min(bucket_start) FROM (
            SELECT organization, bucket_start FROM usage_hourly WHERE provisional
            UNION ALL SELECT organization, bucket_start FROM cost_buckets WHERE provisional)
        GROUP BY 1""")
    success = per_org("SELECT organization, max(finished_at) FROM collection_runs "
                      "WHERE status = 'ok' GROUP BY 1")
    last = {org: (at, status, error) for org, at, status, error in conn.execute("""
        SELECT organization, finished_at, status, error FROM collection_runs
        QUALIFY row_number() OVER (PARTITION BY organization ORDER BY finished_at DESC) = 1
        """).fetchall()}
    orgs = [o.name for o in config.organizations]
    orgs += sorted((set(billed) | set(usage) | set(last)) - set(orgs))
    limit = stale_after(config)
    out = []
    for org in dict.fromkeys(orgs):
        run_at, status, error = last.get(org, (None, None, None))
        ok_at = success.get(org)
        out.append(Freshness(org, billed.get(org), usage.get(org), provisional.get(org),
                             run_at, status, error, ok_at,
                             ok_at is None or now - ok_at > limit))
    return out


def has_data(batch: Batch) -> bool:
    """Whether anything was collected at all."""
    row = batch.conn.execute("SELECT (SELECT count(*) FROM usage_hourly) + "
                       "(SELECT count(*) FROM cost_buckets)").fetchone()
    return bool(row and row[0])


def last_success(batch: Batch, organization: str) -> datetime | None:
    """When the organization's last successful collection finished (None: never)."""
    row = batch.conn.execute("SELECT max(finished_at) FROM collection_runs WHERE "
                             "organization = ? AND status = 'ok'", [organization]).fetchone()
    return row[0] if row else None


def recent_runs(batch: Batch, organization: str, limit: int = 50) -> list[tuple[str, datetime]]:
    """(status, finished_at) of the organization's last ``limit`` collection runs, newest
    first."""
    return [(s, f) for s, f in batch.conn.execute(
        "SELECT status, finished_at FROM collection_runs WHERE organization = ? "
        "ORDER BY finished_at DESC LIMIT ?", [organization, limit]).fetchall()]


def cache_input(batch: Batch, start: datetime, end: datetime, per: str,
                filters: Filters | None = None) -> list[tuple[str | None, str, int, int]]:
    """(model or feature, organization, cache reads, all input tokens) per ``per`` group
    ("model" or "feature") and organization, over the UTC window [start, end): the
    ``cache_hit_ratio`` rule's input. Usage without a model is left out; groups with tokens
    only (no cost) count, groups with cost only do not."""
    if per not in ("model", "feature"):
        raise ValueError(f"per must be model or feature, not {per!r}")
    dims = ["organization", "model"] + (["feature"] if per == "feature" else [])
    sums: dict[tuple[str | None, str], list[int]] = {}
    for row in spend(batch, by=dims, filters=filters, start=start, end=end):
        tokens = [row[m] for m in ("uncached_input_tokens", "cache_write_5m_tokens",
                                   "cache_write_1h_tokens", "cache_read_tokens",
                                   "output_tokens", "web_search_requests")]
        if row["model"] is None or not any(tokens):
            continue
        acc = sums.setdefault((row[per], row["organization"]), [0, 0])
        acc[0] += row["cache_read_tokens"]
        acc[1] += sum(row[m] for m in INPUT_TOKEN_METRICS)
    return [(group, org, reads, input_tokens)
            for (group, org), (reads, input_tokens) in sums.items()]


# --- people and products ----------------------------------------------------------------------

#: How a missing product reads (usage the API could attribute to no product).
NO_PRODUCT = "(no product)"
#: How the null RBAC group reads: usage of people in no group (and of no person at all).
NO_RBAC_GROUP = "(no group)"
#: The people page's filters (values as :func:`spend` takes them).
PEOPLE_FILTER_DIMENSIONS = ("product", "person")


def product_label(product: str | None) -> str:
    return product if product is not None else NO_PRODUCT


def people_dimension_values(batch: Batch, since: date,
                            until: date) -> dict[str, list[tuple[str | None, str]]]:
    """For ``product`` and ``person``, the (filter value, label) pairs seen in the period,
    biggest spender first: a person's value is the ID shown beside the label (the actor key,
    or the pseudonym), which :func:`spend`'s person filter takes. Empty lists when the period
    has no people data."""
    rows = spend(batch, since, until, ["person", "product"])
    products: dict[str | None, Decimal] = {}
    people: dict[tuple[str | None, str], Decimal] = {}
    for row in rows:
        products[row["product"]] = products.get(row["product"], Decimal(0)) + row["cost_usd"]
        key = (row["person_id"], row["person"])
        people[key] = people.get(key, Decimal(0)) + row["cost_usd"]
    return {"product": [(p, product_label(p)) for p, _ in
                        sorted(products.items(), key=lambda kv: (-kv[1], product_label(kv[0])))],
            "person": [k for k, _ in sorted(people.items(), key=lambda kv: (-kv[1], kv[0][1]))]}


def has_people_data(batch: Batch) -> bool:
    """Whether any people-cut rows were ever collected (any organization, any day)."""
    row = batch.conn.execute("SELECT EXISTS (SELECT 1 FROM usage_cuts WHERE cut = 'people') OR "
                             "EXISTS (SELECT 1 FROM cost_cuts WHERE cut = 'people')").fetchone()
    return bool(row and row[0])


def people_access(batch: Batch) -> list[Row]:
    """Per organization whose people cut was found unreadable: ``organization``, ``reason``
    (the API's one line) and ``checked_at``."""
    return [{"organization": org, "reason": reason, "checked_at": at}
            for org, reason, at in batch.conn.execute(
                "SELECT organization, reason, checked_at FROM cut_access "
                "WHERE cut = 'people' AND NOT readable ORDER BY organization").fetchall()]


@dataclass(frozen=True)
class PeopleView:
    """Spend by person over a period, from ONE ``spend(by=["person", "product"])`` call.

    ``total_usd``: the period's spend (every identity, the filters applied); ``people``: the
    ``limit`` biggest spenders; ``identities``: how many identities spent anything;
    ``people_count``: how many of them are people (users and federated identities, not API
    keys, service accounts or "(no identity)").
    """

    total_usd: Decimal
    identities: int
    people_count: int
    people: list[Row] = field(default_factory=list)


def people_view(batch: Batch, since: date, until: date, filters: Filters | None = None,
                limit: int = 25) -> PeopleView:
    """The top people by spend. Each row: ``person`` (the label: e-mail, "API key <name>",
    "deleted user (..)", "(no identity)" or a pseudonym), ``person_id``, ``actor_type``,
    ``cost_usd``, ``share`` of the total (None when nothing was spent), ``products``
    (product label -> cost, biggest first), ``top_product``, ``hit_ratio`` (:func:`hit_ratio`
    of the person's tokens, None without input) and the token metrics."""
    acc: dict[tuple[str | None, str], Row] = {}
    for row in spend(batch, since, until, ["person", "product"], filters):
        person = acc.setdefault((row["person_id"], row["person"]), {
            "person": row["person"], "person_id": row["person_id"],
            "actor_type": row.get("actor_type"), "cost_usd": Decimal(0), "products": {},
            **{m: 0 for m in METRICS[1:]}})
        person["cost_usd"] += row["cost_usd"]
        for metric in METRICS[1:]:
            person[metric] += row[metric]
        label = product_label(row["product"])
        person["products"][label] = person["products"].get(label, Decimal(0)) + row["cost_usd"]
    total_usd = sum((p["cost_usd"] for p in acc.values()), Decimal(0))
    ranked = sorted(acc.values(), key=lambda p: (-p["cost_usd"], p["person"]))
    for person in ranked:
        mix = sorted(person["products"].items(), key=lambda kv: (-kv[1], kv[0]))
        person["products"] = dict(mix)
        person["top_product"] = mix[0][0] if mix else None
        person["share"] = person["cost_usd"] / total_usd if total_usd else None
        person["hit_ratio"] = hit_ratio(person)
    spent = [p for p in ranked if p["cost_usd"]]
    return PeopleView(total_usd, len(spent),
                      sum(1 for p in spent if p["actor_type"] in PERSON_TYPES and p["person_id"]),
                      ranked[:limit])


def product_totals(batch: Batch, since: date, until: date,
                   filters: Filters | None = None) -> dict[str | None, Decimal]:
    """Spend per product over the period (None: no product), biggest first; adds up to the
    period's total (the people cut, as :func:`people_view` reads it)."""
    rows = spend(batch, since, until, ["product"], filters)
    return {r["product"]: r["cost_usd"] for r in sorted(
        rows, key=lambda r: (-r["cost_usd"], product_label(r["product"])))}


def rbac_group_totals(batch: Batch, since: date, until: date,
                      filters: Filters | None = None) -> dict[str | None, Decimal]:
    """Spend per RBAC group (None: no group), biggest first. The groups OVERLAP: a user in two
    groups counts in full in each, so these add up to more than the total when anyone is in
    several groups. ``filters`` may hold ``product`` (the groups cut has no person)."""
    rows = spend(batch, since, until, ["rbac_group"], filters)
    return {r["rbac_group"]: r["cost_usd"] for r in sorted(
        rows, key=lambda r: (-r["cost_usd"], str(r["rbac_group"])))}


def claude_code_activity(batch: Batch, since: date, until: date) -> list[Row]:
    """Claude Code activity per developer over the UTC days ``since``..``until`` (the legacy
    ``usage_report/claude_code`` counts whole UTC days; the period's local days are taken as
    the UTC days of the same dates). Activity, never spend: ``estimated_cost_usd`` is the
    report's own estimate, not in any spend total.

    Each row: ``organization``, ``developer`` (e-mail or API key name; the pseudonym with
    ``[privacy] pseudonymize_people``), ``actor_type``, ``days``, ``sessions``,
    ``lines_added``, ``lines_removed``, ``commits``, ``pull_requests``, ``accept_rate``
    (accepted / (accepted + rejected) tool actions, None without any), ``estimated_cost_usd``;
    most sessions first.
    """
    names = batch.names
    by_email = {(org, email): key for (org, key), (_, email, _n, _d) in names.people.items()
                if email}
    out = []
    for (org, kind, actor, days, sessions, added, removed, commits, prs, accepted, rejected,
         cost) in batch.conn.execute("""
            SELECT organization, actor_type, actor, count(DISTINCT day), sum(sessions),
                   sum(lines_added), sum(lines_removed), sum(commits), sum(pull_requests),
                   sum(tool_accepted), sum(tool_rejected), sum(estimated_cost_usd)
            FROM claude_code_daily WHERE day >= ? AND day <= ?
            GROUP BY ALL""", [since, until]).fetchall():
        developer = actor
        if kind == "api_actor":
            developer = f"API key {actor}"
        elif names.salt is not None:
            developer = pseudonym(names.salt, org, by_email.get((org, actor), actor))
        decided = int(accepted) + int(rejected)
        out.append({"organization": org, "developer": developer, "actor_type": kind,
                    "days": int(days), "sessions": int(sessions), "lines_added": int(added),
                    "lines_removed": int(removed), "commits": int(commits),
                    "pull_requests": int(prs),
                    "accept_rate": Decimal(int(accepted)) / decided if decided else None,
                    "estimated_cost_usd": Decimal(cost)})
    out.sort(key=lambda r: (-r["sessions"], -r["estimated_cost_usd"], r["developer"]))
    return out


def speed_totals(batch: Batch, since: date, until: date,
                 filters: Filters | None = None) -> dict[str | None, Decimal]:
    """Spend per speed (``standard``, ``fast``; None: not reported) over the period, biggest
    first; with the people page's filters (person, product)."""
    rows = spend(batch, since, until, ["speed"], filters)
    return {r["speed"]: r["cost_usd"] for r in sorted(
        rows, key=lambda r: (-r["cost_usd"], str(r["speed"])))}
