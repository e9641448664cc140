"""One DuckLake, many processes: workers split by organization, dashboards beside them, the
catalog's password kept secret, data on S3 (``--backend ducklake`` only); and, on both
backends, a warehouse copied into another and back, and the facts exported as Parquet."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

import lake
from collectors.sync import CollectOptions, collect
from conftest import (ADMIN_KEY, REPO, SIM_NOW, SIM_NOW_TEXT, Simulator, env_with_key, run_cli,
                      usd, wait_for, write_config)
from spendwatch.config import load_config
from spendwatch.timeutil import floor_day
from test_browser import free_port, launch, wait_healthy
from warehouse import db_path, query, totals, truth_totals

UTC = timezone.utc


def spendwatch(config: Path, *args: str, now: str | None = SIM_NOW_TEXT,
               **env: str) -> subprocess.Popen:
    """A spendwatch process (``now``: its clock, $SPENDWATCH_NOW; None: the real one)."""
    flags = [a for a in args if a.startswith("-v")]
    rest = [a for a in args if not a.startswith("-v")]
    clock = {"SPENDWATCH_NOW": now} if now else {}
    return subprocess.Popen([sys.executable, "-m", "spendwatch", "--config", str(config),
                             *flags, *rest],
                            cwd=REPO, env=env_with_key(**clock, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err


def spend_in_the_period(url: str) -> str:
    """The Spend page's "Spend in the period", its page opened by its URL in Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(url, wait_until="networkidle")
            page.wait_for_selector('[data-testid="stMetricValue"]', timeout=60_000)
            errors = page.locator('[data-testid="stException"], [data-testid="stError"]')
            assert errors.count() == 0, errors.first.inner_text()
            return page.locator('[data-testid="stMetricValue"]').first.inner_text()
        finally:
            browser.close()


@pytest.mark.lake_only
def test_two_workers_for_two_organizations_and_two_dashboards_share_one_lake(
        isolated: Path, simulators, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    acme: Simulator = simulators(seed=7, now=None)  # the workers run on the real clock
    globex: Simulator = simulators(seed=11, now=None)
    path = write_config(isolated, [{"name": "acme", "base_url": acme.url},
                                   {"name": "globex", "base_url": globex.url}],
                        collection="initial_backfill_days = 2\ninterval_minutes = 60")
    config = load_config(path)
    db = db_path(config)
    processes: list[subprocess.Popen] = []
    try:
        urls = []
        for _ in range(2):  # up before anything is stored
            port = free_port()
            urls.append(f"http://127.0.0.1:{port}")
            processes.append(spendwatch(path, "dashboard", "--port", str(port), now=None))
        workers = [spendwatch(path, "run", "--org", "acme", now=None),
                   spendwatch(path, "run", "--org", "globex", now=None)]
        processes += workers
        for url, process in zip(urls, processes):
            wait_healthy(url, process)
        try:
            wait_for(lambda: query(db, "SELECT count(DISTINCT organization) FROM "
                                       "collection_runs WHERE status = 'ok'") == [(2,)],
                     seconds=600)
        except AssertionError:
            raise AssertionError("the workers did not both collect: " + " | ".join(
                stop(w)[-1500:] for w in workers)) from None
        errors = [stop(w) for w in workers]
        for worker, err in zip(workers, errors):
            assert worker.returncode == 0, err
            assert "Traceback" not in err
        runs = query(db, "SELECT organization, status FROM collection_runs ORDER BY organization")
        assert runs == [("acme", "ok"), ("globex", "ok")], runs  # each its own organization
        yesterday = floor_day(datetime.now(UTC)) - timedelta(days=1)
        for name, sim in (("acme", acme), ("globex", globex)):
            assert totals(db, yesterday, yesterday + timedelta(days=1), name) == truth_totals(
                sim.truth(yesterday, yesterday + timedelta(days=1))), name
        day = (datetime.now(UTC).astimezone(config.tz) - timedelta(days=1)).date()
        cli = run_cli(["--config", str(path), "spend", "--since", str(day), "--until",
                       str(day), "--json"])
        assert cli.returncode == 0, cli.stderr
        expected = sum((Decimal(r["cost_usd"]) for r in json.loads(cli.stdout)), Decimal(0))
        assert expected > 0
        for url in urls:  # both read the lake both workers wrote
            assert spend_in_the_period(f"{url}/Spend?period={day}&period={day}") == usd(expected)
    finally:
        for process in processes:
            stop(process)


def _open_for_writing(config_path: str, barrier, results) -> None:  # a process of the next test
    from spendwatch import lake as spendwatch_lake
    config = load_config(Path(config_path))
    barrier.wait()  # every process ATTACHes the empty catalog at the same moment
    try:
        with spendwatch_lake.connection(config, read_only=False) as conn:
            conn.execute("SELECT 1").fetchall()
        results.put("opened")
    except Exception as exc:  # the test shows what a process met
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.lake_only
def test_processes_opening_one_new_lake_at_once_all_open_it(isolated: Path) -> None:
    # Workers started together on an empty catalog each create the lake's metadata schema and
    # tables; PostgreSQL refuses all but the first (a duplicate key in pg_namespace even for
    # IF NOT EXISTS). Every one of them must open the lake, not fail its first collection.
    import multiprocessing

    path = write_config(isolated, [{"name": "acme", "base_url": "http://127.0.0.1:9"}])
    context = multiprocessing.get_context("spawn")  # a fresh DuckDB in each process
    barrier, results = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_open_for_writing, args=(str(path), barrier, results))
                 for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert outcomes == ["opened"] * 4, outcomes


def test_a_90_day_warehouse_goes_into_a_file_and_back_with_equal_totals(
        isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}])
    config = load_config(path)
    since = SIM_NOW - timedelta(days=90)
    (result,) = collect(config, CollectOptions(since=since), now=SIM_NOW)
    assert result.ok, result.error
    truth = truth_totals(simulator.truth(since, SIM_NOW))
    assert totals(db_path(config), since, SIM_NOW) == truth

    out = run_cli(["--config", str(path), "storage", "migrate", "--to", "copy.duckdb"])
    assert out.returncode == 0, out.stderr
    assert "verified" in out.stdout
    (isolated / "as-a-file").mkdir()
    file_config = write_config(isolated / "as-a-file", [{"name": "acme",
                                                         "base_url": simulator.url}])
    text = file_config.read_text()
    file_config.write_text(text.replace(text[text.index("database"):text.index(
        "lock_timeout")], f'database = "{isolated / "copy.duckdb"}"\n'))
    conn = duckdb.connect(str(isolated / "copy.duckdb"), read_only=True)
    try:
        (cost,) = conn.execute("SELECT sum(amount_usd) FROM cost_buckets WHERE bucket_start >= ?"
                               " AND bucket_start < ?", [since, SIM_NOW]).fetchone()
    finally:
        conn.close()
    assert Decimal(cost) == truth["cost_usd"]

    back = isolated / "back"  # into a second, new lake
    back.mkdir()
    back_config = write_config(back, [{"name": "acme", "base_url": simulator.url}])
    out = run_cli(["--config", str(file_config), "storage", "migrate", "--to",
                   str(back_config)])
    assert out.returncode == 0, out.stderr
    assert totals(db_path(load_config(back_config)), since, SIM_NOW) == truth
    spend = [run_cli(["--config", str(p), "spend", "--since", "2026-08-26", "--until",
                      "2026-11-24", "--by", "date,model", "--json"]) for p in
             (path, file_config, back_config)]
    assert all(r.returncode == 0 for r in spend), [r.stderr for r in spend]
    assert spend[0].stdout == spend[1].stdout == spend[2].stdout  # every day, every model

    again = run_cli(["--config", str(file_config), "storage", "migrate", "--to",
                     str(back_config)])
    assert again.returncode == 2
    assert again.stderr.splitlines()[-1].startswith("error: ") and "already holds data" in \
        again.stderr.splitlines()[-1]


def test_the_spend_facts_export_to_parquet_by_organization_and_month(
        isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}])
    since = datetime(2026, 10, 30, 5, tzinfo=UTC)  # Oct 30 and 31 in Chicago, then November
    (result,) = collect(load_config(path), CollectOptions(since=since), now=SIM_NOW)
    assert result.ok, result.error
    out = run_cli(["--config", str(path), "export", "parquet", "--out", "exported"])
    assert out.returncode == 0, out.stderr
    parquet = duckdb.connect()
    (count,) = parquet.execute(f"SELECT count(*) FROM read_parquet('{isolated}/exported/"
                               "facts/**/*.parquet')").fetchone()
    assert out.stdout.startswith(f"wrote {count:,} facts in ")
    months = sorted(p.name for p in (isolated / "exported" / "facts" /
                                     "organization=acme").iterdir())
    assert months == ["month=2026-10", "month=2026-11"]
    (cost,) = parquet.execute(
        f"SELECT sum(cost_usd) FROM read_parquet('{isolated}/exported/facts/**/*.parquet', "
        "hive_partitioning = true) WHERE cut = 'key' AND month = '2026-10'").fetchone()
    cli = run_cli(["--config", str(path), "spend", "--since", "2026-10-01", "--until",
                   "2026-10-31", "--json"])  # October as stored (a window is a UTC day)
    assert Decimal(cost) == sum(  # to the last digit stored
        (Decimal(r["cost_usd"]) for r in json.loads(cli.stdout)), Decimal(0))


@pytest.mark.lake_only
def test_the_catalog_password_stays_secret_and_a_wrong_one_is_one_line(
        isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}])
    cluster = lake.active()
    assert cluster is not None
    wrong = isolated / "wrong-password"
    wrong.write_text("not-the-password-at-all")
    wrong.chmod(0o600)
    path.write_text(path.read_text().replace(str(cluster.password_file), str(wrong)))
    out = run_cli(["--config", str(path), "collect", "--since", "2026-11-23"])
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "refused the connection" in out.stderr
    assert "password authentication failed" in out.stderr
    assert "not-the-password-at-all" not in out.stderr + out.stdout

    path.write_text(path.read_text().replace(str(wrong), str(cluster.password_file)))
    worker = spendwatch(path, "-vv", "collect", "--since", "2026-11-23")
    out_text, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    assert lake.PASSWORD not in out_text + err
    dashboard_env = subprocess.run(
        [sys.executable, "-c", "from spendwatch.cli.dashboard import dashboard_env; "
         "from spendwatch.config import load_config; import sys; "
         f"print(dashboard_env(load_config({str(path)!r})))"],
        cwd=REPO, env=env_with_key(SPENDWATCH_DATABASE_PASSWORD=lake.PASSWORD),
        capture_output=True, text=True, timeout=60)
    assert dashboard_env.returncode == 0, dashboard_env.stderr
    assert lake.PASSWORD not in dashboard_env.stdout


@pytest.mark.lake_only
def test_an_unreachable_catalog_is_one_line_and_nothing_is_lost(
        isolated: Path, simulator: Simulator) -> None:
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}])
    cluster = lake.active()
    assert cluster is not None
    path.write_text(path.read_text().replace(f"port={cluster.port}", "port=9"))
    out = run_cli(["--config", str(path), "spend"])
    assert out.returncode != 0
    assert out.stderr.count("\n") == 1 and "cannot be reached" in out.stderr, out.stderr


@pytest.mark.lake_only
def test_the_data_on_object_storage(isolated: Path, simulator: Simulator,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The data path on S3 (moto's server standing in), its keys from the environment."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        key_id, secret = "AKIASPENDWATCHTEST01", "s3-secret-key-of-the-test-0123456789"
        monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id=key_id, aws_secret_access_key=secret)
        s3.create_bucket(Bucket="spend")
        path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}])
        path.write_text(path.read_text().replace(
            'data_path = "lake/"', f'data_path = "s3://spend/warehouse/"\n'
                                   f's3_endpoint = "http://127.0.0.1:{port}"'))
        since = datetime(2026, 11, 22, 6, tzinfo=UTC)
        (result,) = collect(load_config(path), CollectOptions(since=since), now=SIM_NOW)
        assert result.ok, result.error
        stored = s3.list_objects_v2(Bucket="spend", Prefix="warehouse/")
        assert stored.get("KeyCount", 0) > 0
        assert all(o["Key"].endswith(".parquet") for o in stored["Contents"])
        cli = run_cli(["--config", str(path), "spend", "--since", "2026-11-22", "--until",
                       "2026-11-23", "--json"])
        assert cli.returncode == 0, cli.stderr
        day_end = datetime(2026, 11, 24, 6, tzinfo=UTC)
        truth = truth_totals(simulator.truth(since, day_end))
        cents = Decimal("0.01")
        assert sum((Decimal(r["cost_usd"]) for r in json.loads(cli.stdout)),
                   Decimal(0)).quantize(cents) == truth["cost_usd"].quantize(cents)
        assert not (isolated / "lake").exists()  # nothing on local disk
    finally:
        server.stop()


@pytest.mark.lake_only
def test_the_housekeeping_keeps_every_figure(isolated: Path, simulator: Simulator,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's hourly housekeeping (merge files, expire snapshots) changes no figure."""
    from spendwatch import storage

    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}])
    config = load_config(path)
    since = datetime(2026, 11, 21, 6, tzinfo=UTC)
    for now in (SIM_NOW - timedelta(hours=6), SIM_NOW):  # a re-read: rows deleted, files added
        (result,) = collect(config, CollectOptions(since=since), now=now)
        assert result.ok, result.error
    spend = ["--config", str(path), "spend", "--since", "2026-11-21", "--by", "date,model",
             "--json"]
    before = run_cli(spend)
    assert storage.maintain(config) is True
    assert run_cli(spend).stdout == before.stdout
    assert totals(db_path(config), since, SIM_NOW) == truth_totals(simulator.truth(since, SIM_NOW))
