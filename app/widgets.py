"""Controls shared by the pages: the period, the grain, the dimension filters."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Final, Sequence

import streamlit as st

from spendwatch.warehouse import figures as views

DIMENSION_TITLES = {"model": "Model", "feature": "Feature", "workspace": "Workspace",
                    "api_key": "API key", "service_tier": "Service tier",
                    "organization": "Organization", "cache_status": "Cache status",
                    "cost_basis": "Cost basis", "product": "Product", "person": "Person"}


#: Every control below is bound to the page's URL (Streamlit's ``bind="query-params"``, the
#: widget's key being the parameter's name): a view's address carries its period, grain,
#: breakdown and filters, so it can be copied and shared, and an alert's link opens the page
#: on its scope and day (``/Spend?period=2026-11-30&feature=evals``). A parameter that is not
#: a valid value is ignored and dropped from the address.
BIND: Final = "query-params"


def plain_names(key: str, names: Sequence[str], many: bool = False) -> None:
    """Let the URL name a choice of a control with titled options by its plain name, as the
    CLI does (``?by=api_key`` for "API key"): Streamlit binds the title, so a plain name in
    the address becomes the control's first value here (the address then shows the title).
    ``many``: the control is a multiselect. Call it before the control is made."""
    values = st.query_params.get_all(key)
    if values and key not in st.session_state and all(v in names for v in values):
        st.session_state[key] = values if many else values[0]


def period(today: date, days: int, end: date | None = None) -> tuple[date, date]:
    """A date range picker (local days, both included), by default the ``days`` days that end
    on ``end`` (today); ``?period=FIRST&period=LAST`` in the URL (one ``period``: that day).
    Until the second day is picked, the range is that one day."""
    last = end or today
    picked = st.date_input("Period (local days)", value=(last - timedelta(days=days - 1), last),
                           max_value=today, key="period", format="YYYY-MM-DD", bind=BIND)
    if isinstance(picked, (tuple, list)):
        if len(picked) == 2:
            return picked[0], picked[1]
        if len(picked) == 1:
            return picked[0], picked[0]
        return last - timedelta(days=days - 1), last
    return picked, picked


def grain(since: date, until: date, default: str = "day",
          choices: Sequence[str] = views.GRAINS) -> str:
    """Hour, day or week (``?grain=hour``); hours are offered for periods of up to 31 days."""
    options = [g for g in choices if g != "hour" or (until - since).days < 31]
    chosen = st.radio("Time bucket", options, horizontal=True, key="grain", bind=BIND,
                      index=options.index(default) if default in options else 0)
    return str(chosen)


def filters(options: dict[str, list[tuple[str | None, str]]],
            dimensions: Sequence[str] = views.FILTER_DIMENSIONS
            ) -> dict[str, tuple[str | None, ...]]:
    """A multiselect per dimension (empty: everything; ``?feature=evals&feature=search``);
    returns the values to keep. Open when the URL names one."""
    chosen: dict[str, tuple[str | None, ...]] = {}
    named = any(dim in st.query_params for dim in dimensions)
    with st.expander("Filters", expanded=named):
        columns = st.columns(4)
        for n, dim in enumerate(dimensions):
            pairs = options.get(dim, [])
            labels: dict[str, list[str | None]] = {}
            for value, label in pairs:  # one name may stand for several IDs
                labels.setdefault(label, []).append(value)
            with columns[n % 4]:
                picked = st.multiselect(DIMENSION_TITLES[dim], list(labels), key=dim,
                                        placeholder="all", bind=BIND)
            if picked:
                chosen[dim] = tuple(v for label in picked for v in labels[label])
    return chosen
