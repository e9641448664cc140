"""Reports: a CSV of any filtered spend view, the weekly CSV of any recent ISO week, and the
weekly reports the worker wrote and sent."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from decimal import Decimal

import streamlit as st

from app import charts, data, widgets
from app.format import (PAGE_TABLE_WIDTH, column_config, frame, iso_wall_time, md, period_text,
                        table_height, usd, wraps)
import reports.history as reports_history
import reports.weekly as reports
from spendwatch.text import code_span
from spendwatch.warehouse import figures as views

config = data.config()
now = data.now()
today = now.astimezone(config.tz).date()
GROUPS = ("date", *views.FILTER_DIMENSIONS)

st.title("Reports")
st.caption("Spend and tokens, grouped and filtered as you choose, as a CSV for a spreadsheet: "
           "the rows and exact amounts of `spendwatch spend --json` (its column names for "
           "scripts), under the table's titles.")
left, right = st.columns([2, 3])
with left:
    since, until = widgets.period(today, days=7)
with right:
    widgets.plain_names("by", GROUPS, many=True)
    by = st.multiselect("Group by", GROUPS, default=["date", "feature", "model"],
                        key="by", bind=widgets.BIND,
                        format_func=lambda d: widgets.DIMENSION_TITLES.get(d, d.capitalize()))
options = data.load(views.dimension_values, since, until)
keep = widgets.filters(options)
rows = data.load(views.spend, since, until, tuple(by), keep)
total = sum((r["cost_usd"] for r in rows), Decimal(0))

st.metric("Spend in the view", usd(total), help=f"{since} to {until} ({config.tz.key}).")
# Files are built when the button is clicked (on Streamlit's download thread), not on every
# run of the page: a large organization's week is thousands of rows. A click downloads and
# nothing else (on_click="ignore"): a rerun of the page on a click would redo its queries and
# could replace the file being fetched (the lake tests' download timed out once under load).
st.download_button("Download CSV", lambda: views.spend_csv(rows, by, human=True), mime="text/csv",
                   key="reports_csv", on_click="ignore",
                   file_name=f"spendwatch-spend-{since}-{until}.csv", type="primary",
                   disabled=not rows)

if rows:
    label = next((d for d in by if d != "date"), None)
    daily = data.load(views.spend, since, until, ("date", *([label] if label else [])),
                      keep)
    chart_rows = [{"when": iso_wall_time(r["date"]), "period_text": period_text(r["date"], "day"),
                   "label": views.label_of(r, label) if label else "all",
                   "cost_usd": r["cost_usd"]} for r in daily]
    st.altair_chart(charts.spend_by_dimension(charts.top_labels(frame(chart_rows), "label", 10),
                                              "day", label or "total"), width="stretch")
    columns = [c for c in views.csv_columns(by)  # no column of zeros on the page
               if c != "unpriced_tokens" or any(r["unpriced_tokens"] for r in rows)]
    st.dataframe(frame([{c: r.get(c) for c in columns} for r in rows],
                       cents_columns=("cost_usd",)),
                 hide_index=True, key="reports_table",
                 row_height=wraps(columns, PAGE_TABLE_WIDTH),
                 column_config=column_config(columns, compact=True, fit=PAGE_TABLE_WIDTH))
    st.caption("Token counts are rounded here (15.4M); the CSV has them exact.")
else:
    st.info("Nothing matches this view.")

st.subheader("Weekly report")
last_monday, _ = reports.iso_week_range(reports.last_complete_week(now, config.tz))
weeks = [reports.week_name(last_monday - timedelta(weeks=k)) for k in range(12)]
week = st.selectbox("ISO week (Monday to Sunday, local time)", weeks, key="week",
                    bind=widgets.BIND)
st.download_button(f"Download the weekly CSV for {week}",
                   data.deferred(reports.weekly_csv, week), mime="text/csv",
                   file_name=f"spendwatch-all-{week}.csv", key="reports_weekly_csv",
                   on_click="ignore")
st.caption("The same file as `spendwatch report weekly --week " + week + "`.")

st.subheader("Scheduled weekly reports")
schedule = config.reports
if not schedule.enabled:
    st.caption("The worker writes no weekly report: `[reports] enabled = false` in the config.")
else:
    sent_to = (", ".join(md(c) for c in schedule.channels)
               or "no channel (set `[reports] channels`)")
    st.caption(f"The worker writes last week's report of each organization every "
               f"{schedule.weekday.capitalize()} from {schedule.time:%H:%M} ({config.tz.key}) "
               f"into {code_span(config.reports_folder)}, and sends it once to {sent_to}.")
    runs = data.load(reports_history.report_runs, 20)
    if runs:
        st.dataframe(frame([{"week": r["week"], "organization": r["organization"],
                             "written": f"{r['written_at'].astimezone(config.tz):%Y-%m-%d %H:%M %Z}",
                             "rows": r["rows"],
                             "cost_usd": r["total_usd"],
                             "final": "yes" if r["final_at"] else "still settling",
                             "sent": r["deliveries"] or "not sent (no channel)",
                             "file": Path(r["path"]).name} for r in runs],
                           cents_columns=("cost_usd",)),
                     hide_index=True, key="reports_runs", row_height=60,
                     height=table_height(len(runs), 60),
                     column_config={  # widths (px) that fit the page at 1400 px
                         "week": st.column_config.TextColumn("Week", width=80),
                         "organization": st.column_config.TextColumn("Organization",
                                                                     width=110),
                         "written": st.column_config.TextColumn("Written", width=145),
                         "rows": st.column_config.NumberColumn("Rows", width=60),
                         "cost_usd": st.column_config.NumberColumn(
                             "Cost (USD)", format="dollar", width=95),
                         "final": st.column_config.TextColumn("Final", width=95),
                         "sent": st.column_config.TextColumn("Sent", width=120),
                         "file": st.column_config.TextColumn("File", width=230)})
    else:
        st.info("No weekly report written yet: the first is due "
                f"{schedule.weekday.capitalize()} at {schedule.time:%H:%M}, once the "
                "collectors have the whole week.")
