"""The long-running worker and interrupting a backfill, as a user would run them."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from collectors.scheduler import COLLECT_JOB, schedule
from spendwatch.cli.worker import worker_round
from conftest import REPO, SIM_NOW, Simulator, env_with_key, wait_for, write_config
from spendwatch.config import load_config
from spendwatch.timeutil import floor_day
from warehouse import db_path, query, totals, truth_totals

UTC = timezone.utc


UNUSED_WEBHOOK = "http://127.0.0.1:9/services/T/B/unused"


def test_the_worker_collects_on_start_and_stops_on_sigterm(isolated: Path, simulators) -> None:
    simulator: Simulator = simulators(now=None)  # the worker runs on the real clock
    alerts = ('[[alerts.channels]]\nname = "ops"\nkind = "slack"\n'
              'webhook_url_env = "SLACK_WEBHOOK"\n'
              '[[alerts.rules]]\nname = "fresh"\nkind = "data_stale"\nchannels = ["ops"]\n')
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}],
                        collection="initial_backfill_days = 2\ninterval_minutes = 60",
                        extra=alerts)
    db = db_path(load_config(path))
    worker = subprocess.Popen([sys.executable, "-m", "spendwatch", "--config", str(path), "run"],
                              cwd=REPO, env=env_with_key(SLACK_WEBHOOK=UNUSED_WEBHOOK), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: query(db, "SELECT count(*) FROM collection_runs "
                                                   "WHERE status = 'ok'") == [(1,)])
        # alerts are checked after the collection: the staleness rule was evaluated
        wait_for(lambda: query(db, "SELECT rule, last_result FROM alert_states") == [
            ("fresh", "ok")])
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "worker started" in err and "Traceback" not in err
    yesterday = floor_day(datetime.now(UTC)) - timedelta(days=1)
    assert totals(db, yesterday, yesterday + timedelta(days=1)) == truth_totals(
        simulator.truth(yesterday, yesterday + timedelta(days=1)))


@pytest.mark.file_only("another process holding a DuckDB file is what keeps the worker out")
def test_a_worker_that_cannot_open_the_warehouse_tries_again_soon_not_an_interval_later(
        isolated: Path, simulators) -> None:
    simulator: Simulator = simulators(now=None)
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}],
                        collection="initial_backfill_days = 1\ninterval_minutes = 60")
    # Each step of a round waits this long for the lock before giving up (the tests' 20 s).
    path.write_text(path.read_text().replace("lock_timeout_seconds = 20",
                                             "lock_timeout_seconds = 2"))
    db = db_path(load_config(path))
    db.parent.mkdir(parents=True, exist_ok=True)
    holder = duckdb.connect(str(db))  # another process's writer: the file is locked to others
    log = open(isolated / "worker.log", "w+")
    worker = subprocess.Popen([sys.executable, "-m", "spendwatch", "--config", str(path), "run"],
                              cwd=REPO, env=env_with_key(), stdout=log, stderr=subprocess.STDOUT,
                              text=True)
    try:
        wait_for(lambda: "trying again in 15 s" in (isolated / "worker.log").read_text())
        assert "collection run failed" in (isolated / "worker.log").read_text()
        holder.close()  # the other process is gone: the next try, seconds later, collects
        wait_for(lambda: query(db, "SELECT count(*) FROM collection_runs "
                                   "WHERE status = 'ok'") == [(1,)], seconds=90)
    finally:
        holder.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        log.close()
    text = (isolated / "worker.log").read_text()
    assert worker.returncode == 0, text
    assert "Traceback" not in text
    yesterday = floor_day(datetime.now(UTC)) - timedelta(days=1)
    assert totals(db, yesterday, yesterday + timedelta(days=1)) == truth_totals(
        simulator.truth(yesterday, yesterday + timedelta(days=1)))


def test_sigterm_stops_a_running_backfill_at_the_next_window(isolated: Path,
                                                             simulator: Simulator) -> None:
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}],
                        collection="initial_backfill_days = 60\ninterval_minutes = 60")
    db = db_path(load_config(path))
    simulator.fault(path="/v1/organizations/analytics/usage", count=10000, kind="delay",
                    seconds=0.2)
    worker = subprocess.Popen([sys.executable, "-m", "spendwatch", "--config", str(path), "run"],
                              cwd=REPO, env=env_with_key(SLACK_WEBHOOK=UNUSED_WEBHOOK), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: query(db, "SELECT count(*) FROM sync_state") == [(1,)])
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "did not end within" not in err  # the round ended in the grace, its run recorded
    ((status, windows, error),) = query(db, "SELECT status, windows, error FROM collection_runs")
    assert status == "stopped" and 0 < windows < 60, (status, windows)
    assert "the next run resumes" in error
    ((low, high),) = query(db, "SELECT covered_from, covered_until FROM sync_state")
    assert totals(db, low, high)["tokens"] == truth_totals(simulator.truth(low, high))["tokens"]


def test_the_collection_job_never_overlaps_and_missed_runs_coalesce(isolated: Path) -> None:
    path = write_config(isolated, [{"name": "acme"}], collection="interval_minutes = 7")
    scheduler = BackgroundScheduler(timezone="UTC")
    schedule(scheduler, load_config(path), worker_round, start_now=False)
    job = scheduler.get_job(COLLECT_JOB)
    assert (job.max_instances, job.coalesce) == (1, True)
    assert job.trigger.interval == timedelta(minutes=7)


def test_ctrl_c_keeps_whole_windows_and_the_same_command_resumes(isolated: Path,
                                                                  simulator: Simulator) -> None:
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}])
    db = db_path(load_config(path))
    # Slow usage pages: the first batch of windows written (after collectors.sync's
    # BATCH_SECONDS of fetching) holds usage days only, fewer than the eleven asked for.
    simulator.fault(path="/v1/organizations/analytics/usage", count=10000, kind="delay",
                    seconds=0.6)
    command = [sys.executable, "-m", "spendwatch", "--config", str(path), "collect",
               "--since", "2026-11-14", "--until", "2026-11-24"]  # the simulator's today
    # As from a terminal: Ctrl-C's signal not ignored, whatever the test runner inherited (a
    # shell runs a background job with SIGINT ignored, and the collect keeps that choice).
    first = subprocess.Popen(command, cwd=REPO, env=env_with_key(SLACK_WEBHOOK=UNUSED_WEBHOOK), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(lambda: query(db, "SELECT count(*) FROM sync_state") == [(1,)])
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130
    assert "interrupted: every window stored so far is kept" in err
    ((low, high),) = query(db, "SELECT covered_from, covered_until FROM sync_state")
    assert low == datetime(2026, 11, 14, tzinfo=UTC) and high < SIM_NOW
    assert query(db, "SELECT count(*) FROM usage_hourly WHERE bucket_start >= ?", high) == [(0,)]
    assert totals(db, low, high)["tokens"] == truth_totals(simulator.truth(low, high))["tokens"]

    simulator.control("DELETE", "/_sim/faults")
    second = subprocess.run(command, cwd=REPO, env=env_with_key(SLACK_WEBHOOK=UNUSED_WEBHOOK), capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert totals(db, low, SIM_NOW) == truth_totals(simulator.truth(low, SIM_NOW))
