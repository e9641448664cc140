"""The figures each page may read: an explicit table, name -> the function that computes it.

A page asks :func:`app.data.load` for a function of this table; the batch runs it on ONE
:class:`~spendwatch.warehouse.batch.Batch` (one reader, the name book and feature map built
once) as ``func(batch, *args)`` (``takes_batch``: the read side's figures) or
``func(batch.conn, *args)`` (alert and report history). Nothing outside this table can be run
through the dashboard's cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import reports.history
import reports.weekly
from alerts import history
from spendwatch.warehouse import figures


@dataclass(frozen=True)
class Figure:
    func: Callable[..., Any]
    takes_batch: bool


def _table(*entries: tuple[Callable[..., Any], bool]) -> dict[str, Figure]:
    return {f"{func.__module__}.{func.__name__}": Figure(func, takes_batch)
            for func, takes_batch in entries}


#: name -> figure; the pages that read each are named beside it.
FIGURES: dict[str, Figure] = _table(
    (figures.has_data, True),                   # every page
    (figures.freshness, True),                  # Overview
    (figures.month_to_date, True),              # Overview
    (figures.last_month, True),                 # Overview
    (figures.daily_spend, True),                # Overview
    (figures.cache_hit_ratio, True),            # Overview, Caching
    (figures.savings_headline, True),           # Overview
    (figures.savings_view, True),               # Savings
    (figures.dimension_values, True),           # Spend, Caching, Reports
    (figures.spend, True),                      # Spend, Reports, Caching
    (figures.top_spenders, True),               # Spend
    (figures.compared_total, True),             # Spend
    (figures.cache_series, True),               # Caching
    (figures.cache_waste, True),                # Caching
    (figures.has_people_data, True),            # People
    (figures.people_access, True),              # People
    (figures.people_dimension_values, True),    # People
    (figures.people_view, True),                # People
    (figures.product_totals, True),             # People
    (figures.rbac_group_totals, True),          # People
    (figures.speed_totals, True),               # People
    (figures.claude_code_activity, True),       # People
    (reports.weekly.weekly_csv, True),          # Reports
    (reports.history.report_runs, False),       # Reports
    (history.firing_alerts, False),             # Overview, Alerts
    (history.recent_episodes, False),           # Alerts
    (history.delivery_attempts, False),         # Alerts
    (history.notification_counts, False),       # Alerts
    (history.broken_channels, False),           # Alerts
    (history.silences, False),                  # Alerts
    (history.alert_scopes, False),              # Alerts
)


def name_of(func: Callable[..., Any]) -> str:
    """The table's name of ``func``; raises ValueError for a function not in the table."""
    name = f"{func.__module__}.{func.__name__}"
    if FIGURES.get(name) is None or FIGURES[name].func is not func:
        raise ValueError(f"{name} is not a dashboard figure (app/figures.py)")
    return name
