"""Alerts: what fires, recent episodes, delivery attempts, broken channels, silences.

Silences are the one thing the dashboard writes: created through ``alerts.silences.add_silence``
(as ``spendwatch alerts silence`` does), recording who made it (the logged-in address, see
:mod:`app.door`), and ended through ``alerts.silences.expire_silence``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import streamlit as st

from alerts import history
from alerts.states import State
from alerts.silences import add_silence, expire_silence
from app import charts, data, door
from app.format import frame, iso_wall_time, local, md, table_height
from spendwatch.config import parse_duration
from spendwatch.errors import ConfigError, DatabaseBusy

config = data.config()
now = data.now()
tz = config.tz
EPISODE_DAYS = 7

st.title("Alerts")
flash = st.session_state.pop("alerts_flash", None)
if flash:
    st.success(flash)

(firing, episodes, attempts, counts, broken, silences, scopes) = data.load_many(
    (history.firing_alerts, (now,)),
    (history.recent_episodes, (now - timedelta(days=EPISODE_DAYS),)),
    (history.delivery_attempts, (100,)),
    (history.notification_counts, ()),
    (history.broken_channels, ()),
    (history.silences, (now,)),
    (history.alert_scopes, ()),
)
active = [s for s in silences if s["active"]]

col_firing, col_pending, col_broken, col_silenced = st.columns(4)
col_firing.metric("Firing", str(sum(a["state"] == State.FIRING for a in firing)))
col_pending.metric("Pending", str(sum(a["state"] == State.PENDING for a in firing)),
                   help="Firing, but not for as long as the rule's `for` yet.")
col_broken.metric("Broken channels", str(len(broken)))
col_silenced.metric("Active silences", str(len(active)))
if not config.alerts.rules:
    st.info("No alert rules are configured: add [[alerts.rules]] to the config "
            "(config.example.toml shows every kind).")

for channel in broken:
    st.error(f"Channel **{md(channel['channel'])}** is broken since "
             f"{local(channel['since'], tz)}: {md(channel['reason'])}. Nothing is sent to it "
             "until it is fixed; then run "
             "`spendwatch alerts test`.")

#: Rows up to four lines tall: a summary or a channel's answer wraps in its cell (Streamlit
#: wraps text in rows taller than 4rem) rather than being cut at the column's edge, and the
#: columns' widths (pixels) add up to the page's width at 1400 px, so none is cut off.
WRAPPED = 92


def columns(**widths: tuple[str, int]) -> dict[str, Any]:
    """Titles and widths (pixels) of a table's columns."""
    return {name: st.column_config.Column(title, width=width)
            for name, (title, width) in widths.items()}


st.subheader("Firing now")
if firing:
    st.dataframe(frame([{"rule": a["rule"], "scope": a["scope_key"], "level": a["level"],
                         "state": a["state"] + (" (silenced)" if a["silenced"] else ""),
                         "since": local(a["since"], tz, with_zone=False),
                         "summary": a["summary"]} for a in firing]),
                 hide_index=True, key="alerts_firing", row_height=WRAPPED,
                 height=table_height(len(firing), WRAPPED),
                 column_config=columns(rule=("Rule", 125), scope=("Scope", 190),
                                       level=("Level", 105), state=("State", 85),
                                       since=("Since", 125), summary=("Summary", 300)))
else:
    st.success("No alert is firing.")

st.subheader(f"Episodes of the last {EPISODE_DAYS} days")
if episodes:
    def state(e: dict) -> str:
        if e["ended_at"] is None:
            return State.FIRING if e["firing_at"] else State.PENDING
        return (e["end_reason"] or "resolved").replace("_", " ")

    timeline = [{"alert": f"{e['rule']} · {e['scope_key']} · {e['level']}",
                 "start": iso_wall_time(e["started_at"].astimezone(tz).replace(tzinfo=None)),
                 "end": iso_wall_time((e["ended_at"] or now).astimezone(tz).replace(tzinfo=None)),
                 "start_text": local(e["started_at"], tz),
                 "end_text": local(e["ended_at"], tz) if e["ended_at"] else "now",
                 "state": state(e), "summary": e["summary"]} for e in episodes]
    st.altair_chart(charts.episode_timeline(frame(timeline)), width="stretch")
    st.dataframe(frame([{"rule": e["rule"], "scope": e["scope_key"], "level": e["level"],
                         "state": state(e) + (" (silenced)" if e["silenced"] else ""),
                         "when": local(e["started_at"], tz, False) + " to "
                         + (local(e["ended_at"], tz, False) if e["ended_at"] else "now"),
                         "summary": e["summary"]}
                        for e in episodes]), hide_index=True, key="alerts_episodes",
                 row_height=WRAPPED, height=table_height(len(episodes), WRAPPED),
                 column_config=columns(rule=("Rule", 120), scope=("Scope", 180),
                                       level=("Level", 100), state=("State", 95),
                                       when=("From, to", 150), summary=("Summary", 285)))
else:
    st.info("No alert episode in this period.")

st.subheader("Deliveries")
st.caption("Notifications: " + (", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
                                 or "none yet") + ".")
if attempts:
    def outcome(d: dict) -> str:
        return "delivered" if d["ok"] else "refused for good" if d["permanent"] \
            else "failed, retried"

    st.dataframe(frame([{"at": local(d["attempted_at"], tz, False), "channel": d["channel"],
                         "kind": d["kind"], "rule": d["rule"] or "(test message)",
                         "scope": d["scope_key"], "outcome": outcome(d),
                         "answer": d["answer"], "status": d["status"]} for d in attempts]),
                 hide_index=True, key="alerts_deliveries", row_height=WRAPPED,
                 height=table_height(len(attempts), WRAPPED),
                 column_config=columns(at=("At", 125), channel=("Channel", 110),
                                       kind=("Kind", 70), rule=("Rule", 145),
                                       scope=("Scope", 160), outcome=("Outcome", 95),
                                       answer=("Answer", 158), status=("Now", 75)))
else:
    st.info("Nothing has been sent yet.")


def _done(message: str) -> None:
    data.clear_cache()
    st.session_state["alerts_flash"] = message
    st.rerun()


st.subheader("Silences")
st.caption("A silence stops notifications of a rule (one scope, or all); its episodes are "
           "still recorded.")
for silence in silences:
    scope = silence["scope_key"] or "every scope"
    # As text, never Markdown: a comment is whatever its author typed.
    text = (f"{silence['rule']} ({scope}) until {local(silence['expires_at'], tz)}, by "
            f"{silence['created_by'] or 'someone (not recorded)'}"
            + (f": {silence['comment']}" if silence["comment"] else ""))
    if not silence["active"]:
        st.text(text + " (ended)")
        continue
    left, right = st.columns([5, 1])
    left.text(text)
    if right.button("Expire now", key=f"alerts_expire_{silence['id']}"):
        try:
            ended = expire_silence(config, silence["id"], now)
        except DatabaseBusy:
            st.warning(data.BUSY_MESSAGE)
        else:
            _done(f"Silence of {md(silence['rule'])} ({md(scope)}) ended." if ended
                  else "That silence had already ended.")

rules = [r.name for r in config.alerts.rules]
if rules:
    with st.container(border=True):
        st.markdown("**New silence**")
        left, middle, right = st.columns(3)
        rule = left.selectbox("Rule", rules, key="alerts_silence_rule")
        scope_choice = middle.selectbox("Scope", ["every scope", *(
            s for s in scopes.get(rule, []) if s != "all")],
                                        key="alerts_silence_scope")
        duration = right.text_input("For", value="4h", key="alerts_silence_for",
                                    help="A duration such as 30m, 4h or 2d.")
        comment = st.text_input("Comment (why)", key="alerts_silence_comment")
        if st.button("Silence", type="primary", key="alerts_silence_create"):
            try:
                until = now + parse_duration(config.path, "for", duration.strip())
            except ConfigError:
                st.error(f"{duration!r} is not a duration: use e.g. 30m, 4h or 2d.")
            else:
                try:
                    add_silence(config, rule,
                                None if scope_choice == "every scope" else scope_choice,
                                until, now, comment.strip() or None,
                                created_by=door.viewer())
                except DatabaseBusy:
                    st.warning(data.BUSY_MESSAGE)
                except ConfigError as exc:
                    st.error(str(exc))
                else:
                    _done(f"{md(rule)} ({md(scope_choice)}) silenced until {local(until, tz)}.")
