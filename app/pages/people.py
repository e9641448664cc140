"""People and products: who spent what, on which product; RBAC groups; Claude Code activity."""

from __future__ import annotations

import streamlit as st

from app import charts, data, widgets
from app.format import frame, local, md, percent, table_height, usd
from spendwatch.warehouse import figures as views

config = data.config()
now = data.now()
today = now.astimezone(config.tz).date()

st.title("People and products")
since, until = widgets.period(today, days=7)

has_people, unreadable = data.load_many((views.has_people_data, ()),
                                        (views.people_access, ()))
if has_people:
    options = data.load(views.people_dimension_values, since, until)
    keep = widgets.filters(options, views.PEOPLE_FILTER_DIMENSIONS)
    product_keep = {k: v for k, v in keep.items() if k == "product"}
    (people, products, speeds, groups) = data.load_many(
        (views.people_view, (since, until, keep, 25)),
        (views.product_totals, (since, until, keep)),
        (views.speed_totals, (since, until, keep)),
        (views.rbac_group_totals, (since, until, product_keep)),
    )

    top_product = next(iter(products), None) if products else None
    col_total, col_people, col_product = st.columns(3)
    col_total.metric("Spend in the period", usd(people.total_usd),
                     help=f"{since} to {until} ({config.tz.key}), both included; the same "
                          "total as the Spend page, split by person and product.")
    col_people.metric("People who spent", f"{people.people_count:,}",
                      help=f"Users and federated identities; {people.identities:,} identities "
                           "in all, counting API keys, service accounts and usage of no "
                           "identity.")
    col_product.metric("Top product",
                       views.product_label(top_product) if products else "none",
                       help=(f"{usd(products[top_product])} of {usd(people.total_usd)}"
                             if products else None))

    if not people.people:
        st.info("No spend in this period with these filters.")
    else:
        product_rows = [{"product": views.product_label(p), "cost_usd": cost,
                         "share": cost / people.total_usd if people.total_usd else None}
                        for p, cost in products.items()]
        st.altair_chart(charts.spend_by_product(frame(product_rows)), width="stretch")
        fast = speeds.get("fast")
        st.caption(f"Fast mode: {usd(fast)} ({percent(fast / people.total_usd)}) of this spend."
                   if fast and people.total_usd else "No fast-mode spend in this period.")

        st.subheader("Top spenders")
        st.caption(f"The {len(people.people)} biggest of {people.identities:,} identities "
                   "(people, API keys, service accounts); product mix in dollars, biggest "
                   "first.")
        table = frame([{"person": p["person"], "spend": p["cost_usd"],
                        "share": percent(p["share"]),
                        "top product": p["top_product"] or views.NO_PRODUCT,
                        "product mix": ", ".join(f"{name} {usd(cost)}" for name, cost
                                                 in p["products"].items()),
                        "cache hit ratio": percent(p["hit_ratio"])} for p in people.people],
                      cents_columns=("spend",))
        # Widths that add up to the page's at 1400 px, and rows tall enough for a federated
        # identity's URL or a long product mix to wrap: no column cut off.
        st.dataframe(table, hide_index=True, key="people_top", row_height=76,
                     height=table_height(len(table), 76), column_config={
            "person": st.column_config.TextColumn("Person", width=260),
            "spend": st.column_config.NumberColumn("Spend", format="dollar", width=95),
            "share": st.column_config.TextColumn("Share", width=70),
            "top product": st.column_config.TextColumn("Top product", width=150),
            "product mix": st.column_config.TextColumn("Product mix", width=250),
            "cache hit ratio": st.column_config.TextColumn("Hit ratio", width=80)})

        st.subheader("RBAC groups")
        st.caption("Groups overlap: a user in two groups counts in full in each, so these rows "
                   "can add up to more than the period's spend."
                   + (" The person filter does not apply here (the API reports groups "
                      "without people)." if "person" in keep else ""))
        st.dataframe(frame([{"RBAC group": g if g is not None else views.NO_RBAC_GROUP,
                             "spend": cost} for g, cost in groups.items()],
                           cents_columns=("spend",)),
                     hide_index=True, key="people_groups",
                     column_config={"spend": st.column_config.NumberColumn("Spend",
                                                                           format="dollar")})
else:
    reasons = "; ".join(f"{r['organization']}: {r['reason']}" for r in unreadable)
    st.info("No people or product data has been collected. Spend by person, product and RBAC "
            "group needs a Claude Enterprise organization whose key can read the people and "
            "product dimensions, and the `people` and `groups` cuts in its `cuts` setting in "
            "the config (leave `cuts` unset to collect every cut); then run `spendwatch "
            "collect`." + (f" The API refused: {md(reasons)}." if reasons else ""))

activity = data.load(views.claude_code_activity, since, until)
st.subheader("Claude Code per developer")
if activity:
    st.caption("Activity from the legacy Claude Code report over the UTC days of the period "
               "(it reports whole UTC days); its estimated cost is the report's own and is "
               "not part of any spend total.")
    st.dataframe(frame([{"developer": a["developer"], "sessions": a["sessions"],
                         "lines added": a["lines_added"], "lines removed": a["lines_removed"],
                         "commits": a["commits"], "pull requests": a["pull_requests"],
                         "accept rate": percent(a["accept_rate"]),
                         "estimated cost": a["estimated_cost_usd"]} for a in activity],
                       cents_columns=("estimated cost",)),
                 hide_index=True, key="people_claude_code",
                 column_config={"estimated cost": st.column_config.NumberColumn(
                     format="dollar")})
else:
    st.caption("No Claude Code activity in this period. It comes from the legacy Claude Code "
               "report (`claude_code = true` on an organization, the default for a legacy "
               "source); Claude Enterprise reports it through the people cuts above.")
st.caption(f"As of {local(now, config.tz)}.")
