"""The weekly CSV report: one row per local date and dimension, for a finance team's spreadsheet.

A week is Monday to Sunday in the configured time zone (``2026-W47``, ISO 8601 numbering).
Rows come from THE spend query (:func:`spendwatch.warehouse.spend.spend`): the same local dates
(and legacy day rule), feature mapping and names as every other surface, so the report's total
is the CLI's and the dashboard's, day by day.

Cost basis of a row (billed, allocated or estimated): cost rows of ``spend_facts`` carry it,
token rows do not. Each row is one cost basis of one group (date, organization, workspace, API
key, feature, model, service tier); a group's token counts and web search requests go on the
row of its main basis (billed, else allocated, else estimated). A group with tokens but no cost
row at all keeps its tokens on a row whose ``cost_basis`` is empty (THE spend query places them:
``spend --by cost_basis`` has the same rows). Non-token cost (web search,
code execution, session runtime) is in ``cost_usd`` and in ``other_cost_usd`` of the row of its
dimensions, which is a row of its own when no token usage shares them: never dropped.

Money is written with exactly six decimals. Each money column is rounded row by row (half to
even), then, if the rounded rows do not add up to the column's exact total rounded the same
way, the rows with the largest rounding remainders take the missing millionths (largest
remainder method). The written ``cost_usd`` column therefore sums to the week's total.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import threading
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Sequence
from zoneinfo import ZoneInfo

from spendwatch.config import Config
from spendwatch.errors import ReportError
from spendwatch.text import csv_cell
from spendwatch.timeutil import floor_day, local_range, local_today
from spendwatch.warehouse.batch import Batch
from spendwatch.warehouse.spend import CACHE_STATUSES, feature_cut, has_cut, spend

DIMENSION_COLUMNS = ("date", "organization", "workspace_id", "workspace_name", "api_key_id",
                     "api_key_name", "feature", "product", "model", "service_tier")
TOKEN_COLUMNS = ("uncached_input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
                 "cache_read_tokens", "output_tokens", "web_search_requests")
CACHE_COST_COLUMNS = tuple(f"{status}_cost_usd" for status in CACHE_STATUSES)
MONEY_COLUMNS = ("cost_usd", "list_cost_usd", *CACHE_COST_COLUMNS)
COLUMNS = (*DIMENSION_COLUMNS, *TOKEN_COLUMNS, "cost_usd", "list_cost_usd", "cost_basis",
           *CACHE_COST_COLUMNS)
MICRO = Decimal("0.000001")
_WEEK = re.compile(r"(\d{4})-W(\d{2})")


def iso_week_range(week: str) -> tuple[date, date]:
    """Monday and Sunday of ISO week ``week`` (``2026-W47``). Raises ValueError."""
    match = _WEEK.fullmatch(week.strip())
    if not match:
        raise ValueError(f"{week!r} is not a week; use YYYY-Www, e.g. 2026-W47")
    year, number = int(match.group(1)), int(match.group(2))
    try:
        monday = date.fromisocalendar(year, number, 1)
    except ValueError:
        raise ValueError(f"{week!r} is not a week: {year} has no week {number}") from None
    return monday, monday + timedelta(days=6)


def week_name(monday: date) -> str:
    """``2026-W47`` for the week holding ``monday``."""
    year, number, _ = monday.isocalendar()
    return f"{year}-W{number:02d}"


def last_complete_week(now: datetime, tz: ZoneInfo) -> str:
    """The last Monday-to-Sunday week in ``tz`` that has fully ended at ``now``."""
    today = local_today(now, tz)
    this_monday = today - timedelta(days=today.weekday())
    return week_name(this_monday - timedelta(days=7))


def weekly_rows(batch: Batch, monday: date, sunday: date,
                organization: str | None = None) -> list[dict[str, Any]]:
    """The report's rows for local days ``monday``..``sunday`` (both included), sorted.

    Built on THE spend query (:func:`spendwatch.warehouse.spend.spend`, grouped by date and
    every dimension column and cost basis, with the cost of each cache status), so the rows'
    ``cost_usd`` per date is ``spendwatch spend --by date``'s day. Each row has every name in
    COLUMNS: dimensions as strings or None (``workspace_name`` and ``api_key_name`` as every
    surface labels them), token counts as ints, money as exact Decimal dollars
    (``list_cost_usd`` None where no list price is known), ``cost_basis`` one of billed,
    allocated, estimated or "" (tokens without any cost row; see the module).
    """
    dims = ["date", "organization", "workspace", "api_key", "feature", "model", "service_tier"]
    orgs = [organization] if organization else [o.name for o in batch.config.organizations]
    start, end = local_range(monday, sunday, batch.config.tz)
    # The product column comes from the products cut (spendwatch.cuts) where it is stored for
    # the whole week: billed per product, workspace and key, never allocated. Organizations
    # without it (not Claude Enterprise, legacy) leave the column empty.
    by_people = feature_cut(batch, orgs) == "people"
    if by_people:
        # Features judged on the people cut (spendwatch.features): it has no workspace, its
        # API keys are actors, and its cost is read by cost type only, so the workspace and
        # key columns and the cost of each cache status are left empty; the rest is billed
        # per feature and product as on every other surface.
        dims = [d for d in dims if d not in ("workspace", "api_key")] + ["product"]
    elif has_cut(batch, "products", floor_day(start), end, orgs):
        dims.append("product")
    facts = spend(batch, monday, sunday, [*dims, "cost_basis"],
                  organizations=[organization] if organization else (),
                  cost_by_status=not by_people)
    # Each fact is a row: spend() grouped by cost basis has put each group's tokens on the
    # row of its main basis already (billed, else allocated, else estimated; "" with no cost).
    rows = []
    for fact in facts:
        row: dict[str, Any] = {
            "date": fact["date"].isoformat(), "organization": fact["organization"],
            "workspace_id": fact.get("workspace_id"), "workspace_name": fact.get("workspace"),
            "api_key_id": fact.get("api_key_id"), "api_key_name": fact.get("api_key"),
            "feature": fact["feature"], "product": fact.get("product"), "model": fact["model"],
            "service_tier": fact["service_tier"], "cost_basis": fact["cost_basis"] or ""}
        for column in TOKEN_COLUMNS:
            row[column] = int(fact[column])
        for column in MONEY_COLUMNS:
            value = fact.get(column)
            row[column] = value if value is not None else None \
                if column == "list_cost_usd" or (by_people and column in CACHE_COST_COLUMNS) \
                else Decimal(0)
        if row["cost_usd"] or row["list_cost_usd"] or any(row[c] for c in TOKEN_COLUMNS):
            rows.append(row)
    rows.sort(key=_sort_key)
    return rows


def _sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple((row[c] is not None, row[c] or "") for c in (*DIMENSION_COLUMNS, "cost_basis"))


def total_cost(rows: Sequence[dict[str, Any]]) -> Decimal:
    """The exact sum of ``cost_usd`` over ``rows``."""
    return sum((r["cost_usd"] for r in rows), Decimal(0))


def apportioned(values: Sequence[Decimal | None]) -> list[Decimal | None]:
    """Each value rounded to millionths so that the rounded values sum to the rounded total.

    Rounding is half to even per value; any difference left goes, one millionth at a time, to
    the values with the largest remainders in that direction (earlier rows first on ties).
    """
    rounded = [v.quantize(MICRO, ROUND_HALF_EVEN) if v is not None else None for v in values]
    exact = sum((v for v in values if v is not None), Decimal(0))
    target = exact.quantize(MICRO, ROUND_HALF_EVEN)
    gap = int((target - sum((r for r in rounded if r is not None), Decimal(0))) / MICRO)
    if gap:
        sign = 1 if gap > 0 else -1
        # What each row lost by rounding, in the direction the total needs.
        lost = {i: (v - r) * sign for i, (v, r) in enumerate(zip(values, rounded))
                if v is not None and r is not None}
        for i in sorted(lost, key=lambda i: (-lost[i], i))[:abs(gap)]:
            rounded[i] = (rounded[i] or Decimal(0)) + sign * MICRO
    return rounded


def _money(value: Decimal | None) -> str:
    if value is None:
        return ""
    if value == 0:
        value = Decimal(0)  # never "-0.000000"
    return format(value.quantize(MICRO), "f")


def _text(value: Any) -> str:
    """A text cell (:func:`spendwatch.text.csv_cell`): control characters replaced, and one a
    spreadsheet would run as a formula gets a leading quote."""
    return csv_cell(value)


def csv_cells(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The header and the cells of ``rows`` exactly as :func:`write_csv` writes them."""
    money = {c: apportioned([r[c] for r in rows]) for c in MONEY_COLUMNS}
    cells = [list(COLUMNS)]
    for n, row in enumerate(rows):
        line = []
        for column in COLUMNS:
            if column in MONEY_COLUMNS:
                line.append(_money(money[column][n]))
            elif column in TOKEN_COLUMNS:
                line.append(str(int(row[column])))
            else:
                line.append(_text(row[column]))
        cells.append(line)
    written = sum((Decimal(line[COLUMNS.index("cost_usd")]) for line in cells[1:]), Decimal(0))
    exact = total_cost(rows)
    if written.quantize(Decimal("0.01")) != exact.quantize(Decimal("0.01")):
        raise AssertionError(f"report rows sum to {written}, not the week's total {exact}")
    return cells


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """The report as CSV text (RFC 4180, CRLF): what the file holds and the dashboard serves."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(csv_cells(rows))
    return buffer.getvalue()


def weekly_csv(batch: Batch, week: str, organization: str | None = None) -> str:
    """The weekly report of ISO ``week`` as CSV text. Raises ValueError for a bad week."""
    monday, sunday = iso_week_range(week)
    return csv_text(weekly_rows(batch, monday, sunday, organization))


def write_csv(rows: Sequence[dict[str, Any]], path: Path | str) -> Path:
    """Write ``rows`` to ``path``: UTF-8, a header, RFC 4180 (CRLF), replaced atomically.

    Raises ReportError (one line: the path and the reason) when it cannot be written.
    """
    target = Path(path)
    text = csv_text(rows)
    temp = target.parent / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        reason = exc.strerror or type(exc).__name__
        raise ReportError(f"cannot write the report to {target} ({reason}); choose a "
                          "writable --out or [reports] folder") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def default_report_path(config: Config, organization: str | None, week: str) -> Path:
    """``spendwatch-<org or all>-<week>.csv`` (see :func:`file_label`) in the reports folder
    (``[reports] folder``, default ``reports`` beside the config file): the worker's file too."""
    return config.reports_folder / f"spendwatch-{file_label(organization)}-{week}.csv"


def file_label(organization: str | None) -> str:
    """The organization in a file name: itself when it is plain lower-case ASCII letters,
    digits, ``.``, ``_`` or ``-``; else those characters and a short hash of the whole name,
    so that two names never share a file (``acme prod`` and ``acme/prod``, two names in CJK,
    ``Acme`` and ``acme`` on a disk that ignores case)."""
    if not organization:
        return "all"
    label = re.sub(r"[^a-z0-9._-]+", "_", organization.lower()).strip("._") or "org"
    if label == organization:
        return label
    return f"{label}-{hashlib.sha256(organization.encode()).hexdigest()[:8]}"
