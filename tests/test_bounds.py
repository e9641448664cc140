"""Bounded collection: hostile or endless API answers end in one clear line, fast, with
nothing of the bad window stored; the worker keeps alerting and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from collectors.bounds import DeadlineExceeded, RunBounds
from collectors.rows import analytics_cost_rows, check_page_size
from collectors.sync import CollectOptions, Window, collect, write_window
from conftest import ADMIN_KEY, REPO, Simulator, env_with_key, wait_for, write_config
from fake_slack import FakeSlack
from spendwatch import storage
from spendwatch.config import load_config
from spendwatch.errors import SpendwatchError
from spendwatch.pricing import price_table
from warehouse import db_path, exists, query

UTC = timezone.utc
USAGE = "/v1/organizations/analytics/usage"
COST = "/v1/organizations/analytics/cost"
LEGACY_COST = "/v1/organizations/cost_report"
ALWAYS = 100000  # a fault's count that outlasts the test


def spendwatch(config: Path, *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess,
                                                                         float]:
    """Run the CLI as a user would; returns the finished process and the seconds it took."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "spendwatch", "--config", str(config), *args],
                          cwd=REPO, env=env_with_key(), capture_output=True, text=True,
                          timeout=timeout)
    return done, time.monotonic() - started


PROGRESS = re.compile(r"^\S.*: \d+ of \d+ windows( \(.*\))?$")


def error_line(stderr: str) -> str:
    """The one line a failed command prints (no log lines, no traceback); a long run's
    progress lines (a line every 10 s off a terminal, spendwatch.cli.progress) beside it."""
    lines = [line for line in stderr.splitlines() if not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def count(db: Path, table: str) -> int:
    if not exists(db):
        return 0
    return query(db, f"SELECT count(*) FROM {table}")[0][0]


def runs(db: Path) -> list[tuple[str, str | None]]:
    return query(db, "SELECT status, error FROM collection_runs ORDER BY id")


def one_day_config(folder: Path, simulator: Simulator, collection: str = "",
                   source: str = "analytics") -> Path:
    return write_config(folder, [{"name": "acme", "source": source, "base_url": simulator.url}],
                        collection=collection)


DAY_ARGS = ("collect", "--since", "2026-11-20", "--until", "2026-11-20")


# --- endless and oversized pages, through the CLI ------------------------------------------------

@pytest.mark.parametrize("empty", [True, False], ids=["empty pages", "pages with rows"])
def test_a_repeated_cursor_is_refused_at_once(isolated: Path, simulator: Simulator,
                                              empty: bool) -> None:
    path = one_day_config(isolated, simulator)
    simulator.fault(path=USAGE, kind="repeat_cursor", empty=empty, count=ALWAYS)
    done, seconds = spendwatch(path, *DAY_ARGS)
    assert done.returncode == 1, done.stderr
    assert seconds < 120  # a bound, not a speed: the 2 requests below are the proof
    line = error_line(done.stderr)
    assert "analytics usage 2026-11-20T" in line and "page 2" in line
    assert "next_page cursor it sent before" in line
    assert "Traceback" not in done.stderr
    db = db_path(load_config(path))
    assert count(db, "usage_hourly") == 0
    assert len([r for r in simulator.requests_served() if r["path"] == USAGE]) == 2
    ((status, error),) = runs(db)
    assert status == "failed" and "cursor it sent before" in error


def test_a_legacy_repeated_cursor_is_refused_too(isolated: Path, simulator: Simulator) -> None:
    path = one_day_config(isolated, simulator, source="legacy")
    simulator.fault(path=LEGACY_COST, kind="repeat_cursor", count=ALWAYS)
    done, _ = spendwatch(path, *DAY_ARGS)
    assert done.returncode == 1
    line = error_line(done.stderr)
    assert "legacy cost" in line and "cursor it sent before" in line
    assert count(db_path(load_config(path)), "cost_buckets") == 0


def test_a_page_larger_than_asked_for_is_refused_before_it_is_built(isolated: Path,
                                                                    simulator: Simulator) -> None:
    path = one_day_config(isolated, simulator, collection="page_limit = 100")
    simulator.fault(path=USAGE, kind="oversized_page", rows=20000, count=ALWAYS)
    done, seconds = spendwatch(path, *DAY_ARGS)
    assert done.returncode == 1, done.stderr
    assert seconds < 120
    line = error_line(done.stderr)
    assert "analytics usage 2026-11-20T" in line
    assert "holds 20000 rows, more than the 100 asked for" in line
    assert count(db_path(load_config(path)), "usage_hourly") == 0


def test_an_oversized_cost_page_is_refused_but_fanned_out_rows_are_not(
        isolated: Path, simulator: Simulator) -> None:
    path = one_day_config(isolated, simulator, collection="page_limit = 50")
    done, _ = spendwatch(path, *DAY_ARGS)  # cost rows fan out per cost and token type
    assert done.returncode == 0, done.stderr
    cost_pages = len([r for r in simulator.requests_served() if r["path"] == COST])
    assert count(db_path(load_config(path)), "cost_buckets") > 50 * cost_pages  # fanned out
    simulator.fault(path=COST, kind="oversized_page", rows=50 * 16 + 1, count=ALWAYS)
    done, _ = spendwatch(path, *DAY_ARGS, "--refresh")
    assert done.returncode == 1
    line = error_line(done.stderr)
    assert "analytics cost" in line and "holds 801 rows, more than the 50 asked for" in line


# --- the run's deadline -----------------------------------------------------------------------

#: `collect` without --since: the worker's routine run. Its deadline bounds the run's local
#: work too (names, plans, writes), which takes 0.7 s here and several times that on a loaded
#: machine: 6 s leaves the paging time to be cut.
DEADLINE = 6
ROUTINE = f"job_deadline_seconds = {DEADLINE}\ninitial_backfill_days = 1"


def collect_timed(simulator: Simulator, path: Path) -> tuple[subprocess.CompletedProcess, float,
                                                             list[dict]]:
    """``collect`` as a user runs it; returns the process, the seconds from the run's first
    API request to the process's end, and the requests served. Not from the interpreter's
    start: importing the SDK alone takes 3 s here and three times that on a loaded machine,
    before the run (and its deadline) begins."""
    done, _ = spendwatch(path, "collect", timeout=300)
    ended = time.time()
    served = simulator.requests_served()
    assert served, done.stderr
    return done, ended - min(r["received"] for r in served), served


def test_a_slow_answer_ends_at_the_deadline_with_a_failed_run(isolated: Path,
                                                              simulators) -> None:
    simulator = simulators(now=None)  # `collect` without --since runs on the real clock
    path = one_day_config(isolated, simulator, collection=ROUTINE)
    simulator.fault(path=USAGE, kind="delay", seconds=60, count=ALWAYS)
    done, working, _ = collect_timed(simulator, path)
    assert done.returncode == 1, done.stderr
    # Not the 60 s answer; the deadline, not the 10 s HTTP timeout, ended it (the line says
    # so). Past the deadline: recording the failed run and exiting, on a loaded machine.
    assert working < DEADLINE + 6, working
    line = error_line(done.stderr)
    assert f"deadline of {DEADLINE} s (collection.job_deadline_seconds)" in line
    assert "analytics usage 20" in line and "page 1" in line
    ((status, error),) = runs(db_path(load_config(path)))
    assert status == "failed" and f"deadline of {DEADLINE} s" in error


def test_a_call_that_fails_as_the_deadline_passes_is_the_deadline() -> None:
    """The HTTP timeout is cut to the time left, so a slow answer times out just as the
    deadline passes: that is the deadline's error, not a timeout with no time to retry (which
    one came first was a race on a loaded machine). A failure before the deadline is itself."""
    now = [0.0]
    bounds = RunBounds("organization 'acme'", 6, clock=lambda: now[0])

    def times_out_at_the_deadline() -> None:
        now[0] = 6.05
        raise TimeoutError("no answer in time")
    with pytest.raises(DeadlineExceeded, match="deadline of 6 s"):
        bounds.call(times_out_at_the_deadline, "analytics usage page 13")
    def times_out_early() -> None:
        raise TimeoutError("no answer in time")
    early = RunBounds("organization 'acme'", 6, clock=lambda: 1.0)
    with pytest.raises(TimeoutError):
        early.call(times_out_early, "page 1")


def test_slow_endless_paging_ends_at_the_deadline(isolated: Path, simulators) -> None:
    simulator = simulators(now=None)
    path = one_day_config(isolated, simulator, collection=ROUTINE + "\npage_limit = 1")
    delay = 0.4
    simulator.fault(path=USAGE, kind="delay", seconds=delay, count=ALWAYS)
    done, working, served = collect_timed(simulator, path)
    assert done.returncode == 1, done.stderr
    line = error_line(done.stderr)
    assert f"deadline of {DEADLINE} s" in line and "page " in line
    # It paged (the deadline cut it mid-window), and no page was asked past the deadline.
    pages = len([r for r in served if r["path"] == USAGE])
    assert 2 <= pages <= DEADLINE / delay + 1, pages
    assert working < DEADLINE + 6, working
    assert count(db_path(load_config(path)), "usage_hourly") == 0


def test_an_explicit_backfill_is_not_cut_by_the_routine_deadline(isolated: Path,
                                                                 simulator: Simulator) -> None:
    path = one_day_config(isolated, simulator, collection="job_deadline_seconds = 1")
    simulator.fault(path=USAGE, kind="delay", seconds=0.3, count=8)
    done, seconds = spendwatch(path, "collect", "--since", "2026-11-19", "--until", "2026-11-20")
    assert done.returncode == 0, done.stderr
    assert seconds > 2.4  # past the 1 s deadline, and whole
    assert runs(db_path(load_config(path))) == [("ok", None)]


# --- amounts ---------------------------------------------------------------------------------

def test_an_impossible_amount_is_refused_with_one_line(isolated: Path,
                                                       simulator: Simulator) -> None:
    path = one_day_config(isolated, simulator)
    simulator.fault(path=COST, kind="bad_amount", value="-50000", count=ALWAYS)
    done, _ = spendwatch(path, *DAY_ARGS)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "ArrowInvalid" not in done.stderr
    line = error_line(done.stderr)
    assert "field 'amount'" in line and "is negative" in line
    assert "analytics cost 2026-11-20T00:00:00Z..2026-11-21T00:00:00Z" in line
    assert count(db_path(load_config(path)), "cost_buckets") == 0


@pytest.mark.parametrize(("amount", "said"), [
    ("1e30", "too large"), ("1e400", "too large"), ("NaN", "not a finite amount"),
    ("Infinity", "not a finite amount"), (1.5, "should be a decimal string"),
])
def test_every_impossible_amount_is_refused_and_nothing_of_the_window_stored(
        isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch, amount: Any,
        said: str) -> None:
    """The same refusal for the other amounts, through the collector in this process (the
    real SDK against the simulator: the CLI's one line is the test above)."""
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    config = load_config(one_day_config(isolated, simulator))
    simulator.fault(path=COST, kind="bad_amount", value=amount, count=ALWAYS)
    day = datetime(2026, 11, 20, tzinfo=config.tz)
    (result,) = collect(config, CollectOptions(since=day, until=day + timedelta(days=1)),
                        sleep=lambda s: None)
    assert not result.ok and result.error is not None
    assert "field 'amount'" in result.error and said in result.error, result.error
    assert "analytics cost 2026-11-20T" in result.error and "ArrowInvalid" not in result.error
    assert count(db_path(config), "cost_buckets") == 0
    assert runs(db_path(config))[-1][0] == "failed"


def test_a_negative_legacy_amount_is_refused(isolated: Path, simulator: Simulator) -> None:
    path = one_day_config(isolated, simulator, source="legacy")
    simulator.fault(path=LEGACY_COST, kind="bad_amount", value="-50000", count=ALWAYS)
    done, _ = spendwatch(path, *DAY_ARGS)
    assert done.returncode == 1
    line = error_line(done.stderr)
    assert "field 'amount' is negative" in line and "legacy cost" in line
    assert count(db_path(load_config(path)), "cost_buckets") == 0


# --- a refused key ---------------------------------------------------------------------------

def test_a_revoked_key_fails_collect_even_when_the_days_are_stored(isolated: Path,
                                                                   simulator: Simulator) -> None:
    path = one_day_config(isolated, simulator)
    done, _ = spendwatch(path, *DAY_ARGS)
    assert done.returncode == 0, done.stderr
    simulator.fault(path="/v1/organizations", status=401, count=ALWAYS)  # the key is revoked
    done, _ = spendwatch(path, *DAY_ARGS)  # nothing left to fetch: only the names refresh
    assert done.returncode == 1, done.stderr
    line = error_line(done.stderr)
    assert "401" in line and "the Admin API key was refused" in line
    assert ADMIN_KEY not in done.stderr
    statuses = [status for status, _ in runs(db_path(load_config(path)))]
    assert statuses == ["ok", "failed"]


# --- the worker: a real process on the real clock ----------------------------------------------

def slack_channel(rule: str = "fresh") -> str:
    return ('[[alerts.channels]]\nname = "ops"\nkind = "slack"\n'
            'webhook_url_env = "SLACK_WEBHOOK"\n'
            f'[[alerts.rules]]\nname = "{rule}"\nkind = "data_stale"\nchannels = ["ops"]\n')


def start_worker(path: Path, slack: FakeSlack) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "spendwatch", "--config", str(path), "run"],
                            cwd=REPO, env=env_with_key(SLACK_WEBHOOK=slack.url()),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_worker(worker: subprocess.Popen) -> tuple[str, float]:
    """SIGTERM; returns stderr and the seconds the worker took to exit."""
    worker.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        _, err = worker.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        _, err = worker.communicate()
    return err, time.monotonic() - started


def stale_alerts(slack: FakeSlack) -> list[str]:
    return [json.dumps(r.json) for r in slack.received if "fresh" in json.dumps(r.json)]


@pytest.mark.parametrize("fault", [
    {"path": "/v1/organizations/analytics", "kind": "repeat_cursor", "count": ALWAYS},
    {"path": "/v1/organizations/analytics", "kind": "delay", "seconds": 60, "count": ALWAYS},
], ids=["repeated cursor", "past the deadline"])
def test_the_worker_records_the_failed_run_alerts_and_stops_on_sigterm(
        isolated: Path, simulators, fake_slack: FakeSlack, fault: dict) -> None:
    simulator: Simulator = simulators(now=None)
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}],
                        collection="initial_backfill_days = 1\ninterval_minutes = 1\n"
                                   "job_deadline_seconds = 4",
                        extra=slack_channel())
    db = db_path(load_config(path))
    simulator.fault(**fault)
    worker = start_worker(path, fake_slack)
    try:
        wait_for(lambda: len(runs(db)) >= 1)
        wait_for(lambda: stale_alerts(fake_slack), seconds=30)  # the alert check went on
    finally:
        err, seconds = stop_worker(worker)
    assert worker.returncode == 0, err
    assert seconds < 20, seconds  # the hanging request lasts 60 s
    assert "Traceback" not in err
    status, error = runs(db)[0]
    assert status == "failed"
    assert ("cursor it sent before" in error if fault["kind"] == "repeat_cursor"
            else "deadline of 4 s" in error), error
    assert count(db, "usage_hourly") == 0
    reason = "cursor it sent before" if fault["kind"] == "repeat_cursor" else "deadline of 4 s"
    assert any(reason in alert for alert in stale_alerts(fake_slack))  # says why


def test_sigterm_ends_the_worker_within_seconds_in_the_middle_of_a_request(
        isolated: Path, simulators, fake_slack: FakeSlack) -> None:
    simulator: Simulator = simulators(now=None)
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}],
                        collection="initial_backfill_days = 1\ninterval_minutes = 10\n"
                                   "timeout_seconds = 120",
                        extra=slack_channel())
    db = db_path(load_config(path))
    simulator.fault(path=USAGE, kind="delay", seconds=120, count=ALWAYS)
    worker = start_worker(path, fake_slack)
    try:
        # names are stored just before the first usage page, which hangs for 120 s
        wait_for(lambda: count(db, "workspaces") > 0)
        time.sleep(1.5)
    finally:
        err, seconds = stop_worker(worker)
    assert worker.returncode == 0, err
    assert seconds < 8, seconds
    ((status, error),) = runs(db)
    assert status == "stopped" and "the next run resumes" in error
    assert not fake_slack.received  # a stopping worker skips the rest of its round


# --- fuzzing page parsing and storing ----------------------------------------------------------

WINDOW_START = datetime(2026, 11, 20, tzinfo=UTC)
WINDOW = Window("cost", WINDOW_START, WINDOW_START + timedelta(days=1), "analytics")

DELETE = object()  # a mutation that removes the field
texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)  # surrogates too
hostile = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), texts, st.lists(st.integers(), max_size=2),
    st.dictionaries(texts, st.integers(), max_size=2),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["-50000", "1e30", "1e400", "NaN", "-0", "1E-40", "9" * 28,
                     "9" * 27 + ".9999999999999999", "0E+500", "sNaN", "", " 1", "1_000",
                     "\u0661\u0662", "2026-11-20T05:00:00+99:00", "9999-12-31T23:59:59Z",
                     "2026-02-30T00:00:00Z", "2026-11-19T23:00:00Z", "2026-11-21T00:00:00Z",
                     "tokens", "web_search", "USD", "EUR"]),
    st.integers(min_value=0, max_value=10**30).map(str))
money = st.decimals(min_value=0, max_value=10**20, allow_nan=False, places=6).map(str)


@st.composite
def valid_cost_row(draw: st.DrawFn) -> dict:
    hour = WINDOW_START + timedelta(hours=draw(st.integers(0, 23)))
    dims = st.one_of(st.none(), st.sampled_from(["claude-sonnet-5-5", "wrkspc_01", "apikey_01"]),
                     st.text(max_size=8))
    cost_type = draw(st.sampled_from(["tokens", "web_search", "code_execution", "new_kind"]))
    return {"starting_at": hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ending_at": (hour + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "group": {"model": draw(dims), "workspace_id": draw(dims), "api_key_id": draw(dims),
                      "service_tier": draw(dims), "context_window": draw(dims),
                      "cost_type": cost_type,
                      "token_type": draw(st.sampled_from(["output_tokens", None, "new_type"]))},
            "cost": {"currency": "USD", "amount": draw(money), "list_amount": draw(money),
                     "requests": draw(st.one_of(st.none(), st.integers(0, 10**6)))}}


COST_FIELDS = ["starting_at", "ending_at", "group", "cost", "group.model", "group.workspace_id",
               "group.api_key_id", "group.service_tier", "group.context_window",
               "group.cost_type", "group.token_type", "cost.currency", "cost.amount",
               "cost.list_amount", "cost.requests"]


def mutate(row: Any, field: str, value: Any) -> None:
    *parents, last = field.split(".")
    for part in parents:
        row = row.get(part) if isinstance(row, dict) else None
    if isinstance(row, dict):
        if value is DELETE:
            row.pop(last, None)
        else:
            row[last] = value


@st.composite
def cost_pages(draw: st.DrawFn) -> Any:
    """Mostly well-formed pages with a few hostile fields; now and then anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(hostile, st.fixed_dictionaries({"data": hostile})))
    rows = draw(st.lists(valid_cost_row(), max_size=6))
    for _ in range(draw(st.integers(0, 2)) if rows else 0):
        mutate(rows[draw(st.integers(0, len(rows) - 1))], draw(st.sampled_from(COST_FIELDS)),
               draw(st.one_of(st.just(DELETE), hostile)))
    if rows and draw(st.integers(0, 4)) == 0:
        rows.append(draw(st.sampled_from(rows)))  # the same row twice
    return {"data": rows, "has_more": False}


PRICES = price_table()


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("fuzz")
    config = load_config(write_config(folder, [{"name": "acme"}]))
    with storage.writer(config):
        pass  # the schema
    return config, []  # the config, and the rows its window should hold


def stored_cost(config) -> list[tuple]:
    with storage.writer(config) as conn:
        return conn.execute("SELECT row_key, amount_usd FROM cost_buckets ORDER BY 1").fetchall()


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(page=cost_pages())
def test_any_page_gives_stored_rows_or_one_clear_error(fuzz_store, page: Any) -> None:
    """Whatever a page holds (through JSON, as the API's text would be): its rows are all
    stored, or one SpendwatchError says why and nothing of it is stored (the window keeps
    what the last stored page put there)."""
    config, stored = fuzz_store
    page = json.loads(json.dumps(page))  # NaN/Infinity floats survive, as json.loads reads them
    where = "organization 'acme': analytics cost 2026-11-20..2026-11-21 page 1"
    now = WINDOW_START + timedelta(days=2)
    try:
        check_page_size(page, 6, "rows", where, fanout=True)
        rows = analytics_cost_rows(page, "acme", where)
    except SpendwatchError as error:  # refused before anything is written
        assert "\n" not in str(error) and str(error).startswith(where)
        event("refused: " + str(error).split(": ")[-1][:40])
        return
    try:
        write_window(config, "acme", WINDOW, rows, None, now, now, PRICES)
    except SpendwatchError as error:
        assert "\n" not in str(error) and str(error).startswith("organization 'acme'")
        event("refused at write: " + str(error).split(": ")[-1][:40])
    else:
        stored[:] = sorted((r.row_key, r.amount_usd) for r in rows)
        assert all(isinstance(a, Decimal) and a >= 0 for _, a in stored)
        event(f"stored {min(len(rows), 2)}+ rows")
    assert stored_cost(config) == stored


def test_a_names_listing_that_repeats_itself_only_costs_the_names(isolated: Path,
                                                                  simulator: Simulator) -> None:
    path = one_day_config(isolated, simulator)
    simulator.fault(path="/v1/organizations/workspaces", kind="repeat_cursor", count=ALWAYS)
    done, seconds = spendwatch(path, *DAY_ARGS)
    assert done.returncode == 0, done.stderr
    assert seconds < 120
    assert "names not refreshed" in done.stderr and "last_id it sent before" in done.stderr
    assert count(db_path(load_config(path)), "usage_hourly") > 0


def test_paging_without_end_is_refused_after_max_pages() -> None:
    """A backfill has no whole-run deadline: an API that hands out a new cursor with every
    page is refused at MAX_PAGES pages, whatever the cursors."""
    from collectors.clients import MAX_PAGES, check_cursor
    from spendwatch.errors import MalformedResponse
    seen: set[str] = set()
    for page in range(MAX_PAGES):
        check_cursor(f"c{page}", seen, "usage")
    with pytest.raises(MalformedResponse, match=f"still paging after {MAX_PAGES} pages"):
        check_cursor("one more", seen, "usage")
