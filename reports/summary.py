"""The weekly report's summary: the week's total against last week's, the features and models
that moved most, the cache-hit ratio and the savings ledger's figures.

It is said the same way on every channel (:mod:`reports.letter` writes its words); each figure
comes from the read side (:mod:`spendwatch.warehouse`), as on the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Sequence

from alerts.words import page_url
from reports.schedule import final_at
from reports.weekly import iso_week_range, total_cost
from spendwatch.features import PERSON_TYPES
from spendwatch.numbers import round_cents
from spendwatch.savings import ledger
from spendwatch.warehouse.batch import Batch
from spendwatch.warehouse.figures import (INPUT_TOKEN_METRICS, hit_ratio, label_of,
                                          month_to_date, spend, stored_from)
from spendwatch.timeutil import floor_day, local_range
from spendwatch.warehouse.spend import has_cut

MOVERS = 3  # per dimension


@dataclass(frozen=True)
class Mover:
    """A feature or model whose weekly spend changed: this week's and last week's dollars."""

    dimension: str               # "feature" | "model"
    label: str
    cost_usd: Decimal
    previous_usd: Decimal

    @property
    def change_usd(self) -> Decimal:
        return self.cost_usd - self.previous_usd


@dataclass(frozen=True)
class WeeklyReport:
    """The weekly report of one organization, as its letter tells it.

    Optional parts are None or empty when they cannot be said: ``previous_usd`` when last week
    was not collected whole (then there are no movers either), ``cache_hit_ratio`` without
    input tokens, ``savings`` with nothing priced. ``csv_size`` is the file's size in bytes
    once written (a big one goes zipped by email).
    """

    organization: str
    week: str                    # 2026-W47
    since: date                  # Monday, local
    until: date                  # Sunday, local
    timezone: str
    total_usd: Decimal
    rows: int
    csv_name: str
    csv_path: str
    at: datetime
    previous_usd: Decimal | None = None
    movers: tuple[Mover, ...] = ()
    cache_hit_ratio: Decimal | None = None
    savings: tuple[tuple[str, Decimal], ...] = ()   # label, dollars, in reading order
    provisional_until: datetime | None = None       # cost may still change until then
    dashboard_url: str | None = None
    csv_size: int | None = None
    #: The week's biggest spenders among people (users, federated identities) with their
    #: dollars, where the organization's people cut is stored for the week; labels follow
    #: ``[privacy] pseudonymize_people``.
    top_people: tuple[tuple[str, Decimal], ...] = ()
    #: The organization's month to date and month-end forecast when the summary was made
    #: (the Overview's figures, :func:`spendwatch.warehouse.figures.month_to_date`).
    month_to_date_usd: Decimal | None = None
    forecast_usd: Decimal | None = None

    @property
    def empty(self) -> bool:
        return self.rows == 0 and not self.total_usd

    @property
    def period(self) -> str:
        """``Mon 16 Nov - Sun 22 Nov 2026``; ``Mon 28 Dec 2026 - Sun 3 Jan 2027``."""
        year = f" {self.since.year}" if self.since.year != self.until.year else ""
        return (f"Mon {self.since.day} {self.since:%b}{year} - "
                f"Sun {self.until.day} {self.until:%b} {self.until.year}")

    @property
    def title(self) -> str:
        return f"[spendwatch] Weekly report {self.week}: {self.organization}"


def movers(batch: Batch, organization: str, period: tuple[date, date],
           before: tuple[date, date]) -> tuple[Decimal, tuple[Mover, ...]]:
    """The total of local days ``before`` (since, until), and the features and models whose
    spend changed most from it to ``period`` (MOVERS of each): one spend query, by feature and
    model, per period. The weekly report compares weeks, the daily digest a day with the same
    weekday a week earlier."""
    spent: dict[tuple[str, str], list[Decimal]] = {}
    previous = Decimal(0)
    for index, (since, until) in enumerate((period, before)):
        for row in spend(batch, since, until, ["feature", "model"],
                         {"organization": [organization]}):
            if index:
                previous += row["cost_usd"]
            for dimension in ("feature", "model"):
                pair = spent.setdefault((dimension, label_of(row, dimension)),
                                        [Decimal(0), Decimal(0)])
                pair[index] += row["cost_usd"]
    out: list[Mover] = []
    for dimension in ("feature", "model"):
        changed = [Mover(dimension, label, now, was)
                   for (dim, label), (now, was) in spent.items() if dim == dimension
                   and round_cents(now) != round_cents(was)]
        changed.sort(key=lambda m: (-abs(m.change_usd), m.label))
        out += changed[:MOVERS]
    return previous, tuple(out)


def top_movers(batch: Batch, organization: str, monday: date, sunday: date
               ) -> tuple[Decimal, tuple[Mover, ...]]:
    """Last week's total, and the features and models whose spend changed most against it."""
    week = timedelta(days=7)
    return movers(batch, organization, (monday, sunday), (monday - week, sunday - week))


#: How many people the summary names.
TOP_PEOPLE = 5


def top_people(batch: Batch, organization: str, monday: date, sunday: date
               ) -> tuple[tuple[str, Decimal], ...]:
    """The week's top people by spend (THE spend query by person), when the people cut is
    stored for the whole week; nothing otherwise."""
    start, end = local_range(monday, sunday, batch.config.tz)
    if not has_cut(batch, "people", floor_day(start), end, [organization]):
        return ()
    rows = [r for r in spend(batch, monday, sunday, ["person"], {"organization": [organization]})
            if r.get("actor_type") in PERSON_TYPES and round_cents(r["cost_usd"]) > 0]
    rows.sort(key=lambda r: (-r["cost_usd"], r["person"]))
    return tuple((r["person"], r["cost_usd"]) for r in rows[:TOP_PEOPLE])


def savings_figures(batch: Batch, organization: str, monday: date, sunday: date
                    ) -> tuple[tuple[str, Decimal], ...]:
    """The savings ledger's figures for the week that are not zero, labelled."""
    totals = ledger(batch, monday, sunday, [organization]).totals
    figures = [("Prompt caching saved this week (estimated)", totals.cache_savings_usd),
               ("The Batch API saved this week (estimated)", totals.batch_savings_usd),
               ("Cache writes never read cost this week", totals.waste_usd)]
    for lever, words in (("caching", "more prompt caching"), ("batch", "the Batch API"),
                         ("routing", "routing to cheaper models")):
        figures.append((f"Could save a month with {words}",
                        totals.potential_monthly_usd.get(lever, Decimal(0))))
    return tuple((label, value) for label, value in figures
                 if round_cents(value) > 0)


def summarise(batch: Batch, organization: str, week: str, rows: Sequence[dict[str, Any]],
              path: Path, now: datetime, final: bool = False) -> WeeklyReport:
    """The summary channels send of ``rows`` (the week's report of ``organization``), read
    in ``batch`` (the batch that read ``rows``: one feature map for the whole report)."""
    config = batch.config
    monday, sunday = iso_week_range(week)
    total = total_cost(rows)
    previous: Decimal | None = None
    movers: tuple[Mover, ...] = ()
    begins = stored_from(batch, [organization])
    if begins is not None and begins <= local_range(monday - timedelta(days=7), monday,
                                                    config.tz)[0]:
        previous, movers = top_movers(batch, organization, monday, sunday)
    tokens = {m: sum(r[m] for r in rows) for m in INPUT_TOKEN_METRICS}
    month = month_to_date(batch, now, [organization])
    base = config.alerts.dashboard_url
    return WeeklyReport(
        organization=organization, week=week, since=monday, until=sunday,
        timezone=config.timezone, total_usd=total, rows=len(rows), csv_name=path.name,
        csv_path=str(path), at=now, previous_usd=previous, movers=movers,
        cache_hit_ratio=hit_ratio(tokens),
        savings=savings_figures(batch, organization, monday, sunday) if rows else (),
        provisional_until=None if final else final_at(config, week),
        dashboard_url=page_url(base, "Reports"),
        top_people=top_people(batch, organization, monday, sunday) if rows else (),
        month_to_date_usd=month.month_to_date_usd if month.complete else None,
        forecast_usd=month.forecast_usd)
