"""Spend: over time by cache status and by a chosen dimension, filtered; the top spenders."""

from __future__ import annotations

from decimal import Decimal

import streamlit as st

from app import charts, data, widgets
from app.format import frame, iso_wall_time, percent, period_text, usd
from spendwatch.warehouse import figures as views

config = data.config()
now = data.now()
today = now.astimezone(config.tz).date()

st.title("Spend")
left, middle, right = st.columns([2, 2, 1])
with left:
    since, until = widgets.period(today, days=7)
with middle:
    grain = widgets.grain(since, until, default="day")
with right:
    widgets.plain_names("by", views.BREAKDOWN_DIMENSIONS)
    dimension: str = st.selectbox("Break down by", list(views.BREAKDOWN_DIMENSIONS),
                                  key="by", bind=widgets.BIND,
                                  format_func=lambda d: widgets.DIMENSION_TITLES[d]) or "model"
options = data.load(views.dimension_values, since, until)
keep = widgets.filters(options)
compared = views.comparison(config, since, until, now)
before = compared.previous_text(config.tz)

(by_status, by_dimension, top, was) = data.load_many(
    (views.spend, (since, until, ("period", "cache_status", "cost_basis"), keep, grain)),
    (views.spend, (since, until, ("period", dimension), keep, grain)),
    (views.top_spenders, (since, until, dimension, keep, 15, now)),
    (views.compared_total, (since, until, keep, now)),
)

total = sum((r["cost_usd"] for r in by_status), Decimal(0))
billed = sum((r["cost_usd"] for r in by_status if r["cost_basis"] in ("billed", "allocated")),
             Decimal(0))
estimated = sum((r["cost_usd"] for r in by_status if r["cost_basis"] == "estimated"), Decimal(0))
unpriced = sum(r["unpriced_tokens"] for r in by_status)

col_total, col_billed, col_estimated = st.columns(3)
col_total.metric("Spend in the period", usd(total),
                 delta=(f"{usd(total - was)} vs the {compared.days} days before"
                        if was is not None else None),
                 delta_color="inverse",
                 help=f"{since} to {until} ({config.tz.key}), both included"
                      + (", to now" if compared.partial else "")
                      + (f"; against {before}" + (", the same hours" if compared.partial else "")
                         if was is not None else
                         f"; the {compared.days} days before ({before}) are not stored whole, "
                         "so there is no comparison") + ".")
col_billed.metric("Billed", usd(billed), help="Reported by the cost API (legacy daily cost "
                                             "split across keys counts as billed).")
col_estimated.metric("Estimated", usd(estimated),
                     help="Usage x the price table, for hours the cost API has not reported yet.")
if unpriced:
    st.warning(f"{unpriced:,} tokens have no price (an unknown model or tier): they are left out "
               "of the estimate until the cost API bills them; add a price under "
               "[[pricing.prices]] to estimate them.")

if not by_status:
    st.info("No spend in this period with these filters.")
    st.stop()

status_rows = [{"when": iso_wall_time(r["period"]), "period_text": period_text(r["period"], grain),
                "cache_status": r["cache_status"], "cost_basis": r["cost_basis"],
                "cost_usd": r["cost_usd"]} for r in by_status if r["cost_basis"] is not None]
st.altair_chart(charts.spend_by_cache_status(frame(status_rows), grain), width="stretch")
st.caption("Billed dollars are solid, estimated ones pale.")

dimension_rows = [{"when": iso_wall_time(r["period"]),
                   "period_text": period_text(r["period"], grain),
                   "label": views.label_of(r, dimension), "cost_usd": r["cost_usd"]}
                  for r in by_dimension]
option_labels = {label for _, label in options.get(dimension, [])}


def drill_down() -> None:
    """A click on a bar or a legend entry filters the page to its label (the filter's own
    control, so the address and the Filters box say so too); "other" is many labels: none."""
    picked = st.session_state["spend_drill"].selection.get(charts.PICK) or []
    labels = [p["label"] for p in picked if p.get("label") in option_labels]
    if labels:
        st.session_state[dimension] = labels


st.altair_chart(charts.spend_by_dimension(charts.top_labels(frame(dimension_rows), "label", 10),
                                          grain, dimension, drill=True), width="stretch",
                key="spend_drill", on_select=drill_down, selection_mode=charts.PICK)
st.caption(f"Click a bar or a legend entry to see only that "
           f"{widgets.DIMENSION_TITLES[dimension].lower()}.")

st.subheader(f"Top spenders by {widgets.DIMENSION_TITLES[dimension].lower()}")
st.caption(f"Against the previous {compared.days} days ({before})"
           + (": today is not over, so the same hours of each." if compared.partial else ".")
           + ("" if was is not None else " Those days are not stored whole: no change shown."))
table = frame([{"label": r["label"], "spend": r["cost_usd"],
                "share": percent(r["share"]), "previous": r["previous_usd"],
                "change": r["change_usd"],
                "change %": (None if r["previous_usd"] is None else "new"
                             if r["change_pct"] is None
                             else percent(r["change_pct"] / 100, signed=True)),
                "per_mtok": r["per_mtok_usd"], "per_request": r["per_request_usd"]}
               for r in top], cents_columns=("spend", "previous", "change"))
money = st.column_config.NumberColumn
st.dataframe(table, hide_index=True, key="spend_top", placeholder="-", column_config={
    "label": st.column_config.TextColumn(widgets.DIMENSION_TITLES[dimension]),
    "spend": money("Spend", format="dollar"), "share": st.column_config.TextColumn("Share"),
    "previous": money(f"Previous {compared.days} days", format="dollar"),
    "change": money("Change", format="dollar"),
    "change %": st.column_config.TextColumn("Change %"),
    "per_mtok": money("Per 1M tokens", format="$%.2f",
                      help="The spend over every token (input, cache, output), per million."),
    "per_request": money("Per request", format="$%.4f",
                         help="The spend over the API's request count (none for a "
                              "legacy organization).")})
