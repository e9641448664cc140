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
                  counts: Sequence[str] = (), compact: bool = False,
                  fit: int | None = None) -> dict[str, Any]:
    """``st.dataframe``'s column_config for ``columns``: their titles (:data:`COLUMN_TITLES`,
    else the name as given), dollars for ``money`` (and ``cost_usd``), and counts with
    thousands separators for ``counts`` (and every ``*_tokens`` / ``*_requests`` column).
    ``compact``: counts as ``15.4M`` under short titles (:data:`SHORT_TITLES`) in narrow
    columns, so a table of many of them fits the page (the CSV has them exact); with ``fit``
    (pixels, compact only), the text columns share what the counts leave of that width, so
    a view of many dimensions fits too (their text wraps: see :func:`wraps`)."""
    import streamlit as st

    config: dict[str, Any] = {}
    widths = _text_widths(columns, money, counts, fit) if compact else {}
    for column in columns:
        title = COLUMN_TITLES.get(column, column)
        short = SHORT_TITLES.get(column, title) if compact else title
        text = [c for c in columns if not _is_number(c, money, counts)]
        narrow: Any = _count_width(column, columns, text) if compact else None
        if column in money or column == "cost_usd":
            config[column] = st.column_config.NumberColumn(short, format="dollar", help=title,
                                                           width=narrow)
        elif column in counts or column.endswith(("_tokens", "_requests")):
            config[column] = st.column_config.NumberColumn(
                short, format="compact" if compact else "localized", help=title, width=narrow)
        else:
            config[column] = st.column_config.Column(title, width=widths.get(column))
    if compact and fit is not None and widths and _total_width(columns, widths) > fit:
        first = next(iter(widths))
        config[first] = st.column_config.Column(COLUMN_TITLES.get(first, first),
                                                width=widths[first], pinned=True)
    return config


def _total_width(columns: Sequence[str], widths: dict[str, int]) -> int:
    return sum(widths[c] if c in widths else _count_width(c, columns, list(widths))
               for c in columns)


#: The width of a compact count column (px), and a narrower one for views of many columns.
COUNT_WIDTH, NARROW_COUNT_WIDTH = 72, 64
#: The narrowest a compact text column gets (a date on one line; a longer name wraps). A
#: view of more columns than fit so is wider than the page: it scrolls sideways, its first
#: column pinned so each row stays named.
MIN_TEXT_WIDTH = 90
#: A row tall enough for Streamlit to wrap a cell's text onto a second and third line.
WRAPPING_ROW = 72


def _is_number(column: str, money: Sequence[str], counts: Sequence[str]) -> bool:
    return (column in money or column == "cost_usd" or column in counts
            or column.endswith(("_tokens", "_requests")))


def _count_width(column: str, columns: Sequence[str], text: Sequence[str]) -> int:
    """A compact number column's width: narrower when the view has many text columns (the
    dollars keep theirs: "$12,345.67")."""
    return NARROW_COUNT_WIDTH if len(text) > 4 and column != "cost_usd" else COUNT_WIDTH


def _text_widths(columns: Sequence[str], money: Sequence[str], counts: Sequence[str],
                 fit: int | None) -> dict[str, int]:
    """The compact text columns' widths: :data:`DIMENSION_WIDTHS` (150 px else); with
    ``fit``, the widest are narrowed to an equal share of what the numbers leave of it (the
    narrow ones, a date, keep their width), down to :data:`MIN_TEXT_WIDTH`."""
    text = [c for c in columns if not _is_number(c, money, counts)]
    natural = {c: DIMENSION_WIDTHS.get(c, 150) for c in text}
    if fit is None:
        return natural
    room = fit - sum(_count_width(c, columns, text) for c in columns if c not in natural)
    if sum(natural.values()) <= room:
        return natural
    kept: dict[str, int] = {}
    while True:  # water-filling: who fits in an equal share of the rest keeps their width
        rest = [c for c in text if c not in kept]
        share = (room - sum(kept.values())) // max(1, len(rest))
        narrow = {c: natural[c] for c in rest if natural[c] <= share}
        if not narrow:
            return {**kept, **{c: max(MIN_TEXT_WIDTH, share) for c in rest}}
        kept.update(narrow)


def wraps(columns: Sequence[str], fit: int, money: Sequence[str] = (),
          counts: Sequence[str] = ()) -> int | None:
    """The row height for a compact table fitted to ``fit`` pixels: :data:`WRAPPING_ROW`
    when its text columns were narrowed (their text wraps rather than being cut), else
    None (Streamlit's one-line rows)."""
    text = [c for c in columns if not _is_number(c, money, counts)]
    narrowed = _text_widths(columns, money, counts, fit)
    return WRAPPING_ROW if any(narrowed[c] < DIMENSION_WIDTHS.get(c, 150) for c in text) \
        else None


#: Widths (px) of the dimension columns of a compact table: the default view of Reports
#: (date, feature, model and seven counts) fits the page at 1400 px.
DIMENSION_WIDTHS = {"date": 95, "model": 180}
#: The page's width for a table at 1400 px (the main column less the frame's borders).
PAGE_TABLE_WIDTH = 936


#: The most rows a short table (alerts, deliveries, savings, runs) shows before it scrolls
#: inside its frame; below that it is as tall as its rows, so none hides behind a scroll bar.
ROWS_SHOWN = 12
#: Streamlit's header row and frame, in pixels (its default row height, plus the borders).
_HEADER, _BORDERS = 35, 3


def table_height(rows: int, row_height: int = 35, most: int = ROWS_SHOWN) -> int:
    """The height (pixels) for ``st.dataframe(height=...)`` that shows every one of ``rows``
    rows of ``row_height`` pixels, up to ``most`` of them (Streamlit's own default shows
    about 400 pixels, four rows of wrapped text, whatever the table holds)."""
    return _HEADER + max(1, min(rows, most)) * row_height + _BORDERS
