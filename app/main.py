"""The spendwatch dashboard: ``streamlit run app/main.py`` (``spendwatch dashboard`` does it).

Reads the config named by ``$SPENDWATCH_CONFIG`` (else ``./config.toml``); ``$SPENDWATCH_NOW``
(RFC 3339) fixes the clock. :mod:`app.door` lets in only who may see it (the login and its
allow-list, docs/dashboard-login.md). Each page is one short file in ``pages/``; queries are in
:mod:`spendwatch.warehouse.figures`, reached through :mod:`app.data`; charts come from :mod:`app.charts`.
"""

from __future__ import annotations

import streamlit as st

from app import data, door

# Exceptions never reach the browser with their text or traceback, however we were started.
st.set_option("client.showErrorDetails", "none")
st.set_page_config(page_title="spendwatch", page_icon=":material/savings:", layout="wide")

# The door, before any page runs (`spendwatch dashboard` makes every URL run this script
# first; data.config() checks again, whatever runs): a visitor who may not see the dashboard
# gets a login button or a refusal, and the run stops here.
door.enter(data.config())
data.begin_run()

# url_path matches the page names in alert links (spendwatch alerts: dashboard_url/<Page>).
PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/spend.py", title="Spend", icon=":material/payments:", url_path="Spend"),
    st.Page("pages/people.py", title="People and products", icon=":material/group:",
            url_path="People"),
    st.Page("pages/caching.py", title="Caching", icon=":material/cached:", url_path="Caching"),
    st.Page("pages/savings.py", title="Savings", icon=":material/savings:", url_path="Savings"),
    st.Page("pages/alerts.py", title="Alerts", icon=":material/notifications:",
            url_path="Alerts"),
    st.Page("pages/reports.py", title="Reports", icon=":material/download:",
            url_path="Reports"),
]

st.navigation(PAGES).run()
