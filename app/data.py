"""The dashboard's only way to the warehouse: config, the clock, cached query batches.

- **Config**: :func:`config` loads ``$SPENDWATCH_CONFIG`` (else ``./config.toml``) on every
  run; a problem in it is shown as its one-line message.
- **Clock**: :func:`now` is read once per run (:func:`begin_run`, called by ``main.py``) and
  passed down. ``$SPENDWATCH_NOW`` (RFC 3339, e.g. ``2026-11-24T12:00:00Z``) fixes it, for
  tests and screenshots; otherwise it is the current time floored to the whole minute, so a
  query result cached for one run serves the others of the same minute.
- **Queries**: :func:`load` runs one or more figures of :data:`app.figures.FIGURES` on ONE
  :class:`~spendwatch.warehouse.batch.Batch` (``storage.reader``, opened for the batch and
  closed; the name book and feature map built once for all its figures), and caches the
  RESULTS for 60 seconds (``st.cache_data``). No connection outlives a batch.
- **Failures**: no database file yet shows what to run (``spendwatch collect``), a database the
  worker keeps locked says the data is being updated, a config problem shows its message; the
  page stops there. Never a traceback.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, Callable, NoReturn

import duckdb
import streamlit as st

from alerts import settings as alert_settings
from app import door
from app.figures import FIGURES, name_of
from spendwatch.config import Config, config_path
from spendwatch.errors import ConfigError, DatabaseBusy, DatabaseMissing, DatabaseOutdated, \
    SpendwatchError
from spendwatch.timeutil import parse_utc, utcnow
from spendwatch.warehouse.batch import Batch, read
from spendwatch.warehouse.spend import CannotCombine

NOW_ENV = "SPENDWATCH_NOW"
CACHE_SECONDS = 60
_NOW_KEY = "spendwatch_now"

EMPTY_MESSAGE = ("The database is empty: nothing has been collected yet. Run "
                 "`spendwatch collect` (or leave `spendwatch run` running), then reload.")
BUSY_MESSAGE = ("The data is being updated (the worker is writing to the database). "
                "Reload in a moment.")


# --- the clock -------------------------------------------------------------------------------

def read_clock(environ: dict[str, str] | None = None) -> datetime:
    """``$SPENDWATCH_NOW`` if set (RFC 3339), else now floored to the minute (UTC).

    Raises ConfigError for a value that is not an RFC 3339 timestamp with a time zone.
    """
    text = (environ if environ is not None else os.environ).get(NOW_ENV, "").strip()
    if not text:
        return utcnow().replace(second=0, microsecond=0)
    try:
        return parse_utc(text)
    except ValueError:
        raise ConfigError(f"{NOW_ENV}={text!r} is not an RFC 3339 timestamp such as "
                          "2026-11-24T12:00:00Z; fix or unset it") from None


def begin_run() -> datetime:
    """Read the clock once for this run; every page then uses :func:`now`."""
    try:
        moment = read_clock()
    except ConfigError as exc:
        stop_with(st.error, str(exc))
    st.session_state[_NOW_KEY] = moment
    return moment


def now() -> datetime:
    """This run's "now" (read by :func:`begin_run`)."""
    moment = st.session_state.get(_NOW_KEY)
    return moment if isinstance(moment, datetime) else begin_run()


# --- config ----------------------------------------------------------------------------------

def config() -> Config:
    """The validated config, once the visitor is let in (:func:`app.door.check`: every page
    starts here, so none runs for someone the login or its allow-list refuses); a problem
    stops the page with its one-line message."""
    try:
        loaded = alert_settings.load()  # the core config, then alerts/ checks its own
    except ConfigError as exc:
        stop_with(st.error, f"{exc}. The dashboard reads the config named by "
                            f"$SPENDWATCH_CONFIG (now: {config_path()}).")
    door.check(loaded)
    return loaded


# --- queries ---------------------------------------------------------------------------------

Call = tuple[Callable[..., Any], tuple[Any, ...]]


def load(func: Callable[..., Any], *args: Any) -> Any:
    """``func(batch, *args)`` (or ``func(batch.conn, *args)``), a figure of
    :data:`app.figures.FIGURES`, cached: see :func:`load_many`."""
    return load_many((func, args))[0]


def load_many(*calls: Call) -> list[Any]:
    """Run ``(figure function, args)`` calls on one reader; results cached for 60 seconds.

    Arguments must be hashable by Streamlit (dates, strings, numbers, tuples, dicts). Stops the
    page with a message when the database is missing, busy, or older than this version.
    """
    cfg = config()
    names = tuple((name_of(func), args) for func, args in calls)
    try:
        stamp = cfg.path.stat().st_mtime_ns
    except OSError:
        stamp = 0
    try:
        return _cached_batch((str(cfg.path), stamp),
                             names, cfg)
    except DatabaseMissing:
        stop_with(st.info, EMPTY_MESSAGE + f"\n\nDatabase: `{cfg.database_label}`")
    except DatabaseBusy:
        stop_with(st.warning, BUSY_MESSAGE)
    except (DatabaseOutdated, duckdb.CatalogException, duckdb.BinderException):
        stop_with(st.warning, "The database was written by an older spendwatch: run "
                              "`spendwatch collect` once to upgrade it, then reload.")
    except SpendwatchError as exc:
        stop_with(st.error, str(exc))
    except CannotCombine as exc:  # a breakdown and a filter from two cuts of the API's data
        stop_with(st.warning, f"This view cannot be shown: {exc}.")


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False, max_entries=500)
def _cached_batch(config_key: tuple[str, int], calls: tuple[tuple[str, tuple[Any, ...]], ...],
                  _config: Config) -> list[Any]:
    """One reader batch for the whole batch; only results are cached, never the connection."""
    return read(_config, _run_figures, calls)


def _run_figures(batch: Batch, calls: tuple[tuple[str, tuple[Any, ...]], ...]) -> list[Any]:
    results = []
    for name, args in calls:
        figure = FIGURES[name]
        results.append(figure.func(batch, *args) if figure.takes_batch
                       else figure.func(batch.conn, *args))
    return results


def deferred(func: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """A figure of :data:`app.figures.FIGURES` to compute later, on its own reader: for a
    download button's file, built when it is clicked (on Streamlit's download thread, where
    no Streamlit command runs) rather than on every run of the page."""
    cfg = config()
    calls = ((name_of(func), args),)
    return lambda: read(cfg, _run_figures, calls)[0]


def clear_cache() -> None:
    """Forget cached results (after the dashboard itself wrote: a silence)."""
    _cached_batch.clear()


def stop_with(show: Callable[[str], Any], message: str) -> NoReturn:
    """Show ``message`` the way ``show`` does (st.info, st.warning, st.error) and stop."""
    show(message)
    st.stop()
