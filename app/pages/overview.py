"""Overview: today, the month and its forecast, caching, alerts, savings, data freshness."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import streamlit as st

from alerts import history
from alerts.states import State
from app import charts, data
from app.format import ago, frame, iso_wall_time, local, md, percent, period_text, usd
from spendwatch.warehouse import figures as views

#: Alerts listed here; the Alerts page lists every one (1,000 scopes can fire at once).
FIRING_LISTED = 10

config = data.config()
now = data.now()
tz = config.tz
today = now.astimezone(tz).date()
first = today.replace(day=1)
savings_until = today - timedelta(days=1)
savings_since = savings_until - timedelta(days=29)
budget = views.monthly_budget(config)

if not data.load(views.has_data):
    data.stop_with(st.info, data.EMPTY_MESSAGE)
trend_since = today - timedelta(days=29)
(month, month_ratio, firing, fresh, days, saved, before) = data.load_many(
    (views.month_to_date, (now,)),
    (views.cache_hit_ratio, (first, today)),
    (history.firing_alerts, (now,)),
    (views.freshness, (now,)),
    (views.daily_spend, (trend_since, today)),
    (views.savings_headline, (savings_since, savings_until)),
    (views.last_month, (now,)),
)
budget_month = (data.load(views.month_to_date, now, budget.organizations)
                if budget and budget.organizations else month)

st.title("Overview")
st.caption(f"{today:%A %d %B %Y} in {tz.key}; as of {local(now, tz)}")

col_today, col_month, col_forecast, col_ratio = st.columns(4)
col_today.metric("Today's spend", usd(month.today_usd),
                 help=f"Local day {today} ({tz.key}), billed where reported, else estimated.")
last_name = f"{before.first:%B}"
change = (month.month_to_date_usd - before.to_date_usd
          if month.complete and before.to_date_usd is not None else None)
col_month.metric("Month to date", usd(month.month_to_date_usd),
                 delta=(f"{usd(change)} vs {last_name} to the same day"
                        if change is not None else None),
                 delta_color="inverse", delta_arrow="off",
                 help=f"{first} to {today}, both included."
                      + ("" if month.complete else
                         f" Only what is stored: from {local(month.stored_from, tz)}.")
                      + (f" {last_name} to {local(before.to_date_end, tz)}: "
                         f"{usd(before.to_date_usd)}." if before.to_date_usd is not None else
                         f" {last_name} is not stored from its first day: no comparison."))
method = (f"{views.FORECAST_METHOD[0].upper()}{views.FORECAST_METHOD[1:]}. "
          f"This one reads {budget_month.history_days} complete days.")
if budget_month.forecast_usd is None:
    col_forecast.metric(
        "Month-end forecast", "no data",
        help=(f"This month is not stored from its first day (stored from "
              f"{local(budget_month.stored_from, tz)}): run `spendwatch collect --since {first}`."
              if not budget_month.complete else
              "No complete day is stored yet to forecast from."))
elif budget:
    over = budget_month.forecast_usd - budget.budget_usd
    col_forecast.metric(
        "Month-end forecast", usd(budget_month.forecast_usd),
        delta=f"{usd(abs(over))} {'over' if over > 0 else 'under'} budget",
        delta_color="inverse" if over > 0 else "normal", delta_arrow="off",
        help=f"{method} Against the {usd(budget.budget_usd)} budget of the alert rule "
             f"\"{md(budget.rule)}\""
             + (f" ({', '.join(md(o) for o in budget.organizations)})"
                if budget.organizations else "") + ".")
else:
    col_forecast.metric("Month-end forecast", usd(month.forecast_usd),
                        help=f"{method} No monthly_budget alert rule is configured to compare "
                             "it with.")
col_ratio.metric("Cache hit ratio (month)", percent(month_ratio),
                 help="Cache reads / (uncached input + cache writes + cache reads), this month.")

col_last, col_alerts, col_saved, col_potential = st.columns([1, 1, 1, 2])
col_last.metric(f"{last_name} (last month)",
                usd(before.total_usd) if before.total_usd is not None else "no data",
                help=(f"All of {before.first:%B %Y} ({tz.key})."
                      if before.total_usd is not None else
                      f"{last_name} is not stored whole: run `spendwatch collect --since "
                      f"{before.first}`."))
firing_now = [a for a in firing if a["state"] == State.FIRING]
silenced = sum(a["silenced"] for a in firing_now)
col_alerts.metric("Firing alerts", str(len(firing_now)),
                  help=f"{silenced} of them silenced; {len(firing) - len(firing_now)} more "
                       "pending.")
totals = saved.totals
col_saved.metric("Realized savings (30 days)", usd(totals.realized_total_usd),
                 help=f"What caching ({usd(totals.cache_savings_usd)}) and the Batch API "
                      f"({usd(totals.batch_savings_usd)}) saved, {savings_since} to "
                      f"{savings_until}.")
biggest = saved.potential[0] if saved.potential else None
col_potential.metric("Biggest potential saving",
                     f"{usd(biggest.monthly_usd)} a month" if biggest else usd(Decimal(0)),
                     help="From the savings ledger of the last 30 complete days.")
if biggest:
    col_potential.caption(md(biggest.change[:1].upper() + biggest.change[1:] + "."))

st.subheader("Data freshness")
for item in fresh:
    estimated = (item.usage_through and item.billed_through
                 and item.usage_through > item.billed_through)
    text = (f"**{md(item.organization)}**: billed through {local(item.billed_through, tz)}"
            + (f", estimated after (usage through {local(item.usage_through, tz)})"
               if estimated else "")
            + (f", provisional since {local(item.provisional_since, tz)}"
               if item.provisional_since else "")
            + f". Last collection {ago(item.last_run_at, now)} "
              f"({md(item.last_run_status or 'none')})"
            + (f"; last success {ago(item.last_success_at, now)}"
               if item.last_run_status != "ok" else "") + ".")
    if item.stale:
        st.warning(text + " The data is stale: is `spendwatch run` running?")
    elif item.last_run_status == "failed":
        st.warning(text + f" The last run failed: {md(item.last_run_error)}")
    else:
        st.markdown(text)

if days:
    rows = [{"when": iso_wall_time(r["date"]), "period_text": period_text(r["date"], "day"),
             "basis": "estimated" if r["cost_basis"] == "estimated" else "billed",
             "cost_usd": r["cost_usd"]} for r in days]
    daily_budget = (float(budget.budget_usd) / month.days_in_month if budget else None)
    st.altair_chart(charts.daily_spend(frame(rows), daily_budget), width="stretch")
else:
    st.info("Nothing spent in the last 30 days.")

st.subheader("Firing alerts")
if firing:
    listed = sorted(firing, key=lambda a: (a["silenced"], a["state"] != State.FIRING))
    with st.container(border=True):
        for alert in listed[:FIRING_LISTED]:
            scope = "" if alert["scope_key"] == "all" else f" ({md(alert['scope_key'])})"
            mark = (":gray[silenced]" if alert["silenced"] else ":red[**firing**]"
                    if alert["state"] == State.FIRING else ":orange[pending]")
            # Scopes and summaries hold API names: literal text, never Markdown.
            st.markdown(f"{mark} **{md(alert['rule'])}**{scope} {md(alert['level'])}: "
                        f"{md(alert['summary'])}")
        if len(listed) > FIRING_LISTED:
            st.caption(f"and {len(listed) - FIRING_LISTED:,} more: every one is on Alerts.")
    st.page_link("pages/alerts.py", label="Episodes, deliveries and silences",
                 icon=":material/notifications:")
else:
    st.success("No alert is firing.")
