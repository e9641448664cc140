"""How figures read on screen: dollars, ratios, local times, and rows turned into frames."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

import pandas as pd

from spendwatch import numbers
from spendwatch.warehouse.figures import COLUMN_TITLES  # the CSV download's headers too
from spendwatch.text import markdown_text

NONE = "(none)"


def md(value: Any) -> str:
    """A name (or any text from the API or the config) inside Markdown that Streamlit renders
    (``st.markdown``, ``st.caption``, ``st.warning``..., a metric's ``help``): shown as its
    literal text, never an image, a link or HTML (:func:`spendwatch.text.markdown_text`).
    Tables (``st.dataframe``) and charts show text as text and need nothing."""
    return markdown_text(value)


def usd(amount: Decimal | None) -> str:
    """``$1,234.57`` (half up to the cent, as every spendwatch surface rounds:
    :func:`spendwatch.numbers.usd`), or "no data"."""
    return numbers.usd(amount)


def cents(amount: Decimal | None) -> float | None:
    """Dollars rounded half up to the cent, as a float for tables and charts (display only)."""
    return None if amount is None else float(numbers.round_cents(amount))


def percent(ratio: Decimal | float | None, digits: int = 1, signed: bool = False) -> str:
    """``45.7%`` (half up, :func:`spendwatch.numbers.percent`), or "no data"."""
    return numbers.percent(ratio, digits, signed)


def tokens(count: int | None) -> str:
    """``1.7M``, ``12.3k``, ``950`` (:func:`spendwatch.numbers.short_tokens`), or "no data"."""
    return numbers.short_tokens(count)


def local(moment: datetime | None, tz: ZoneInfo, with_zone: bool = True) -> str:
    """A UTC instant as local wall time, e.g. ``2026-11-24 06:00 CST``."""
    if moment is None:
        return "never"
    text = f"{moment.astimezone(tz):%Y-%m-%d %H:%M}"
    return f"{text} {moment.astimezone(tz):%Z}" if with_zone else text


def ago(moment: datetime | None, now: datetime) -> str:
    """``5 min ago``, ``3 h ago``, ``2 days ago``."""
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    if seconds < 60:  # the clock is floored to the minute: a run of this minute is "now"
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{int(seconds // 86400)} days ago"


def period_text(moment: datetime | date, grain: str) -> str:
    """A period's start as it reads in a tooltip: hour, day or ``week of``."""
    if grain == "hour" and isinstance(moment, datetime):
        return f"{moment:%a %Y-%m-%d %H:00}"
    if grain == "week":
        return f"week of {moment:%Y-%m-%d}"
    return f"{moment:%a %Y-%m-%d}"


def iso_wall_time(moment: datetime | date) -> str:
    """A naive local time as an ISO string marked UTC: charts use a UTC time scale, so the
    browser shows the configured time zone's wall time whatever its own time zone."""
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day)
    return f"{moment:%Y-%m-%dT%H:%M:%S}Z"


def frame(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None,
          cents_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Aggregate rows as a DataFrame for a chart or a table.

    Decimals become floats (unrounded, so a chart's segments add up to the exact total), or
    floats rounded to the cent in ``cents_columns`` (tables); a missing value in a text column
    reads "(none)".
    """
    def plain(column: str, value: Any) -> Any:
        if isinstance(value, Decimal):
            return cents(value) if column in cents_columns else float(value)
        return value

    records = [{k: plain(k, v) for k, v in row.items()} for row in rows]
    df = pd.DataFrame(records, columns=list(columns) if columns else None)
    for column in df.columns:
        values = [v for r in records if (v := r.get(column)) is not None]
        if values and all(isinstance(v, str) for v in values):
            df[column] = df[column].fillna(NONE)
    return df


#: Short titles of the count columns, for a table that shows them compact (``15.4M``) to fit
#: the page; the full title is the column's help.
SHORT_TITLES = {"uncached_input_tokens": "Uncached", "cache_write_5m_tokens": "Write 5m",
                "cache_write_1h_tokens": "Write 1h", "cache_read_tokens": "Cache read",
                "output_tokens": "Output", "web_search_requests": "Searches",
                "unpriced_tokens": "Unpriced", "cost_usd": "Cost"}


def column_config(columns: Sequence[str], money: Sequence[str] = (),
                  counts: Sequence[str] = (), compact: bool = False) -> dict[str, Any]:
    """``st.dataframe``'s column_config for ``columns``: their titles (:data:`COLUMN_TITLES`,
    else the name as given), dollars for ``money`` (and ``cost_usd``), and counts with
    thousands separators for ``counts`` (and every ``*_tokens`` / ``*_requests`` column).
    ``compact``: counts as ``15.4M`` under short titles (:data:`SHORT_TITLES`) in narrow
    columns, so a table of many of them fits the page (the CSV has them exact)."""
    import streamlit as st

    config: dict[str, Any] = {}
    for column in columns:
        title = COLUMN_TITLES.get(column, column)
        short = SHORT_TITLES.get(column, title) if compact else title
        narrow: Any = 72 if compact else None
        if column in money or column == "cost_usd":
            config[column] = st.column_config.NumberColumn(short, format="dollar", help=title,
                                                           width=narrow)
        elif column in counts or column.endswith(("_tokens", "_requests")):
            config[column] = st.column_config.NumberColumn(
                short, format="compact" if compact else "localized", help=title, width=narrow)
        else:
            config[column] = st.column_config.Column(
                title, width=(DIMENSION_WIDTHS.get(column, 150) if compact else None))
    return config


#: Widths (px) of the dimension columns of a compact table: the default view of Reports
#: (date, feature, model and seven counts) fits the page at 1400 px.
DIMENSION_WIDTHS = {"date": 95, "model": 180}
