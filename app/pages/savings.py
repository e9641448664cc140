"""Savings: what caching and batch saved, what each lever could still save, the model mix."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import streamlit as st

from app import charts, data, widgets
from app.format import frame, md, percent, table_height, usd
from spendwatch.warehouse import figures as views
from spendwatch.savings import LEVERS

config = data.config()
now = data.now()
today = now.astimezone(config.tz).date()

st.title("Savings")
since, until = widgets.period(today, days=30, end=today - timedelta(days=1))
saved = data.load(views.savings_view, since, until)
book = saved.ledger
totals = book.totals
potential_month = sum(totals.potential_monthly_usd.values(), Decimal(0))

col_realized, col_cache, col_batch, col_potential = st.columns(4)
col_realized.metric("Realized savings", usd(totals.realized_total_usd),
                    help=f"Without caching or batch: {usd(totals.baseline_usd)}; paid "
                         f"(estimated): {usd(totals.actual_usd)}. {since} to {until}.")
col_cache.metric("Saved by caching", usd(totals.cache_savings_usd),
                 help="Reads saved minus the cache write premium.")
col_batch.metric("Saved by the Batch API", usd(totals.batch_savings_usd))
col_potential.metric("Could still save, a month", usd(potential_month),
                     help="Sum of every lever's potential below, per 30-day month.")
if totals.unpriced_tokens:
    st.warning(f"{totals.unpriced_tokens:,} tokens have no price and are left out of every "
               "figure here.")

st.subheader("Realized, per lever")
realized = [{"lever": "caching", "feature": r.feature, "cost_usd": r.cache_savings_usd}
            for r in book.realized] + [
           {"lever": "batch", "feature": r.feature, "cost_usd": r.batch_savings_usd}
            for r in book.realized]
by_lever = frame(realized).groupby(["lever", "feature"], as_index=False)["cost_usd"].sum() \
    if realized else None
if by_lever is not None:
    # The ten features that saved most, the rest as "other": 400 keys are 400 features.
    st.altair_chart(charts.lever_bars(charts.top_labels(
        by_lever[by_lever["cost_usd"] != 0], "feature", 10), "Saved per lever and feature"),
        width="stretch")
losing = sorted({r.feature for r in book.realized if r.cache_savings_usd < 0})
if losing:
    # A negative bar is no error: caching cost more than it saved for these features.
    st.caption("Below zero: caching cost " + ", ".join(md(f) for f in losing[:5])
               + (f" and {len(losing) - 5} more" if len(losing) > 5 else "")
               + " more than it saved. Cache writes cost more than input (1.25x for 5 minutes, "
               "2x for an hour) and pay back only when they are read again; see Caching for "
               "the writes never read.")
st.caption(f"Cache writes never read: {totals.wasted_tokens:,} tokens, {usd(totals.waste_usd)} "
           "of write premium (a lower bound).")

st.subheader("Could still save, per lever")
cols = st.columns(len(LEVERS))
for col, lever in zip(cols, LEVERS):
    col.metric(f"{lever.capitalize()}", f"{usd(totals.potential_monthly_usd[lever])} a month",
               help=f"{usd(totals.potential_period_usd[lever])} over the {book.days} days.")
if book.potential:
    # A table to sort (by a click on a header), biggest first; "what to do" wraps in its cell.
    st.dataframe(frame([{"lever": p.lever, "feature": p.feature, "change": p.change,
                         "monthly_usd": p.monthly_usd}
                        for p in sorted(book.potential, key=lambda p: -p.monthly_usd)],
                       cents_columns=("monthly_usd",)),
                 hide_index=True, key="savings_potential", row_height=92,
                 height=table_height(len(book.potential), 92, most=30),
                 column_config={  # widths (px) that add up to the page's at 1400 px
                     "lever": st.column_config.TextColumn("Lever", width=85),
                     "feature": st.column_config.TextColumn("Feature", width=170),
                     "change": st.column_config.TextColumn("What to do", width=560),
                     "monthly_usd": st.column_config.NumberColumn("A month (USD)",
                                                                  format="dollar", width=120)})
    st.altair_chart(charts.lever_bars(frame(
        [{"lever": p.lever, "feature": p.feature, "cost_usd": p.monthly_usd}
         for p in book.potential]), "Potential per month, per lever and feature"),
        width="stretch")
else:
    st.success("Nothing left to save with these levers.")

st.subheader("Model mix per feature against the target")
target = config.savings.target_mix
st.caption("Target: " + ", ".join(f"{md(line)} {md(percent(share, 0))}"
                                  for line, share in target.items())
           + " of the spend on the routed lines (haiku, sonnet, opus).")
mix_rows = [{"row": "target", "line": line, "share": share, "cost_usd": None}
            for line, share in target.items()]
mix_rows += [{"row": m["feature"], "line": m["line"], "share": m["share"],
              "cost_usd": m["cost_usd"]} for m in saved.mix if m["share"] is not None]
if len(mix_rows) > len(target):
    df = frame(mix_rows)
    df["line_order"] = df["line"].map({"haiku": 0, "sonnet": 1, "opus": 2}).fillna(3)
    st.altair_chart(charts.model_mix(df), width="stretch")
others = [m for m in saved.mix if m["share"] is None]
if others:
    st.caption("Not routed (other lines or unknown models): " + ", ".join(
        f"{md(m['feature'])} {md(m['line'])} {md(usd(m['cost_usd']))}" for m in others) + ".")
