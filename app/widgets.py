"""Controls shared by the pages: the period, the grain, the dimension filters."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Sequence

import streamlit as st

from spendwatch.warehouse import figures as views

DIMENSION_TITLES = {"model": "Model", "feature": "Feature", "workspace": "Workspace",
                    "api_key": "API key", "service_tier": "Service tier",
                    "organization": "Organization", "cache_status": "Cache status",
                    "cost_basis": "Cost basis", "product": "Product", "person": "Person"}


def period(key: str, today: date, days: int, end: date | None = None) -> tuple[date, date]:
    """A date range picker (local days, both included), by default the ``days`` days that end
    on ``end`` (today). Until the second day is picked, the range is that one day."""
    last = end or today
    picked = st.date_input("Period (local days)", value=(last - timedelta(days=days - 1), last),
                           max_value=today, key=f"{key}_period", format="YYYY-MM-DD")
    if isinstance(picked, (tuple, list)):
        if len(picked) == 2:
            return picked[0], picked[1]
        if len(picked) == 1:
            return picked[0], picked[0]
        return last - timedelta(days=days - 1), last
    return picked, picked


def grain(key: str, since: date, until: date, default: str = "day",
          choices: Sequence[str] = views.GRAINS) -> str:
    """Hour, day or week; hours are offered for periods of up to 31 days."""
    options = [g for g in choices if g != "hour" or (until - since).days < 31]
    chosen = st.radio("Time bucket", options, horizontal=True, key=f"{key}_grain",
                      index=options.index(default) if default in options else 0)
    return str(chosen)


def filters(key: str, options: dict[str, list[tuple[str | None, str]]],
            dimensions: Sequence[str] = views.FILTER_DIMENSIONS
            ) -> dict[str, tuple[str | None, ...]]:
    """A multiselect per dimension (empty: everything); returns the values to keep."""
    chosen: dict[str, tuple[str | None, ...]] = {}
    with st.expander("Filters", expanded=False):
        columns = st.columns(4)
        for n, dim in enumerate(dimensions):
            pairs = options.get(dim, [])
            labels: dict[str, list[str | None]] = {}
            for value, label in pairs:  # one name may stand for several IDs
                labels.setdefault(label, []).append(value)
            with columns[n % 4]:
                picked = st.multiselect(DIMENSION_TITLES[dim], list(labels),
                                        key=f"{key}_filter_{dim}", placeholder="all")
            if picked:
                chosen[dim] = tuple(v for label in picked for v in labels[label])
    return chosen
