"""Rule kinds: pure functions of the stored data and a ``now`` passed in.

Each kind turns one configured rule into :class:`Evaluation` s, one per scope and level. A
value whose data is missing or stale is ``no_data``, never read as zero: an organization whose
last successful collection is older than :func:`stale_after` makes every spend rule over it say
"no data" (and ``data_stale`` fire).

- ``daily_spend``: today's spend (local day) against ``threshold_usd`` x each of ``levels``
  (default [1.0]); a level is one alert per local day.
- ``monthly_budget``: month-to-date spend against ``budget_usd`` (level "actual") and the
  month-end forecast (level "forecast", :func:`spendwatch.warehouse.figures.month_end_forecast`):
  month to date plus the days left at a trailing, weekday-aware daily rate (no data before
  one complete day is stored).
- ``cache_hit_ratio``: cache reads / (uncached input + cache writes + cache reads) over the
  last ``window_hours`` complete hours (default 24), per model or per feature (``per``), below
  ``floor``; judged only when input tokens reach ``min_input_tokens`` (default 1,000,000).
- ``spend_spike``: ``mode = "daily"``: today so far against the median of the same weekday of
  the last ``weeks`` weeks (default 4) up to the same time of day; ``mode = "hourly"``: the
  last complete hour against the median of the same hour on the previous 7 days. Fires at
  ``multiplier`` (default 2) x the median and at least ``min_usd`` (default $10).
- ``data_stale``: per organization, the last successful collection older than ``max_age``
  (default 2h), or the last ``max_failures`` runs (default 3) all failed.
- ``cost_drift``: per day and model of the last ``days`` complete days (default 1), estimated
  against billed beyond ``threshold_percent`` (default 5).
"""

from __future__ import annotations

import statistics
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping, Sequence
from zoneinfo import ZoneInfo

import duckdb

from alerts.model import FIRING, NO_DATA, OK, Evaluation
from alerts.states import State
from spendwatch.config import Config, RuleConfig
from spendwatch.features import PERSON_TYPES
from spendwatch.numbers import percent, tokens, usd
from spendwatch.timeutil import floor_hour, local_range, local_today
from spendwatch.warehouse.batch import Batch
from spendwatch.warehouse.figures import (NO_MODEL, MonthToDate, cache_input, last_success,
                                          month_to_date, recent_runs, stale_after, stored_from)
from spendwatch.warehouse.reconcile import reconciliation
from spendwatch.warehouse.spend import spend, total

HUNDRED = Decimal(100)
ONE = Decimal(1)


# --- data access -------------------------------------------------------------------------------

class Warehouse:
    """The figures the rules read, on one reader batch: every dollar and token comes from THE
    spend query (:func:`spendwatch.warehouse.spend.spend`), so a rule's value is the CLI's and
    the dashboard's figure for the same scope and period (legacy whole-day lines included)."""

    def __init__(self, batch: Batch):
        self.batch = batch
        self.config = batch.config
        self._last_success: dict[str, datetime | None] = {}

    def last_runs(self, organization: str) -> list[tuple[str, datetime]]:
        """(status, finished_at) of the organization's runs, newest first."""
        return recent_runs(self.batch, organization)

    def last_success(self, organization: str) -> datetime | None:
        """Read once per check and organization (every scope asks)."""
        if organization not in self._last_success:
            self._last_success[organization] = last_success(self.batch, organization)
        return self._last_success[organization]

    def last_failure(self, organization: str) -> str | None:
        """The error of the organization's latest run, when that run failed."""
        row = self.batch.conn.execute(
            "SELECT status, error FROM collection_runs WHERE organization = ? "
            "ORDER BY finished_at DESC LIMIT 1", [organization]).fetchone()
        return row[1] if row and row[0] == "failed" and row[1] else None

    def fresh(self, organizations: Sequence[str], now: datetime) -> bool:
        """Every organization collected successfully within :func:`stale_after`."""
        limit = stale_after(self.config)
        for org in organizations:
            last = self.last_success(org)
            if last is None or now - last > limit:
                return False
        return True

    def covered_from(self, organizations: Sequence[str]) -> datetime | None:
        """From when every organization's usage and cost are stored without a gap."""
        return stored_from(self.batch, organizations)

    def open_scopes(self, rule: str) -> list[str]:
        """Scope keys of the rule's episodes still open (pending or firing)."""
        return [k for (k,) in self.batch.conn.execute(
            "SELECT DISTINCT scope_key FROM alert_states WHERE rule = ? AND state <> ?",
            [rule, State.OK]).fetchall()]

    def filters(self, scope: dict[str, str]) -> dict[str, list[str | None]]:
        """A rule's scope as the spend query's filters: a workspace or API key by ID or name."""
        out: dict[str, list[str | None]] = {}
        names = self.batch.names
        for key, value in scope.items():
            if key == "workspace":
                out[key] = [value, *names.workspace_ids(value)]
            elif key == "api_key":
                out[key] = [value, *names.api_key_ids(value)]
            else:
                out[key] = [value]
        return out

    def month_to_date(self, scope: dict[str, str], now: datetime) -> MonthToDate:
        """The month to date and its forecast over the scope (the Overview's figures)."""
        orgs = [scope["organization"]] if "organization" in scope else []
        rest = {k: v for k, v in scope.items() if k != "organization"}
        return month_to_date(self.batch, now, orgs, self.filters(rest))

    def spend_between(self, scope: dict[str, str], start: datetime, end: datetime) -> Decimal:
        """Cost of the scope in the UTC window [start, end)."""
        return total(self.batch, filters=self.filters(scope), start=start, end=end)

    def spend_per(self, scope: dict[str, str], per: str, start: datetime,
                  end: datetime) -> list[tuple[str, str, Decimal]]:
        """(organization, person or product label, cost) of each that spent in [start, end).
        Per person: people only (users and federated identities), not API keys or service
        accounts. The organization is part of the scope: one address in two organizations
        is two scopes, never one evaluated twice."""
        rows = spend(self.batch, by=["organization", per], filters=self.filters(scope),
                     start=start, end=end)
        if per == "person":
            rows = [r for r in rows if r.get("actor_type") in PERSON_TYPES]
        return [(str(r["organization"]), str(r[per] if r[per] is not None else "(none)"),
                 r["cost_usd"]) for r in rows if r["cost_usd"]]

    def cache_input(self, start: datetime, end: datetime, per: str,
                    scope: dict[str, str]) -> list[tuple[str | None, str, int, int]]:
        """(model or feature, organization, cache reads, all input tokens) per group."""
        return cache_input(self.batch, start, end, per, self.filters(scope))


def page_view(ev: Evaluation, now: datetime, tz: ZoneInfo,
              params: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """The view an alert's link opens on its page (``params``: its rule's): the local days
    it is about as the period (today; the day judged for ``cost_drift``; the hour's day for
    an hourly spike; the window's days for the cache hit ratio, per what the rule follows)
    and its scope as the page's filters. Overview has no controls: nothing."""
    params = params or {}
    if ev.page == "Overview":
        return {}
    last = first = local_today(now, tz)
    if ev.kind == "cost_drift":
        last = first = date.fromisoformat(ev.level)
    elif ev.kind == "spend_spike" and ev.level == "hourly":
        last = first = (floor_hour(now) - timedelta(hours=1)).astimezone(tz).date()
    elif ev.kind == "cache_hit_ratio":
        end = floor_hour(now)
        hours = int(params.get("window_hours", 24))
        first = (end - timedelta(hours=hours)).astimezone(tz).date()
        last = (end - timedelta(seconds=1)).astimezone(tz).date()
    days = {"period": [str(first), str(last)] if first != last else [str(first)]}
    if ev.kind == "cache_hit_ratio":  # the Caching page has no filters: what the rule follows
        return {**days, "per": [str(params.get("per", "model"))]}
    return {**days, **{k: [NO_MODEL if k == "model" and v == "(none)" else v]
                       for k, v in sorted(ev.scope.items())}}


def _orgs(config: Config, scope: dict[str, str]) -> list[str]:
    return [scope["organization"]] if "organization" in scope else [
        o.name for o in config.organizations]


def _evaluation(rule: RuleConfig, scope: dict[str, str], level: str, state: str,
                value: Decimal | None, threshold: Decimal, unit: str, window: str,
                summary: str, page: str = "Overview") -> Evaluation:
    return Evaluation(rule.name, rule.kind, dict(scope), level, state, value, threshold, unit,
                      window, summary, page)


# --- the kinds ---------------------------------------------------------------------------------

def daily_spend(w: Warehouse, rule: RuleConfig, now: datetime) -> list[Evaluation]:
    scope = dict(rule.scope)
    tz = w.config.tz
    today = local_today(now, tz)
    start, end = local_range(today, today, tz)
    fresh = w.fresh(_orgs(w.config, scope), now)
    per = rule.params.get("per")
    if per is not None and fresh:  # one scope per person or product that spent today
        return [ev for org, group, value in w.spend_per(scope, per, start, end)
                for ev in _daily_levels(w, rule, {**scope, "organization": org, per: group},
                                        value, now)]
    value = w.spend_between(scope, start, end) if fresh else None
    return _daily_levels(w, rule, scope, value, now)


def _daily_levels(w: Warehouse, rule: RuleConfig, scope: dict[str, str],
                  value: Decimal | None, now: datetime) -> list[Evaluation]:
    tz = w.config.tz
    today = local_today(now, tz)
    budget: Decimal = rule.params["threshold_usd"]
    window = f"today {today} ({tz.key}), until {now.astimezone(tz):%H:%M}"
    per = rule.params.get("per")
    who = f" of {per} {scope[per]}" if per in scope else ""
    out = []
    for fraction in rule.params.get("levels", (ONE,)):
        threshold = budget * fraction
        level = f"{today} {percent(fraction, 0)}"
        if value is None:
            out.append(_evaluation(rule, scope, level, NO_DATA, None, threshold, "usd", window,
                                   "no data: the last collection is too old to judge today's "
                                   "spend", "Spend"))
            continue
        state = FIRING if value >= threshold else OK
        out.append(_evaluation(
            rule, scope, level, state, value, threshold, "usd", window,
            f"today's spend{who} {usd(value)} {'reached' if state == FIRING else 'is under'} "
            f"{percent(fraction, 0)} of the {usd(budget)} daily budget ({usd(threshold)})",
            "People" if who else "Spend"))
    return out


def monthly_budget(w: Warehouse, rule: RuleConfig, now: datetime) -> list[Evaluation]:
    scope = dict(rule.scope)
    tz = w.config.tz
    today = local_today(now, tz)
    first = today.replace(day=1)
    budget: Decimal = rule.params["budget_usd"]
    window = f"{first:%B %Y} ({tz.key}), until {now.astimezone(tz):%Y-%m-%d %H:%M}"
    if not w.fresh(_orgs(w.config, scope), now):
        return [_evaluation(rule, scope, level, NO_DATA, None, budget, "usd", window,
                            "no data: the last collection is too old") for level in
                ("actual", "forecast")]
    month = w.month_to_date(scope, now)
    if not month.complete:
        return [_evaluation(rule, scope, level, NO_DATA, None, budget, "usd", window,
                            f"no data: this month is not stored from its first day; run "
                            f"`spendwatch collect --since {first}`") for level in
                ("actual", "forecast")]
    actual, forecast = month.month_to_date_usd, month.forecast_usd
    return [
        _evaluation(rule, scope, "actual", FIRING if actual >= budget else OK, actual, budget,
                    "usd", window, f"month-to-date spend {usd(actual)} against the "
                    f"{usd(budget)} monthly budget"),
        _evaluation(rule, scope, "forecast", NO_DATA, None, budget, "usd", window,
                    "no data: no complete day is stored yet to forecast from")
        if forecast is None else
        _evaluation(rule, scope, "forecast", FIRING if forecast >= budget else OK, forecast,
                    budget, "usd", window, f"month-end forecast {usd(forecast)} against the "
                    f"{usd(budget)} monthly budget (month-to-date {usd(actual)}; the days "
                    f"left at the rate of the last {month.history_days} complete days)"),
    ]


def cache_hit_ratio(w: Warehouse, rule: RuleConfig, now: datetime) -> list[Evaluation]:
    scope = dict(rule.scope)
    hours = int(rule.params.get("window_hours", 24))
    minimum = int(rule.params.get("min_input_tokens", 1_000_000))
    floor: Decimal = rule.params["floor"]
    per = rule.params.get("per", "model")
    end = floor_hour(now)
    start = end - timedelta(hours=hours)
    window = f"the last {hours} complete hours, until {end:%Y-%m-%d %H:00} UTC"
    out = []
    seen: set[str] = set()
    for group, org, reads, total in w.cache_input(start, end, per, scope):
        group_scope = {**scope, "organization": org, per: group or "(none)"}
        if not w.fresh([org], now):
            out.append(_evaluation(rule, group_scope, "floor", NO_DATA, None, floor, "ratio",
                                   window, "no data: the last collection is too old",
                                   "Caching"))
            continue
        ratio = Decimal(reads) / Decimal(total) if total else Decimal(0)
        if total < minimum:
            state, summary = OK, (f"only {total:,} input tokens, under the {minimum:,} needed "
                                  "to judge")
        else:
            state = FIRING if ratio < floor else OK
            summary = (f"cache hit ratio {percent(ratio)} "
                       f"{'below' if state == FIRING else 'above'} the {percent(floor)} floor "
                       f"over {tokens(total)} input tokens")
        out.append(_evaluation(rule, group_scope, "floor", state, ratio, floor, "ratio",
                               window, summary, "Caching"))
    for ev in out:
        seen.add(ev.scope_key)
    for key in w.open_scopes(rule.name):  # open episodes with nothing in the window
        if key in seen:
            continue
        group_scope = dict(part.split("=", 1) for part in key.split(","))
        org = group_scope.get("organization", "")
        if w.fresh([org], now):
            out.append(_evaluation(rule, group_scope, "floor", OK, None, floor, "ratio", window,
                                   "no input tokens in the window any more", "Caching"))
        else:
            out.append(_evaluation(rule, group_scope, "floor", NO_DATA, None, floor, "ratio",
                                   window, "no data: the last collection is too old",
                                   "Caching"))
    return out


def spend_spike(w: Warehouse, rule: RuleConfig, now: datetime) -> list[Evaluation]:
    scope = dict(rule.scope)
    multiplier: Decimal = rule.params.get("multiplier", Decimal(2))
    minimum: Decimal = rule.params.get("min_usd", Decimal(10))
    mode = rule.params.get("mode", "daily")
    tz = w.config.tz
    if mode == "hourly":
        hour_end = floor_hour(now)
        start = hour_end - timedelta(hours=1)
        local_start = start.astimezone(tz)
        window = (f"the hour from {local_start:%Y-%m-%d %H:00} ({tz.key}) against the same "
                  "hour of the last 7 days")
        # the same local wall-clock hour on each previous day (DST-proof)
        past = [((local_start - timedelta(days=d)).astimezone(timezone.utc),
                 (local_start - timedelta(days=d)).astimezone(timezone.utc)
                 + timedelta(hours=1)) for d in range(1, 8)]
        current = (start, hour_end)
    else:
        today = local_today(now, tz)
        start, _ = local_range(today, today, tz)
        elapsed = now - start
        weeks = int(rule.params.get("weeks", 4))
        window = (f"today until {now.astimezone(tz):%H:%M} ({tz.key}) against the same "
                  f"weekday of the last {weeks} weeks, to the same time")
        past = []
        for k in range(1, weeks + 1):  # the same local weekday, the same time into the day
            day_start, _ = local_range(today - timedelta(weeks=k), today - timedelta(weeks=k), tz)
            past.append((day_start, day_start + elapsed))
        current = (start, now)
    if not w.fresh(_orgs(w.config, scope), now):
        return [_evaluation(rule, scope, mode, NO_DATA, None, multiplier, "x", window,
                            "no data: the last collection is too old", "Spend")]
    covered = w.covered_from(_orgs(w.config, scope))
    past = [(a, b) for a, b in past if covered is not None and a >= covered]
    if len(past) < 2:  # missing history is not a $0 baseline
        return [_evaluation(rule, scope, mode, NO_DATA, None, multiplier, "x", window,
                            "no data: not enough stored history for a baseline; backfill "
                            "with `spendwatch collect --since ...`", "Spend")]
    value = w.spend_between(scope, *current)
    baseline = Decimal(statistics.median([w.spend_between(scope, a, b) for a, b in past]))
    threshold = max(baseline * multiplier, minimum)
    state = FIRING if value >= threshold else OK
    return [_evaluation(rule, scope, mode, state, value, threshold, "usd", window,
                        f"spend {usd(value)} against a usual {usd(baseline)} "
                        f"(alert at {multiplier}x, at least {usd(minimum)})", "Spend")]


def data_stale(w: Warehouse, rule: RuleConfig, now: datetime) -> list[Evaluation]:
    max_age: timedelta = rule.params.get("max_age", timedelta(hours=2))
    failures = int(rule.params.get("max_failures", 3))
    out = []
    for org in _orgs(w.config, dict(rule.scope)):
        scope = {"organization": org}
        last = w.last_success(org)
        runs = w.last_runs(org)[:failures]
        hours = Decimal(str(round((now - last).total_seconds() / 3600, 2))) if last else None
        threshold = Decimal(str(max_age.total_seconds() / 3600))
        failing = len(runs) == failures and all(s == "failed" for s, _ in runs)
        if last is None:
            state, summary = FIRING, "never collected successfully"
        elif now - last > max_age or failing:
            state = FIRING
            summary = (f"last successful collection {hours} h ago"
                       + (f"; the last {failures} runs failed" if failing else ""))
        else:
            state, summary = OK, f"last successful collection {hours} h ago"
        reason = w.last_failure(org) if state == FIRING else None
        if reason:  # what the operator needs to act on (a refused key, an endless API answer)
            summary += f" (latest run: {reason[:200]}{'...' if len(reason) > 200 else ''})"
        out.append(_evaluation(rule, scope, "stale", state, hours, threshold, "hours",
                               f"as of {now:%Y-%m-%d %H:%M} UTC", summary))
    return out


def cost_drift(w: Warehouse, rule: RuleConfig, now: datetime) -> list[Evaluation]:
    scope = dict(rule.scope)
    threshold: Decimal = rule.params.get("threshold_percent", Decimal(5))
    days = int(rule.params.get("days", 1))
    tz = w.config.tz
    last = local_today(now, tz) - timedelta(days=1)
    first = last - timedelta(days=days - 1)
    rows = reconciliation(w.batch, first, last,
                          [scope["organization"]] if "organization" in scope else ())
    out = []
    for row in rows:
        if not row.compared or row.model is None or ("model" in scope and row.model != scope["model"]):
            continue
        row_scope = {"organization": row.organization, "model": row.model}
        window = f"{row.date} ({tz.key})"
        pct = row.difference_pct
        if pct is None:
            out.append(_evaluation(rule, row_scope, str(row.date), NO_DATA, None, threshold,
                                   "percent", window, "no billed cost to compare with"))
            continue
        state = FIRING if abs(pct) > threshold else OK
        out.append(_evaluation(
            rule, row_scope, str(row.date), state, pct, threshold, "percent", window,
            f"estimated {usd(row.estimated_usd)} against billed {usd(row.billed_usd)} "
            f"({percent(pct / HUNDRED, 2, signed=True)})"
            + (f"; {tokens(row.unpriced_tokens)} tokens unpriced" if row.unpriced_tokens
               else ""), "Spend"))
    return out


RULE_FUNCTIONS: dict[str, Callable[[Warehouse, RuleConfig, datetime], list[Evaluation]]] = {
    "daily_spend": daily_spend, "monthly_budget": monthly_budget,
    "cache_hit_ratio": cache_hit_ratio, "spend_spike": spend_spike, "data_stale": data_stale,
    "cost_drift": cost_drift,
}


def evaluate(conn: duckdb.DuckDBPyConnection | Batch, config: Config,
             now: datetime) -> list[Evaluation]:
    """Every configured rule's evaluations at ``now``, on an open connection (a reader is
    enough) or a reader batch of ``config``."""
    warehouse = Warehouse(conn if isinstance(conn, Batch) else Batch(conn, config))
    out: list[Evaluation] = []
    for rule in config.alerts.rules:
        out.extend(RULE_FUNCTIONS[rule.kind](warehouse, rule, now))
    return out
