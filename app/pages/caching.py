"""Caching: the hit ratio over time, reads against writes, cache waste, when the ratio fell."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import streamlit as st

from app import charts, data, widgets
from app.format import (column_config, frame, iso_wall_time, local, percent, period_text, tokens,
                        usd)
from spendwatch.warehouse import figures as views

config = data.config()
now = data.now()
today = now.astimezone(config.tz).date()
target = config.savings.cache_hit_target

st.title("Caching")
left, middle, right = st.columns([2, 2, 1])
with left:
    since, until = widgets.period(today, days=7)
with middle:
    grain = widgets.grain(since, until, default="day", choices=("hour", "day"))
with right:
    per = st.selectbox("Hit ratio per", list(views.CACHE_GROUPS), key="per",
                       bind=widgets.BIND)

(series, hourly_pairs, costs, ratio, waste) = data.load_many(
    (views.cache_series, (since, until, per, grain)),
    (views.cache_series, (since, until, "feature and model", "hour")),
    (views.spend, (since, until, ("cache_status",))),
    (views.cache_hit_ratio, (since, until)),
    (views.cache_waste, (since, until)),
)
drops = views.cache_ratio_drops(hourly_pairs)
read_tokens = sum(r["cache_read_tokens"] for r in series)
write_tokens = sum(r["cache_write_5m_tokens"] + r["cache_write_1h_tokens"] for r in series)
cost = defaultdict(Decimal, {r["cache_status"]: r["cost_usd"] for r in costs})
waste_usd = sum((r["waste_usd"] for r in waste), Decimal(0))

col_ratio, col_reads, col_writes, col_waste = st.columns(4)
col_ratio.metric("Cache hit ratio", percent(ratio),
                 delta=(f"{(ratio - target) * 100:+.1f} pts vs the {percent(target, 0)} target"
                        if ratio is not None else None),
                 help="Cache reads / (uncached input + cache writes + cache reads).")
col_reads.metric("Cache reads", tokens(read_tokens),
                 help=f"{read_tokens:,} tokens, {usd(cost['cache_read'])} spent on them.")
col_writes.metric("Cache writes", tokens(write_tokens),
                  help=f"{write_tokens:,} tokens, "
                       f"{usd(cost['cache_write_5m'] + cost['cache_write_1h'])} "
                       "spent on them.")
col_waste.metric("Cache waste", usd(waste_usd),
                 help="The write premium of cache writes nobody read in their hour or the next "
                      "(a lower bound; see spendwatch.savings).")

if not series:
    st.info("No input tokens in this period.")
    st.stop()

# The ten groups of most input, the rest as "other": 400 keys are 400 lines.
ratio_rows = [{"when": iso_wall_time(r["period"]), "period_text": period_text(r["period"], grain),
               "group": r["group"], "hit_ratio": r["hit_ratio"],
               "input_tokens": r["input_tokens"]} for r in views.top_groups(series)]
st.altair_chart(charts.hit_ratio_lines(frame(ratio_rows), grain, float(target)),
                width="stretch")

kinds = {"cache_read_tokens": ("cache read", 0), "cache_write_5m_tokens": ("cache write 5m", 1),
         "cache_write_1h_tokens": ("cache write 1h", 2),
         "uncached_input_tokens": ("uncached input", 3)}
totals: dict[tuple[str, str], dict] = {}
for r in series:
    for metric, (kind, order) in kinds.items():
        when = iso_wall_time(r["period"])
        row = totals.setdefault((when, kind), {"when": when, "kind": kind, "kind_order": order,
                                               "period_text": period_text(r["period"], grain),
                                               "tokens": 0})
        row["tokens"] += r[metric]
st.altair_chart(charts.token_kinds(frame(totals.values()), grain), width="stretch")
st.caption("Spend by cache status: " + ", ".join(
    f"{charts.CACHE_STATUS_LABELS[s]} {usd(cost[s])}" for s in views.CACHE_STATUSES[:4]
    if s in cost) + ".")

st.subheader("When the hit ratio fell")
if drops:
    st.caption(f"Hours when a feature and model read at most half as much from the cache as "
               f"usual. The classic cause: {views.CACHE_DROP_CAUSE}.")
    st.dataframe(frame([{"feature / model": d["group"],
                         "from": f"{d['start']:%Y-%m-%d %H:00}",
                         "hours": d["hours"], "hit ratio": percent(d["lowest_ratio"]),
                         "usual": percent(d["usual_ratio"]),
                         "input tokens": d["input_tokens"],
                         "reads missing": d["missing_reads"]} for d in drops]),
                 hide_index=True, key="caching_drops",
                 column_config=column_config(["input tokens", "reads missing"],
                                             counts=["input tokens", "reads missing"]))
else:
    st.success("The hit ratio held: no hour fell to half its usual level.")

st.subheader("Cache waste")
if waste:
    st.dataframe(frame([{"feature": w["feature"], "model": w["model"],
                         "tokens written, never read": w["wasted_tokens"],
                         "premium paid": w["waste_usd"]} for w in waste],
                       cents_columns=("premium paid",)),
                 hide_index=True, key="caching_waste",
                 column_config=column_config(["tokens written, never read", "premium paid"],
                                             money=["premium paid"],
                                             counts=["tokens written, never read"]))
else:
    st.success("No cache write went unread.")
st.caption(f"As of {local(now, config.tz)}.")
