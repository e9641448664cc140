"""Altair chart factories: a DataFrame of aggregates in, a chart out; no data access here.

Time axes use a UTC scale over wall times marked UTC (:func:`app.format.iso_wall_time`), so
every browser shows the configured time zone's hours and days. Money is in dollars (floats,
display only: the exact Decimal figures are in the metrics and tables).
"""

from __future__ import annotations

from typing import Any, Sequence

import altair as alt
import pandas as pd

from spendwatch.warehouse.spend import CACHE_STATUSES

CACHE_STATUS_LABELS = {"uncached_input": "uncached input", "cache_write_5m": "cache write 5m",
                       "cache_write_1h": "cache write 1h", "cache_read": "cache read",
                       "output": "output", "other": "other (search, code, sessions)"}
CACHE_STATUS_COLORS = ("#4c78a8", "#f58518", "#e45756", "#54a24b", "#b279a2", "#9d9da0")
BASIS_OPACITY = {"billed": 1.0, "allocated": 1.0, "estimated": 0.4}
LINE_COLORS = {"haiku": "#54a24b", "sonnet": "#4c78a8", "opus": "#b279a2", "unknown": "#9d9da0"}
#: Colours of a chart's labels, biggest first (Tableau 10, then its light tints), none of them
#: the grey that "other" (the labels past the biggest) always has.
LABEL_COLORS = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2",
                "#ff9da6", "#9d755d", "#9ecae9", "#ffbf79", "#88d27a", "#f2cf5b", "#83bcb6",
                "#ff9d98", "#d6a5c9", "#d8b5a5")
OTHER_COLOR = "#bab0ac"
_TIME_FORMAT = {"hour": "%b %d %H:00", "day": "%b %d", "week": "%b %d"}


_TICKS: dict[str, dict[str, Any]] = {"hour": {"interval": "hour", "step": 6},
                                      "day": {"interval": "day", "step": 1},
                                      "week": {"interval": "week", "step": 1}}


def _time_x(grain: str, field: str = "when") -> alt.X:
    """A time axis in wall time (UTC scale), one tick per bucket at most."""
    return alt.X(f"{field}:T", title=None, scale=alt.Scale(type="utc"),
                 axis=alt.Axis(format=_TIME_FORMAT.get(grain, "%b %d"), labelAngle=0,
                               tickCount=_TICKS.get(grain, alt.Undefined), labelOverlap=True))


def _bucket_x(df: pd.DataFrame, grain: str) -> tuple[pd.DataFrame, dict[str, object]]:
    """Bars per bucket: hours as spans of time (x to x2), days and weeks as labelled bands."""
    df = df.sort_values("when", kind="stable")
    start = pd.to_datetime(df["when"].str.rstrip("Z"))
    if grain == "hour":
        end = (start + pd.Timedelta(hours=1)).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        return df.assign(end=end), {"x": _time_x(grain), "x2": alt.X2("end:T")}
    label = start.dt.strftime("%b %d" if grain == "day" else "wk %b %d")
    return df.assign(bucket=label), {"x": alt.X("bucket:O", title=None, sort=None,
                                                axis=alt.Axis(labelAngle=0,
                                                              labelOverlap=True))}


def _legend(title: str | None, columns: int = 1) -> alt.Legend:
    """A legend that lists every entry in full (none cut at the chart's height: Vega-Lite
    drops the entries that do not fit), below the chart when it has many."""
    if columns > 1:
        return alt.Legend(title=title, orient="bottom", columns=columns, symbolLimit=0,
                          labelLimit=260)
    return alt.Legend(title=title, symbolLimit=0, labelLimit=260)


def label_scale(df: pd.DataFrame, column: str, other: str = "other",
                by: str = "cost_usd") -> alt.Scale:
    """One colour per value of ``column``, biggest (in ``by``) first (:data:`LABEL_COLORS`),
    ``other`` grey and last: never two labels in one colour (Vega's default ten colours gave
    the eleventh label the first one's)."""
    spent = df.groupby(column, dropna=False)[by].sum().sort_values(ascending=False)
    labels = [str(v) for v in spent.index if v != other]
    colours = [LABEL_COLORS[i % len(LABEL_COLORS)] for i in range(len(labels))]
    if other in set(spent.index):
        labels.append(other)
        colours.append(OTHER_COLOR)
    return alt.Scale(domain=labels, range=colours)


def _usd_y(title: str = "spend (USD)") -> alt.Y:
    return alt.Y("cost_usd:Q", title=title, stack=True, axis=alt.Axis(format="$,.0f"))


def spend_by_cache_status(df: pd.DataFrame, grain: str) -> alt.Chart:
    """Stacked bars of spend per period by cache status; estimated dollars are paler.

    Columns: ``when`` (ISO wall time), ``period_text``, ``cache_status``, ``cost_basis``,
    ``cost_usd``.
    """
    df = df.assign(status=df["cache_status"].map(CACHE_STATUS_LABELS).fillna(df["cache_status"]),
                   basis=df["cost_basis"].where(df["cost_basis"] != "allocated", "billed"))
    df, x = _bucket_x(df, grain)
    return alt.Chart(df, title="Spend by cache status").mark_bar().encode(
        **x,
        y=_usd_y(),
        color=alt.Color("status:N", legend=_legend("cache status"),
                        scale=alt.Scale(domain=[CACHE_STATUS_LABELS[s] for s in CACHE_STATUSES],
                                        range=list(CACHE_STATUS_COLORS))),
        opacity=alt.Opacity("basis:N", title="basis",
                            scale=alt.Scale(domain=["billed", "estimated"], range=[1.0, 0.4])),
        order=alt.Order("status:N"),
        tooltip=[alt.Tooltip("period_text:N", title="period"), alt.Tooltip("status:N"),
                 alt.Tooltip("basis:N"), alt.Tooltip("cost_usd:Q", format="$,.2f")],
    )


#: The selection a drill-down chart reports (``st.altair_chart(on_select=...)``): the labels
#: clicked, on a bar or on the legend.
PICK = "pick"


def spend_by_dimension(df: pd.DataFrame, grain: str, dimension: str,
                       drill: bool = False) -> alt.Chart:
    """Stacked bars of spend per period by the values of ``dimension``; with ``drill``, a
    click on a bar or a legend entry selects its label (the selection :data:`PICK`).

    Columns: ``when``, ``period_text``, ``label``, ``cost_usd``.
    """
    df, x = _bucket_x(df, grain)
    chart = alt.Chart(df, title=f"Spend by {dimension.replace('_', ' ')}").mark_bar()
    if drill:
        chart = chart.add_params(alt.selection_point(name=PICK, fields=["label"],
                                                     bind="legend", on="click"))
    return chart.encode(
        **x,
        y=_usd_y(),
        color=alt.Color("label:N", scale=label_scale(df, "label"),
                        legend=_legend(dimension.replace("_", " "))),
        tooltip=[alt.Tooltip("period_text:N", title="period"),
                 alt.Tooltip("label:N", title=dimension), alt.Tooltip("cost_usd:Q",
                                                                      format="$,.2f")],
    )


def daily_spend(df: pd.DataFrame, daily_budget: float | None = None) -> alt.LayerChart:
    """Spend per day (the Overview's last 30 days), billed solid and estimated pale, with the
    daily pace a monthly budget allows as a rule. Columns: ``when``, ``period_text``,
    ``basis``, ``cost_usd``."""
    df, x = _bucket_x(df, "day")
    bars = alt.Chart(df).mark_bar(color="#4c78a8").encode(
        **x, y=_usd_y("spend per day (USD)"),
        opacity=alt.Opacity("basis:N", title="basis",
                            scale=alt.Scale(domain=["billed", "estimated"], range=[1.0, 0.4])),
        tooltip=[alt.Tooltip("period_text:N", title="day"), alt.Tooltip("basis:N"),
                 alt.Tooltip("cost_usd:Q", format="$,.2f")])
    layers: list[alt.Chart] = [bars]
    if daily_budget is not None:
        layers.append(alt.Chart(pd.DataFrame({"budget": [daily_budget]})).mark_rule(
            color="#e45756", strokeDash=[4, 4]).encode(
            y="budget:Q", tooltip=[alt.Tooltip("budget:Q", title="budget per day",
                                               format="$,.2f")]))
    return alt.LayerChart(layer=layers, title="Spend per day, the last 30 days")


def hit_ratio_lines(df: pd.DataFrame, grain: str, target: float | None = None) -> alt.LayerChart:
    """The cache hit ratio over time, one line per group, with the target as a rule.

    Columns: ``when``, ``period_text``, ``group``, ``hit_ratio`` (0..1), ``input_tokens``.
    """
    lines = alt.Chart(df).mark_line(point=grain != "hour").encode(
        x=_time_x(grain),
        y=alt.Y("hit_ratio:Q", title="cache hit ratio", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1])),
        # Strokes, not the points' large circles: eleven entries fit the chart's height
        # (Vega-Lite drops the entries that do not).
        color=alt.Color("group:N", legend=alt.Legend(
            title=None, symbolLimit=0, labelLimit=260, symbolType="stroke", symbolSize=120),
                        scale=label_scale(df, "group", by="input_tokens")),
        tooltip=[alt.Tooltip("period_text:N", title="period"), alt.Tooltip("group:N"),
                 alt.Tooltip("hit_ratio:Q", format=".1%"),
                 alt.Tooltip("input_tokens:Q", format=",", title="input tokens")])
    layers: list[alt.Chart] = [lines]
    if target is not None:
        layers.append(alt.Chart(pd.DataFrame({"target": [target]})).mark_rule(
            color="#e45756", strokeDash=[4, 4]).encode(
            y="target:Q", tooltip=[alt.Tooltip("target:Q", format=".0%", title="target")]))
    return alt.LayerChart(layer=layers, title="Cache hit ratio")


def token_kinds(df: pd.DataFrame, grain: str) -> alt.Chart:
    """Input tokens per period: cache reads against cache writes and uncached input.

    Columns: ``when``, ``period_text``, ``kind``, ``tokens``.
    """
    kinds = ["cache read", "cache write 5m", "cache write 1h", "uncached input"]
    df, x = _bucket_x(df, grain)
    return alt.Chart(df, title="Reads vs writes (input tokens)").mark_bar().encode(
        **x,
        y=alt.Y("tokens:Q", title="input tokens", stack=True, axis=alt.Axis(format="~s")),
        color=alt.Color("kind:N", title=None, scale=alt.Scale(
            domain=kinds, range=["#54a24b", "#f58518", "#e45756", "#4c78a8"])),
        order=alt.Order("kind_order:Q"),
        tooltip=[alt.Tooltip("period_text:N", title="period"), alt.Tooltip("kind:N"),
                 alt.Tooltip("tokens:Q", format=",")])


def lever_bars(df: pd.DataFrame, title: str) -> alt.Chart:
    """Horizontal bars of dollars per lever (and feature). Columns: ``lever``, ``feature``,
    ``cost_usd``."""
    return alt.Chart(df, title=title).mark_bar().properties(
        height=alt.Step(40)).encode(  # bars a label's height, not 15 px
        y=alt.Y("lever:N", title=None, axis=alt.Axis(labelLimit=240)),
        x=alt.X("cost_usd:Q", title="USD", stack=True, axis=alt.Axis(format="$,.0f")),
        color=alt.Color("feature:N", scale=label_scale(df, "feature"),
                        legend=_legend("feature", columns=3)),
        tooltip=[alt.Tooltip("lever:N"), alt.Tooltip("feature:N"),
                 alt.Tooltip("cost_usd:Q", format="$,.2f")])


def model_mix(df: pd.DataFrame) -> alt.Chart:
    """Each feature's spend share by model line next to the target mix.

    Columns: ``row`` (feature, or "target"), ``line``, ``share`` (0..1), ``cost_usd``.
    """
    order = list(dict.fromkeys(df["row"]))
    return alt.Chart(df, title="Model mix per feature against the target").mark_bar().properties(
        height=alt.Step(26)).encode(
        y=alt.Y("row:N", title=None, sort=order, axis=alt.Axis(labelLimit=260)),
        x=alt.X("share:Q", title="share of spend", stack="normalize", axis=alt.Axis(format="%")),
        color=alt.Color("line:N", legend=_legend("line"), scale=alt.Scale(
            domain=list(LINE_COLORS), range=list(LINE_COLORS.values()))),
        order=alt.Order("line_order:Q"),
        tooltip=[alt.Tooltip("row:N", title="feature"), alt.Tooltip("line:N"),
                 alt.Tooltip("share:Q", format=".1%"),
                 alt.Tooltip("cost_usd:Q", format="$,.2f")])


def _time_format(df: pd.DataFrame) -> str:
    """Axis labels as fine as the span shown, on a 24-hour clock: one fixed "%b %d %H:%M"
    wrote "Dec 03 00:06" under every tick of episodes a few minutes old, and Vega's own
    labels say "12:39" for 00:39."""
    times = pd.to_datetime(pd.concat([df["start"], df["end"]]), errors="coerce").dropna()
    span = (times.max() - times.min()) if len(times) else pd.Timedelta(0)
    if span >= pd.Timedelta(days=3):
        return "%b %d"
    if span >= pd.Timedelta(hours=2):
        return "%b %d %H:%M"
    return "%H:%M:%S" if span < pd.Timedelta(minutes=5) else "%H:%M"


def episode_timeline(df: pd.DataFrame) -> alt.LayerChart:
    """Alert episodes as bars from start to end (or now). Columns: ``alert``, ``start``,
    ``end`` (ISO wall times), ``state``, ``summary``, ``start_text``, ``end_text``."""
    base = alt.Chart(df).encode(
        x=alt.X("start:T", title=None, scale=alt.Scale(type="utc"),
                axis=alt.Axis(format=_time_format(df), labelOverlap=True)),
        y=alt.Y("alert:N", title=None, axis=alt.Axis(labelLimit=520)),
        color=alt.Color("state:N", title=None, scale=alt.Scale(
            domain=["firing", "pending", "resolved", "expired", "cleared while pending"],
            range=["#e45756", "#f58518", "#54a24b", "#9d9da0", "#bab0ac"])),
        tooltip=[alt.Tooltip("alert:N"), alt.Tooltip("state:N"),
                 alt.Tooltip("start_text:N", title="from"),
                 alt.Tooltip("end_text:N", title="until"), alt.Tooltip("summary:N")])
    # the point marks an episode that began a moment ago (its bar has no width yet)
    return alt.LayerChart(layer=[base.mark_bar(height=12).encode(x2="end:T"),
                                 base.mark_point(filled=True)], title="Alert episodes")


def top_labels(df: pd.DataFrame, column: str, keep: int, other: str = "other") -> pd.DataFrame:
    """``df`` with every value of ``column`` outside the ``keep`` biggest spenders as
    ``other`` (summed), so a stacked chart stays readable."""
    biggest = df.groupby(column)["cost_usd"].sum().sort_values(ascending=False)
    kept: Sequence[str] = list(biggest.index[:keep])
    if len(biggest) <= keep:
        return df
    df = df.assign(**{column: df[column].where(df[column].isin(kept), other)})
    keys = [c for c in df.columns if c != "cost_usd"]
    return df.groupby(keys, as_index=False, dropna=False)["cost_usd"].sum()


def spend_by_product(df: pd.DataFrame) -> alt.Chart:
    """Horizontal bars of dollars per product, biggest on top. Columns: ``product``,
    ``cost_usd``, ``share`` (0..1)."""
    order = list(df["product"])
    return alt.Chart(df, title="Spend by product").mark_bar().properties(
        height=alt.Step(26)).encode(
        y=alt.Y("product:N", title=None, sort=order, axis=alt.Axis(labelLimit=240)),
        x=alt.X("cost_usd:Q", title="spend (USD)", axis=alt.Axis(format="$,.0f")),
        tooltip=[alt.Tooltip("product:N"), alt.Tooltip("cost_usd:Q", format="$,.2f"),
                 alt.Tooltip("share:Q", format=".1%")])
