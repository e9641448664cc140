"""Settings out of range, unsafe files and user mistakes: one line naming the problem and the
fix, exit 2, never a traceback, nothing stored; and what spendwatch writes is owner-only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import lake

from conftest import ADMIN_KEY, REPO, Simulator, write_config
from warehouse import exists, open_warehouse

SLACK = '''
[[alerts.channels]]
name = "ops"
kind = "slack"
webhook_url_env = "SLACK_WEBHOOK"
'''
RULE = '''
[[alerts.rules]]
name = "daily"
kind = "daily_spend"
channels = ["ops"]
threshold_usd = "100"
scope = { organization = "acme" }
'''
EMAIL = '''
[[alerts.channels]]
name = "mail"
kind = "email"
host = "127.0.0.1"
from = "a@example.com"
to = ["b@example.com"]
'''


def spendwatch(*args: str, cwd: Path, umask: int | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SPENDWATCH_"))}
    base.update({"ANTHROPIC_ADMIN_KEY": ADMIN_KEY, "SLACK_WEBHOOK": "http://127.0.0.1:9/x"})
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "spendwatch", *args], cwd=cwd, env=base,
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def private_config(folder: Path, text: str = "", org: dict | None = None,
                   collection: str = "") -> Path:
    """A config (conftest's) with mode 0600, ``text`` appended."""
    path = write_config(folder, [org or {"name": "acme", "base_url": "http://127.0.0.1:9"}],
                        extra=text, collection=collection)
    path.chmod(0o600)
    return path


def one_line_exit_2(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


# --- settings -------------------------------------------------------------------------------

@pytest.mark.parametrize("collection, extra, expected", [
    ("timeout_seconds = nan", "", ("collection.timeout_seconds", "finite")),
    ("timeout_seconds = inf", "", ("collection.timeout_seconds", "finite")),
    ("max_retry_after_seconds = inf", "", ("collection.max_retry_after_seconds", "finite")),
    ("job_deadline_seconds = nan", "", ("collection.job_deadline_seconds", "finite")),
    ("timeout_seconds = -5", "", ("collection.timeout_seconds", "greater than 0")),
    ("initial_backfill_days = 10000000", "", ("collection.initial_backfill_days",
                                              "at most 3650")),
    ("usage_lookback_hours = 0", "", ("collection.usage_lookback_hours", "greater than 0")),
    ("interval_minutes = 5\njob_deadline_seconds = 300", "",
     ("collection.job_deadline_seconds must be below", "300 s")),
], ids=["nan", "inf", "inf-retry-after", "nan-deadline", "negative", "backfill", "zero-lookback",
        "deadline-over-interval"])
def test_a_collection_setting_out_of_range_is_one_line(isolated: Path, collection: str,
                                                       extra: str, expected: tuple) -> None:
    private_config(isolated, extra, collection=collection)
    one_line_exit_2(spendwatch("spend", cwd=isolated), *expected)


def test_without_a_deadline_a_run_gets_most_of_a_short_interval(isolated: Path) -> None:
    from spendwatch.config import load_config

    config = load_config(private_config(isolated, collection="interval_minutes = 1"))
    assert config.collection.job_deadline_seconds == 48


@pytest.mark.parametrize("text, expected", [
    ('[storage]\ndatabase = ""\n', "storage.database is empty"),
    ('[storage]\nlock_timeout_seconds = inf\n', "storage.lock_timeout_seconds must be a finite"),
], ids=["empty-database", "inf-lock"])
def test_a_storage_setting_out_of_range_is_one_line(isolated: Path, text: str,
                                                    expected: str) -> None:
    path = isolated / "config.toml"
    path.write_text(text + '[[organizations]]\nname = "acme"\n')
    path.chmod(0o600)
    one_line_exit_2(spendwatch("spend", cwd=isolated), expected)


@pytest.mark.parametrize("org, expected", [
    ({"name": "", "base_url": "https://api.anthropic.com"}, "organizations[0].name is empty"),
    ({"name": "  ", "base_url": "https://api.anthropic.com"}, "organizations[0].name is empty"),
    ({"name": "acme", "base_url": "http://api.example.com"},
     "organizations[0].base_url must use https://"),
    ({"name": "acme", "base_url": "http://10.0.0.5:8080"},
     "organizations[0].base_url must use https://"),
    ({"name": "acme", "base_url": "ftp://api.example.com"},
     "organizations[0].base_url must be a URL"),
], ids=["empty-name", "blank-name", "plain-http", "plain-http-lan", "ftp"])
def test_an_organization_mistake_is_one_line(isolated: Path, org: dict, expected: str) -> None:
    private_config(isolated, org=org)
    one_line_exit_2(spendwatch("spend", cwd=isolated), expected)


def test_plain_http_is_for_this_machine_only(isolated: Path) -> None:
    from spendwatch.config import load_config

    for base_url in ("http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9",
                     "https://api.example.com/"):
        config = load_config(private_config(isolated, org={"name": "acme",
                                                           "base_url": base_url}))
        assert config.organizations[0].base_url == base_url.rstrip("/")


def test_the_models_api_must_be_https_too(isolated: Path) -> None:
    private_config(isolated, '[models]\nbase_url = "http://models.example.com"\n')
    one_line_exit_2(spendwatch("spend", cwd=isolated), "models.base_url must use https://")


@pytest.mark.parametrize("text, expected", [
    (SLACK + RULE.replace('kind = "daily_spend"', 'kind = "cache_hit_ratio"')
     .replace('threshold_usd = "100"', "floor = 0.5\nwindow_hours = -24"),
     "alerts.rules[0].window_hours must be at least 1"),
    (SLACK + RULE.replace('kind = "daily_spend"', 'kind = "cost_drift"')
     .replace('threshold_usd = "100"', 'threshold_percent = "5"\ndays = -1'),
     "alerts.rules[0].days must be at least 1"),
    (SLACK + RULE.replace('kind = "daily_spend"', 'kind = "spend_spike"')
     .replace('threshold_usd = "100"', "weeks = 0"), "alerts.rules[0].weeks must be at least 1"),
    (SLACK + RULE.replace('kind = "daily_spend"', 'kind = "data_stale"')
     .replace('threshold_usd = "100"', 'max_age = "0s"'), "alerts.rules[0].max_age must be more"),
    (SLACK + RULE.replace('kind = "daily_spend"', 'kind = "data_stale"')
     .replace('threshold_usd = "100"', "max_failures = 0"),
     "alerts.rules[0].max_failures must be at least 1"),
    (SLACK + RULE + 'repeat_interval = "0s"\n', "alerts.rules[0].repeat_interval must be more"),
    (SLACK + RULE + 'repeat_interval = "99999999999999d"\n',
     "alerts.rules[0].repeat_interval must be at most 3650 days"),
    (EMAIL + "timeout_seconds = -5\n", "alerts.channels[0].timeout_seconds must be more than 0"),
    (EMAIL + "timeout_seconds = nan\n", "alerts.channels[0].timeout_seconds must be a finite"),
    (EMAIL + "port = 70000\n", "alerts.channels[0].port must be at least 1 and at most 65535"),
    (SLACK + "timeout_seconds = inf\n", "alerts.channels[0].timeout_seconds must be a finite"),
    (SLACK + "min_interval_seconds = -1\n", "alerts.channels[0].min_interval_seconds must be"),
    (SLACK + RULE.replace('kind = "daily_spend"', 'kind = "cache_hit_ratio"')
     .replace('threshold_usd = "100"', "floor = nan"), "alerts.rules[0].floor must be between"),
    ("[savings]\ncache_hit_target = nan\n", "savings.cache_hit_target must be between 0 and 1"),
], ids=["window-hours", "days", "weeks", "max-age", "max-failures", "repeat-0", "repeat-huge",
        "email-timeout", "email-nan", "email-port", "slack-inf", "slack-interval", "floor-nan",
        "savings-nan"])
def test_an_alert_setting_out_of_range_is_one_line(isolated: Path, text: str,
                                                   expected: str) -> None:
    private_config(isolated, text)
    one_line_exit_2(spendwatch("alerts", "check", cwd=isolated), expected)


# --- files ----------------------------------------------------------------------------------

def test_a_secret_file_open_to_others_is_refused_with_chmod_600(isolated: Path) -> None:
    key = isolated / "admin.key"
    key.write_text(ADMIN_KEY)
    key.chmod(0o644)
    private_config(isolated, org={"name": "acme", "base_url": "http://127.0.0.1:9",
                                  "admin_key_file": str(key)}, collection="max_attempts = 1")
    result = spendwatch("collect", cwd=isolated)
    one_line_exit_2(result, "the admin key file", "mode 0644")
    assert result.stderr.rstrip().endswith(f"chmod 600 {key}")
    assert not (isolated / "data").exists(), "nothing is created before the key is accepted"
    assert not exists(isolated / "data" / "spendwatch.duckdb")
    key.chmod(0o600)  # then it is read (the API on port 9 is down: a collection error)
    result = spendwatch("collect", cwd=isolated)
    assert result.returncode == 1 and "chmod" not in result.stderr, result.stderr


@pytest.mark.parametrize("mode", [0o666, 0o640, 0o604])
def test_a_webhook_file_open_to_group_or_others_is_refused(isolated: Path, mode: int) -> None:
    hook = isolated / "webhook"
    hook.write_text("https://hooks.slack.com/services/T/B/secret")
    hook.chmod(mode)
    private_config(isolated, SLACK.replace('webhook_url_env = "SLACK_WEBHOOK"',
                                           f'webhook_url_file = "{hook}"'))
    result = spendwatch("alerts", "test", cwd=isolated)
    one_line_exit_2(result, "webhook_url_file", f"mode {mode:04o}")
    assert result.stderr.rstrip().endswith(f"chmod 600 {hook}")


def test_the_config_file_open_to_others_is_refused(isolated: Path) -> None:
    path = private_config(isolated)
    for mode in (0o644, 0o640, 0o666):
        path.chmod(mode)
        result = spendwatch("spend", cwd=isolated)
        one_line_exit_2(result, "the config file", f"mode {mode:04o}")
        assert result.stderr.rstrip().endswith(f"chmod 600 {path.name}")
    path.chmod(0o600)
    assert "chmod" not in spendwatch("spend", cwd=isolated).stderr


def test_what_spendwatch_creates_is_owner_only_whatever_the_umask(
        isolated: Path, simulator: Simulator) -> None:
    private_config(isolated, org={"name": "acme", "base_url": simulator.url},
                   collection="initial_backfill_days = 1")
    result = spendwatch("collect", "--since", "2026-11-22", "--until", "2026-11-23",
                        cwd=isolated, umask=0)
    assert result.returncode == 0, result.stderr
    if lake.active():  # the data files' folder: nobody else can enter it
        assert stat.S_IMODE((isolated / "lake").stat().st_mode) == 0o700
        assert any((isolated / "lake").rglob("*.parquet"))
        return
    data = isolated / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_report_files_and_their_folder_are_owner_only(isolated: Path) -> None:
    from reports.runs import write_private

    previous = os.umask(0)
    try:
        path = write_private([],
                             isolated / "reports" / "deep" / "week.csv")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700


# --- the database path ----------------------------------------------------------------------

@pytest.mark.parametrize("database, expected", [
    ("/proc/spendwatch.duckdb", "is under /proc"),
    ("/sys/spendwatch.duckdb", "is under /sys"),
    ("/dev/spendwatch.duckdb", "is under /dev"),
    ("folder", "is a folder"),
    ("afile/spendwatch.duckdb", "is a file, not a folder"),
    ("notduck.duckdb", "is not a DuckDB database"),
], ids=["proc", "sys", "dev", "folder", "under-a-file", "not-duckdb"])
def test_a_database_path_that_cannot_be_a_database_is_one_line(
        isolated: Path, database: str, expected: str) -> None:
    (isolated / "folder").mkdir()
    (isolated / "afile").write_text("x")
    (isolated / "notduck.duckdb").write_text("name,cost\nacme,1\n")
    path = isolated / "config.toml"
    path.write_text(f'[storage]\ndatabase = "{database}"\n[[organizations]]\nname = "acme"\n'
                    'base_url = "http://127.0.0.1:9"\n')
    path.chmod(0o600)
    for command in (("spend",), ("collect",)) if database == "notduck.duckdb" else (("spend",),):
        one_line_exit_2(spendwatch(*command, cwd=isolated), expected)
    assert (isolated / "notduck.duckdb").read_text() == "name,cost\nacme,1\n"


# --- user mistakes --------------------------------------------------------------------------

@pytest.fixture
def seeded(isolated: Path) -> Path:
    """A config with a rule and an (empty, migrated) database."""
    from spendwatch import storage
    from spendwatch.config import load_config

    private_config(isolated, SLACK + RULE)
    with storage.writer(load_config(isolated / "config.toml")):
        pass
    return isolated


@pytest.mark.parametrize("command", [
    ("spend", "--since", "2026-11-05", "--until", "2026-11-01"),
    ("reconcile", "--since", "2026-11-05", "--until", "2026-11-01", "--json"),
    ("savings", "--since", "2026-11-05", "--until", "2026-11-01"),
    ("collect", "--since", "2026-11-05", "--until", "2026-11-01"),
], ids=["spend", "reconcile", "savings", "collect"])
def test_reversed_dates_are_a_mistake_not_zero_dollars(seeded: Path,
                                                       command: tuple[str, ...]) -> None:
    result = spendwatch(*command, cwd=seeded)
    one_line_exit_2(result, "--since: 2026-11-05 is after --until 2026-11-01")
    assert result.stdout == ""


@pytest.mark.parametrize("command", [
    ("spend", "--org", "nosuch"), ("spend", "--org", "acme", "--org", "nosuch", "--json"),
    ("collect", "--org", "nosuch"), ("report", "weekly", "--org", "nosuch"),
    ("report", "send", "--org", "nosuch"),
], ids=["spend", "spend-two", "collect", "report-weekly", "report-send"])
def test_an_unknown_organization_is_a_mistake_not_zero_dollars(
        seeded: Path, command: tuple[str, ...]) -> None:
    result = spendwatch(*command, cwd=seeded)
    one_line_exit_2(result, "no organization named 'nosuch'")
    assert "$0.00" not in result.stdout


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
def test_a_day_spendwatch_cannot_hold_is_one_line(seeded: Path, day: str) -> None:
    one_line_exit_2(spendwatch("spend", "--since", day, "--until", day, cwd=seeded),
                    "is not a day spendwatch can hold")


def silences(folder: Path) -> list[tuple]:
    with open_warehouse(folder / "data" / "spendwatch.duckdb") as conn:
        return conn.execute("SELECT rule, scope_key FROM alert_silences").fetchall()


@pytest.mark.parametrize("args, expected", [
    (("--for", "9999999d"), "--for: 9999999d is not between 1s and 90d"),
    (("--for", "91d"), "--for: 91d is not between 1s and 90d"),
    (("--for", "0s"), "--for: 0s is not between 1s and 90d"),
    (("--for", "soon"), "'soon' is not a duration"),
    (("--for", "4h", "--scope", "bogus=1"), "--scope: rule 'daily' has no scope 'bogus=1'"),
    (("--for", "4h", "--scope", "organization=nosuch"), "has no scope 'organization=nosuch'"),
], ids=["huge", "91d", "zero", "words", "bogus-scope", "other-org"])
def test_a_silence_mistake_is_one_line_and_stores_nothing(seeded: Path, args: tuple,
                                                         expected: str) -> None:
    one_line_exit_2(spendwatch("alerts", "silence", "daily", *args, cwd=seeded), expected)
    assert silences(seeded) == []


def test_a_silence_of_a_scope_the_rule_has_is_stored(seeded: Path) -> None:
    result = spendwatch("alerts", "silence", "daily", "--for", "90d", "--scope",
                        "organization=acme", cwd=seeded)
    assert result.returncode == 0, result.stderr
    assert silences(seeded) == [("daily", "organization=acme")]
    with open_warehouse(seeded / "data" / "spendwatch.duckdb", read_only=False) as conn:
        conn.execute("INSERT INTO alert_states VALUES ('daily', 'model=m,organization=acme', "
                     "'warning', 'ok', now(), NULL, 'ok', NULL, now(), NULL)")
    result = spendwatch("alerts", "silence", "daily", "--for", "1h", "--scope",
                        "model=m,organization=acme", cwd=seeded)
    assert result.returncode == 0, result.stderr  # a scope it was evaluated for


def test_a_silence_scope_has_the_dimensions_the_rule_evaluates_per(isolated: Path) -> None:
    rules = SLACK + '''
[[alerts.rules]]
name = "cache"
kind = "cache_hit_ratio"
channels = ["ops"]
floor = 0.5
[[alerts.rules]]
name = "stale"
kind = "data_stale"
channels = ["ops"]
'''
    private_config(isolated, rules)
    for rule, scope, ok in [("cache", "organization=acme", False),  # silences no evaluation
                            ("cache", "model=claude-opus-5-5,organization=acme", True),
                            ("cache", "organization=acme,model=claude-opus-5-5", False),
                            ("cache", "feature=search,organization=acme", False),
                            ("stale", "organization=acme", True),
                            ("stale", "organization=other", False)]:
        result = spendwatch("alerts", "silence", rule, "--for", "1h", "--scope", scope,
                            cwd=isolated)
        if ok:
            assert result.returncode == 0, (scope, result.stderr)
        else:
            one_line_exit_2(result, f"rule {rule!r} has no scope {scope!r}")
