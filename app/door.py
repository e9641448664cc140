"""Who may see the dashboard: Streamlit's OpenID Connect login and spendwatch's allow-list.

``main.py`` calls :func:`enter` before any page runs, and :func:`app.data.config`, where every
page starts, calls :func:`check` again. With ``[dashboard] auth_secrets_file``
set (``spendwatch dashboard`` passes that file to Streamlit as its only secrets file), a
visitor who is not logged in sees a login button and nothing else; a logged-in user whose
e-mail address (verified, unless ``require_verified_email = false``) is not on
``allowed_emails`` / ``allowed_domains`` sees a polite refusal and a way to log out, nothing
else. Without a login the dashboard only serves this machine (``spendwatch dashboard``
refuses other hosts; this module refuses too when Streamlit itself was told another address).

Fails closed: a config that asks for a login while Streamlit has no ``[auth]`` (started some
other way than ``spendwatch dashboard``) shows how to start it and nothing else.
"""

from __future__ import annotations

from typing import Callable, NoReturn

import streamlit as st

from spendwatch.config import Config, DashboardConfig, is_loopback

VIEWER_KEY = "spendwatch_viewer"
#: Who made a silence on a dashboard without login (it only serves this machine).
NO_LOGIN = "dashboard without login"


def enter(config: Config) -> str:
    """:func:`check`, then who is signed in and a Log out button in the sidebar (``main.py``)."""
    viewer = check(config)
    if config.dashboard.login_required:
        with st.sidebar:
            st.caption("Signed in as")
            st.text(viewer)
            st.button("Log out", on_click=st.logout, key="door_logout")
    return viewer


def check(config: Config) -> str:
    """Let the visitor in (returns who they are: their e-mail address, or :data:`NO_LOGIN`),
    or show what to do and stop the run. :func:`app.data.config` runs it too, so a page can
    never run without it (Streamlit runs a ``pages/`` script directly, without ``main.py``,
    for a first visitor whose URL names it)."""
    board = config.dashboard
    if not board.login_required:
        address = str(st.get_option("server.address") or "")
        if address and not is_loopback(address):
            _stop(st.error, "This dashboard has no login, so it only serves this machine. "
                            "Start it with `spendwatch dashboard`, or configure a login "
                            "(docs/dashboard-login.md).")
        st.session_state[VIEWER_KEY] = NO_LOGIN
        return NO_LOGIN
    user = st.user
    if "is_logged_in" not in user:
        _stop(st.error, "This dashboard requires a login, but it was started without its "
                        "login settings. Start it with `spendwatch dashboard`.")
    if not user.is_logged_in:
        _login_screen()
    email = str(user.get("email") or "")
    if not board.admits(email, user.get("email_verified")):
        _refusal(board, email, verified=user.get("email_verified") is True)
    viewer = email.strip().lower()
    st.session_state[VIEWER_KEY] = viewer
    return viewer


def viewer() -> str:
    """Who this session's visitor is (set by :func:`enter`)."""
    return str(st.session_state.get(VIEWER_KEY) or NO_LOGIN)


def _login_screen() -> NoReturn:
    st.title("spendwatch")
    st.write("This dashboard is private. Log in with your work account to see it.")
    st.button("Log in", type="primary", on_click=st.login, key="door_login")
    st.stop()


def _refusal(board: DashboardConfig, email: str, verified: bool) -> NoReturn:
    st.title("spendwatch")
    if email and not verified and board.require_verified_email:
        st.warning("Sorry: your identity provider did not confirm this e-mail address, so "
                   "this dashboard cannot let you in.")
    else:
        st.warning("Sorry: this account may not see this dashboard. If you should, ask its "
                   "administrator to add your address to the allow-list.")
    if email:
        st.caption("Signed in as")
        st.text(email)  # as text: an identity provider's claim is never Markdown here
    st.button("Log out", on_click=st.logout, key="door_logout")
    st.stop()


def _stop(show: Callable[[str], object], message: str) -> NoReturn:
    show(message)
    st.stop()
