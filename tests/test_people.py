"""People, products and the price cut: every cut collected, in agreement, and priced right.

One simulator with fast mode and US-only inference on (the models that offer them), one week
collected once into a template warehouse with every cut; each test reads a copy.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest

from collectors.sync import CollectOptions, collect
from spendwatch import facts
from spendwatch.config import load_config
from spendwatch.cuts import CUTS
from conftest import (ADMIN_KEY, SIM_NOW, SLACK, Simulator, copy_warehouse, module_env, run_cli,
                      start_simulator_process, stop_simulator, write_config)
from warehouse import open_warehouse, TOKEN_COLUMNS, query

ALL_CUTS = [c.name for c in CUTS]
SINCE = datetime(2026, 11, 17, tzinfo=timezone.utc)
#: Whole UTC days, all billed (cost is reported for every complete hour).
DAYS = (datetime(2026, 11, 18, tzinfo=timezone.utc), datetime(2026, 11, 24, tzinfo=timezone.utc))


@pytest.fixture(scope="module")
def fast_simulator() -> Iterator[Simulator]:
    sim = start_simulator_process(extra=("--fast-and-us",))
    yield sim
    stop_simulator(sim)


def _config(folder: Path, sim: Simulator, **org: object) -> Path:
    return write_config(folder, [{"name": "acme", "source": "analytics", "base_url": sim.url,
                                  "cuts": ALL_CUTS, **org}], timezone_name="UTC")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, fast_simulator: Simulator) -> Path:
    folder = tmp_path_factory.mktemp("people")
    with module_env(ANTHROPIC_ADMIN_KEY=ADMIN_KEY):
        config = load_config(_config(folder, fast_simulator))
        results = collect(config, CollectOptions(since=SINCE), now=SIM_NOW)
    assert all(r.ok for r in results), [r.error for r in results]
    return folder / "data" / "spendwatch.duckdb"


@pytest.fixture
def warehouse(template: Path, isolated: Path, fast_simulator: Simulator,
              monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    copy_warehouse(template, isolated)
    return _config(isolated, fast_simulator)


def _hourly(db: Path, sql_table: str, column: str, cut: str | None) -> dict[datetime, Decimal]:
    where = "WHERE cut = ?" if cut else ""
    args = [cut] if cut else []
    return {start: Decimal(value) for start, value in query(
        db, f"SELECT bucket_start, sum({column}) FROM {sql_table} {where} GROUP BY 1", *args)}


def test_every_additive_cut_agrees_with_the_key_cut_to_the_cent_every_hour(template: Path) -> None:
    key_cost = _hourly(template, "cost_buckets", "amount_usd", None)
    key_tokens = {c: _hourly(template, "usage_hourly", c, None) for c in TOKEN_COLUMNS}
    assert len(key_cost) > 24 * 6
    for cut in ("price", "people", "profiles", "products"):
        cost = _hourly(template, "cost_cuts", "amount_usd", cut)
        assert cost.keys() == key_cost.keys(), cut
        wrong = {h: (cost[h], key_cost[h]) for h in key_cost if cost[h] != key_cost[h]}
        assert not wrong, (cut, list(wrong.items())[:3])
        for column in TOKEN_COLUMNS:
            tokens = _hourly(template, "usage_cuts", column, cut)
            assert tokens == key_tokens[column], (cut, column)


def test_rbac_groups_overlap_as_the_api_counts_them(template: Path,
                                                    fast_simulator: Simulator) -> None:
    truth = fast_simulator.truth(*DAYS, people=True)
    groups = {g or "null": Decimal(v) for g, v in query(
        template, "SELECT rbac_group_id, sum(amount_usd) FROM cost_cuts WHERE cut = 'groups' "
        "AND bucket_start >= ? AND bucket_start < ? GROUP BY 1", *DAYS)}
    assert groups == {g: Decimal(v) for g, v in truth["by_rbac_group"].items()}
    assert sum(groups.values()) > Decimal(truth["cost_usd"]), "a user in two groups counts twice"


def test_fast_mode_and_us_only_rows_are_stored_with_their_premium(template: Path) -> None:
    rows = query(template, "SELECT model, speed, inference_geo, sum(output_tokens) FROM usage_cuts "
                 "WHERE cut = 'price' GROUP BY ALL")
    fast = {m for m, speed, _, tokens in rows if speed == "fast" and tokens}
    us = {m for m, _, geo, tokens in rows if geo == "us" and tokens}
    assert "claude-opus-5-5" in fast
    assert "claude-sonnet-5-5" not in fast, "Sonnet 5.5 has no fast mode"
    assert "claude-sonnet-4-6" in us and "claude-haiku-4-5-20251001" not in us


def test_a_second_collect_of_the_same_days_leaves_identical_rows(warehouse: Path) -> None:
    db = warehouse.parent / "data" / "spendwatch.duckdb"
    snapshot = "SELECT {cols} FROM {table} ORDER BY 1"
    tables = {"usage_cuts": "row_key, uncached_input_tokens, output_tokens, requests",
              "cost_cuts": "row_key, amount_usd, list_amount_usd",
              "cut_estimates": "row_key, est_output_usd, unpriced_reason",
              "people": "actor_key, email, name, deleted"}
    before = {t: query(db, snapshot.format(cols=c, table=t)) for t, c in tables.items()}
    results = collect(load_config(warehouse), CollectOptions(since=SINCE, refresh=True),
                      now=SIM_NOW)
    assert all(r.ok for r in results)
    after = {t: query(db, snapshot.format(cols=c, table=t)) for t, c in tables.items()}
    assert after == before
    assert len(before["people"]) >= 30 + 1 + 2 + 1


def _spend_json(config: Path, by: str) -> list[dict]:
    result = run_cli(["--config", str(config), "spend", "--since", "2026-11-18", "--until",
                      "2026-11-23", "--by", by, "--json"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_spend_by_person_and_product_equals_the_simulators_truth(
        warehouse: Path, fast_simulator: Simulator) -> None:
    truth = fast_simulator.truth(*DAYS, people=True)
    rows = _spend_json(warehouse, "person,product")
    by_person: dict[str, Decimal] = {}
    by_product: dict[str, Decimal] = {}
    for row in rows:
        person = row["person_id"] or "null"
        by_person[person] = by_person.get(person, Decimal(0)) + Decimal(row["cost_usd"])
        by_product[row["product"]] = by_product.get(row["product"], Decimal(0)) + Decimal(
            row["cost_usd"])
    assert by_person == {k: Decimal(v) for k, v in truth["by_person"].items()}
    assert by_product == {k: Decimal(v) for k, v in truth["by_product"].items()}
    labels = {row["person"] for row in rows}
    assert "ada.okafor@acme.example" in labels
    assert "(no identity)" in labels
    assert not any(label.startswith("user_01") for label in labels), "never a raw ID"


def test_people_are_named_by_email_never_by_a_raw_id() -> None:
    from spendwatch.features import person_label, pseudonym

    user = "user_01AbCdEf"
    assert person_label(user, "user_actor", "ada@acme.example", "Ada", False, None) == \
        "ada@acme.example"
    assert person_label(user, "user_actor", None, "Deleted User", True, None) == \
        "deleted user (AbCdEf)"
    assert person_label("apikey_01x", "api_actor", None, None, False, "search-rag") == \
        "API key search-rag"
    assert person_label(None, None, None, None, False, None) == "(no identity)"
    alias = pseudonym("salt", "acme", user)
    assert person_label(user, "user_actor", "ada@acme.example", None, False, None, alias) == alias
    assert person_label("apikey_01x", "api_actor", None, None, False, "search-rag", alias) == \
        "API key search-rag", "keys are not people: no pseudonym"


@pytest.mark.parametrize("rule, words", [
    ('kind = "monthly_budget"\nbudget_usd = "10"\nscope = { person = "a@b.c", workspace = "w" }',
     "cannot be combined"),
    ('kind = "cache_hit_ratio"\nfloor = 0.5\nscope = { person = "a@b.c" }', "cannot judge"),
    ('kind = "daily_spend"\nthreshold_usd = "5"\nper = "person"\nscope = { api_key = "k" }',
     "cannot be combined"),
])
def test_a_rule_scoped_by_person_that_cannot_be_judged_is_a_config_error(
        warehouse: Path, rule: str, words: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from alerts.settings import validate
    from spendwatch.errors import ConfigError

    monkeypatch.setenv("SLACK_WEBHOOK", "http://127.0.0.1:9/services/T0/B0/x")
    warehouse.write_text(warehouse.read_text() + SLACK + '\n[[alerts.rules]]\nname = "r"\n'
                         'channels = ["ops-slack"]\n' + rule + "\n")
    with pytest.raises(ConfigError) as caught:
        validate(load_config(warehouse))
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_person_and_api_key_cannot_be_combined(warehouse: Path) -> None:
    result = run_cli(["--config", str(warehouse), "spend", "--by", "person,api_key"])
    assert result.returncode == 2
    assert "cannot be combined" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3


def test_pseudonyms_replace_people_everywhere_in_spend(warehouse: Path) -> None:
    plain = _spend_json(warehouse, "person")
    text = warehouse.read_text() + "\n[privacy]\npseudonymize_people = true\n"
    warehouse.write_text(text)
    hidden = _spend_json(warehouse, "person")
    out = json.dumps(hidden)
    assert "@acme.example" not in out and "user_01" not in out
    people = [r for r in hidden if r["person"].startswith("person-")]
    assert len(people) >= 30
    assert sorted(Decimal(r["cost_usd"]) for r in hidden) == sorted(
        Decimal(r["cost_usd"]) for r in plain)
    assert _spend_json(warehouse, "person") == hidden, "stable"
    by_org = _spend_json(warehouse, "person,organization")
    assert {r["person_id"] for r in by_org} == {r["person_id"] for r in hidden}, \
        "the same pseudonym whatever the query groups by"


def _reconcile(config: Path) -> list[dict]:
    result = run_cli(["--config", str(config), "reconcile", "--since", "2026-11-18", "--until",
                      "2026-11-23", "--json"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_estimates_are_within_half_a_percent_of_billed_with_fast_and_us(warehouse: Path) -> None:
    rows = [r for r in _reconcile(warehouse) if Decimal(r["billed_usd"]) > 1]
    assert {r["model"] for r in rows} >= {"claude-opus-5-5", "claude-sonnet-4-6"}
    off = [(r["date"], r["model"], r["estimated_usd"], r["billed_usd"]) for r in rows
           if abs(Decimal(r["estimated_usd"]) - Decimal(r["billed_usd"]))
           > Decimal("0.005") * Decimal(r["billed_usd"])]
    assert not off


def test_without_the_price_cut_fast_mode_is_underestimated(
        isolated: Path, fast_simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above can fail: the same week without the price cut misses fast mode."""
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    config = write_config(isolated, [{"name": "acme", "source": "analytics",
                                      "base_url": fast_simulator.url}], timezone_name="UTC")
    collect(load_config(config), CollectOptions(since=DAYS[0], until=DAYS[0] + timedelta(hours=23)), now=SIM_NOW)
    opus = [r for r in _reconcile(config) if r["model"] == "claude-opus-5-5"
            and Decimal(r["billed_usd"]) > 1]
    assert opus and all(Decimal(r["estimated_usd"]) < Decimal("0.95") * Decimal(r["billed_usd"])
                        for r in opus)


def test_a_cut_the_key_cannot_read_is_skipped_with_one_line(
        isolated: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    sim = start_simulator_process(extra=("--no-people-dimensions",))
    try:
        config = load_config(_config(isolated, sim))
        start = SIM_NOW - timedelta(days=1)
        with caplog.at_level(logging.INFO):
            first = collect(config, CollectOptions(since=start), now=SIM_NOW)
            second = collect(config, CollectOptions(since=start), now=SIM_NOW + timedelta(hours=1))
    finally:
        stop_simulator(sim)
    assert all(r.ok for r in first + second), [r.error for r in first + second]
    skipped = [r.getMessage() for r in caplog.records if "cut is skipped" in r.getMessage()]
    assert len(skipped) == 5, skipped  # people, groups, members, profiles, products: once
    assert all("Enterprise" in line for line in skipped)
    db = isolated / "data" / "spendwatch.duckdb"
    assert query(db, "SELECT cut, readable FROM cut_access ORDER BY cut") == [
        ("groups", False), ("members", False), ("people", False), ("price", True),
        ("products", False), ("profiles", False)]
    assert query(db, "SELECT count(*) FROM usage_cuts WHERE cut = 'price'")[0][0] > 0
    assert query(db, "SELECT count(*) FROM usage_cuts WHERE cut <> 'price'")[0][0] == 0


def test_a_legacy_organization_has_geo_speed_and_its_claude_code_report(
        isolated: Path, fast_simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    config = write_config(isolated, [{"name": "acme", "source": "legacy",
                                      "base_url": fast_simulator.url, "cuts": ALL_CUTS,
                                      "claude_code": True}], timezone_name="UTC")
    results = collect(load_config(config), CollectOptions(since=DAYS[0], until=DAYS[0] + timedelta(hours=23)),
                      now=SIM_NOW)
    assert all(r.ok for r in results), [r.error for r in results]
    rows = _spend_json_days(config, "speed,inference_geo", "2026-11-18")
    assert {(r["speed"], r["inference_geo"]) for r in rows} >= {("fast", "us"),
                                                                 ("standard", "global")}
    db = isolated / "data" / "spendwatch.duckdb"
    code = query(db, "SELECT actor, sessions, lines_added, estimated_cost_usd FROM "
                 "claude_code_daily WHERE day = '2026-11-18'")
    assert len(code) >= 5
    assert all(sessions >= 0 and cost > 0 for _, sessions, _, cost in code)
    assert any(actor.endswith("@acme.example") for actor, *_ in code)


def _spend_json_days(config: Path, by: str, day: str) -> list[dict]:
    result = run_cli(["--config", str(config), "spend", "--since", day, "--until", day,
                      "--by", by, "--json"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_per_person_daily_budget_fires_for_the_runaway_developer_once(
        warehouse: Path, fast_simulator: Simulator, fake_slack: object,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from alerts.check import check

    runaway = fast_simulator.control("GET", "/_sim/org").json()["runaway"]
    day = datetime.fromisoformat(runaway["day"]).replace(tzinfo=timezone.utc)
    people = _spend_json_days(warehouse, "person", runaway["day"])
    ranked = sorted((Decimal(r["cost_usd"]), r["person"]) for r in people
                    if r["person"].endswith("@acme.example"))
    (top, top_person), (second, _) = ranked[-1], ranked[-2]
    assert top_person == runaway["email"] and top > 3 * second
    threshold = (top + second) / 2  # only the runaway developer is over it
    monkeypatch.setenv("SLACK_WEBHOOK", fake_slack.url())  # type: ignore[attr-defined]
    warehouse.write_text(warehouse.read_text() + SLACK + f'''
[[alerts.rules]]
name = "person-daily"
kind = "daily_spend"
per = "person"
threshold_usd = "{threshold:.2f}"
channels = ["ops-slack"]
''')
    config = load_config(warehouse)
    for minute in range(0, 50, 10):  # the evening of the runaway day, checked five times
        report = check(config, day + timedelta(hours=23, minutes=minute))
    firing = [e for e in report.evaluations if e.state == "firing"]
    assert [e.scope for e in firing] == [{"organization": "acme", "person": runaway["email"]}]
    messages = fake_slack.received  # type: ignore[attr-defined]
    assert len(messages) == 1
    assert runaway["email"] in messages[0].raw.decode()


def test_reconcile_shows_a_cut_that_does_not_add_up(warehouse: Path) -> None:
    result = run_cli(["--config", str(warehouse), "reconcile", "--cuts", "--since",
                      "2026-11-18", "--until", "2026-11-23", "--json"])
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout
    db = warehouse.parent / "data" / "spendwatch.duckdb"

    conn = open_warehouse(db, read_only=False)  # a lost row of the people cut, as a lost page would leave
    (hour,) = conn.execute("SELECT min(bucket_start) FROM cost_cuts WHERE cut = 'people' AND "
                           "bucket_start >= '2026-11-20'").fetchone()
    conn.execute("DELETE FROM cost_cuts WHERE row_key = (SELECT min(row_key) FROM cost_cuts "
                 "WHERE cut = 'people' AND bucket_start = ? AND amount_usd > 0)", [hour])
    facts.rebuild(conn)  # the stored facts follow the raw rows, as a window write keeps them
    conn.close()
    result = run_cli(["--config", str(warehouse), "reconcile", "--cuts", "--since",
                      "2026-11-18", "--until", "2026-11-23", "--json"])
    off = json.loads(result.stdout)
    assert [(o["cut"], o["measure"]) for o in off] == [("people", "cost_usd")]
    assert Decimal(off[0]["difference"]) < 0
    text = run_cli(["--config", str(warehouse), "reconcile", "--cuts", "--since", "2026-11-18",
                    "--until", "2026-11-23"]).stdout
    assert "cut people: cost_usd" in text


def test_the_weekly_csv_has_a_billed_product_column_and_the_summary_its_top_people(
        warehouse: Path) -> None:
    from datetime import date

    from reports.letter import sections
    from reports.summary import top_people
    from reports.weekly import weekly_rows
    from spendwatch import storage
    from spendwatch.warehouse.batch import Batch
    from spendwatch.warehouse.spend import spend

    config = load_config(warehouse)
    first, last = date(2026, 11, 18), date(2026, 11, 23)
    with storage.reader(config) as conn:
        batch = Batch(conn, config)
        rows = weekly_rows(batch, first, last, "acme")
        whole = sum((r["cost_usd"] for r in spend(batch, first, last)), Decimal(0))
        by_product = {r["product"]: r["cost_usd"] for r in spend(batch, first, last, ["product"])}
        people = top_people(batch, "acme", first, last)
    assert sum((r["cost_usd"] for r in rows), Decimal(0)) == whole
    csv_products: dict[str, Decimal] = {}
    for row in rows:
        csv_products[row["product"]] = csv_products.get(row["product"], Decimal(0)) + row["cost_usd"]
    assert csv_products == by_product
    assert None not in csv_products and "claude_code" in csv_products
    assert len(people) == 5 and not any(label.startswith("user_01") for label, _ in people)
    assert sum(label.endswith("@acme.example") for label, _ in people) >= 4
    assert [v for _, v in people] == sorted((v for _, v in people), reverse=True)
    from reports.summary import WeeklyReport

    report = WeeklyReport("acme", "2026-W48", first, last, "UTC", whole, len(rows), "x.csv",
                          "/x.csv", SIM_NOW, top_people=people)
    (lines,) = [body for heading, body in sections(report, attached=False)
                if heading == "Top people"]
    assert lines[0].startswith(people[0][0] + ": $")


def test_haiku_5_5_prompts_over_100k_are_reported_as_not_priced_not_guessed(
        warehouse: Path) -> None:
    """The APIs label context windows only 0-200k / 200k-1M: an estimated 0-200k Haiku 5.5
    row gets the 100k-and-under rate, and the rest is said, as a bound, not guessed."""

    db = warehouse.parent / "data" / "spendwatch.duckdb"
    conn = open_warehouse(db, read_only=False)  # 2026-11-20 not billed yet: its usage is estimated
    conn.execute("DELETE FROM cost_buckets WHERE bucket_start >= '2026-11-20' AND "
                 "bucket_start < '2026-11-21'")
    facts.rebuild(conn)
    rows = conn.execute("""SELECT service_tier, sum(uncached_input_tokens),
        sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cache_read_tokens),
        sum(output_tokens) FROM usage_hourly WHERE model = 'claude-haiku-5-5'
        AND context_window = '0-200k' AND bucket_start >= '2026-11-20'
        AND bucket_start < '2026-11-21' GROUP BY 1""").fetchall()
    conn.close()
    # long minus short rate per million (prices.csv): input, 5m, 1h, read, output
    extra = (Decimal("0.40"), Decimal("0.50"), Decimal("0.80"), Decimal("0.04"), Decimal("2.00"))
    expected = sum((sum(Decimal(int(c)) * e for c, e in zip(counts, extra)) / 1_000_000
                    * (Decimal("0.5") if tier == "batch" else 1)
                    for tier, *counts in rows), Decimal(0))
    tokens = sum(int(c) for _, *counts in rows for c in counts)
    assert tokens > 0 and expected > 0
    out = run_cli(["--config", str(warehouse), "spend", "--since", "2026-11-20", "--until",
                   "2026-11-20"]).stdout
    (line,) = [x for x in out.splitlines() if x.startswith("Not priced:")]
    assert f"{tokens:,} estimated tokens of claude-haiku-5-5" in line
    from spendwatch.numbers import usd
    assert f"up to {usd(expected)} more" in line


def test_a_failing_claude_code_report_costs_only_itself(
        isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The API failing on one side stream (answers used up) leaves the run ok: every other
    window is stored, one line says what stopped, the next run asks again."""
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    simulator.fault(path="/v1/organizations/usage_report/claude_code", kind="error",
                    status=500, count=1000)
    config = write_config(isolated, [{"name": "acme", "source": "legacy",
                                      "base_url": simulator.url, "cuts": ["price"],
                                      "claude_code": True}], timezone_name="UTC",
                          collection="max_attempts = 2")
    with caplog.at_level(logging.WARNING):
        (result,) = collect(load_config(config), CollectOptions(
            since=DAYS[0], until=DAYS[0] + timedelta(hours=23)), now=SIM_NOW,
            sleep=lambda seconds: None)
    assert result.ok, result.error
    db = isolated / "data" / "spendwatch.duckdb"
    assert query(db, "SELECT count(*) FROM usage_hourly")[0][0] > 0
    assert query(db, "SELECT count(*) FROM usage_cuts WHERE cut = 'price'")[0][0] > 0
    assert query(db, "SELECT count(*) FROM claude_code_daily")[0][0] == 0
    lines = [r.getMessage() for r in caplog.records if "claude_code cut stops" in r.getMessage()]
    assert len(lines) == 1 and "500" in lines[0]
    assert query(db, "SELECT status FROM collection_runs") == [("ok",)]
