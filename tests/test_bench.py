"""The bench's load path: its large organization served over HTTP by ``bench/_serve.py`` (the
simulator's server) and collected by the real ``collect`` stores exactly what that
organization generates: the bench measures the code a user runs, on the rows it claims."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pytest
import requests

from collectors.sync import CollectOptions, collect
from conftest import ADMIN_KEY, REPO, write_config
from spendwatch.config import load_config
from warehouse import TOKEN_COLUMNS, db_path, query, totals

sys.path.insert(0, str(REPO / "bench"))
from _synthetic import Organization  # noqa: E402

NOW = datetime(2027, 1, 1, tzinfo=timezone.utc)
SIZE = {"keys": 12, "workspaces": 3, "models": 4}
USAGE_FIELDS = {"uncached_input_tokens": ("uncached_input_tokens",),
                "cache_write_5m_tokens": ("cache_creation", "ephemeral_5m_input_tokens"),
                "cache_write_1h_tokens": ("cache_creation", "ephemeral_1h_input_tokens"),
                "cache_read_tokens": ("cache_read_input_tokens",),
                "output_tokens": ("output_tokens",)}


@pytest.fixture
def served() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "_serve.py"), "--now", "2027-01-01T00:00:00Z",
         "--admin-key", ADMIN_KEY, *(f"--{k}={v}" for k, v in SIZE.items())],
        stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        process.kill()
        process.wait(timeout=10)


def generated(start: datetime, days: int) -> dict:
    """What the organization generates for ``days`` UTC days from ``start``, summed."""
    org = Organization(**SIZE)
    cents, tokens, rows = Decimal(0), dict.fromkeys(TOKEN_COLUMNS, 0), {"usage": 0, "cost": 0}
    for n in range(days):
        usage, cost = org.day(start + timedelta(days=n), NOW)
        for page in usage:
            for row in page["data"]:
                rows["usage"] += 1
                for column, path in USAGE_FIELDS.items():
                    value = row["usage"]
                    for part in path:
                        value = value[part]
                    tokens[column] += value
        for page in cost:
            for row in page["data"]:
                rows["cost"] += 1
                cents += Decimal(row["cost"]["amount"])
    return {"cost_usd": cents / 100, "tokens": tokens, "rows": rows}


def test_a_collection_over_the_bench_server_stores_what_its_organization_generates(
        served: str, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    config = load_config(write_config(isolated, [{"name": "bench", "base_url": served}],
                                      collection="page_limit = 100"))
    start = NOW - timedelta(days=2)
    (result,) = collect(config, CollectOptions(since=start), now=NOW, sleep=lambda s: None)
    assert result.ok, result.error

    truth = generated(start, 2)
    stored = totals(db_path(config), start, NOW, "bench")
    assert stored["cost_usd"] == truth["cost_usd"] > 0
    assert stored["tokens"] == truth["tokens"]
    assert (result.usage_rows, result.cost_rows) == (truth["rows"]["usage"],
                                                    truth["rows"]["cost"])
    assert query(db_path(config), "SELECT count(*) FROM api_keys") == [(SIZE["keys"],)]

    # Paged at the limit asked for (a cost page keeps a bucket and group's fan-out whole),
    # every cursor followed once.
    served_requests = requests.get(served + "/_sim/requests", timeout=10).json()
    analytics = [r for r in served_requests if "/analytics/" in r["path"]]
    assert analytics and all(r["status"] == 200 and r["query"]["limit"] == ["100"]
                             for r in analytics)
    pages = [tuple(r["query"].get("page", [""])) + (r["path"], r["query"]["starting_at"][0])
             for r in analytics]
    assert len(pages) == len(set(pages))
    assert len(analytics) > 2 * 2  # more than a page per stream and day: the paging ran


def _chart(at: Any, title: str) -> list[dict[str, Any]]:
    """The first dataset of the page's chart titled ``title``, as rows."""
    (chart,) = [c for c in at.get("vega_lite_chart") if title in c.proto.spec]
    return pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pylist()


def test_pages_of_many_features_show_the_ten_biggest_and_the_rest_as_other(
        served: str, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twelve keys are twelve features (400 at a large organization): the Savings chart per
    lever and feature shows the ten that saved most and the rest as "other", each lever's
    total that of the ledger; the Caching hit ratio chart the ten features of most input and
    "other" at the ratio of their summed tokens; the Overview lists ten firing alerts and
    says how many more the Alerts page has."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest
    from alerts import history
    from alerts import settings as alert_settings
    from alerts.machine import evaluate_and_record
    from alerts.model import CheckReport
    from spendwatch.savings import ledger
    from spendwatch.timeutil import local_today
    from spendwatch.warehouse import figures
    from spendwatch.warehouse.batch import read
    from spendwatch.warehouse.spend import spend
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    rule = ('[[alerts.rules]]\nname = "cache per feature"\nkind = "cache_hit_ratio"\n'
            'floor = 0.99\nper = "feature"\nmin_input_tokens = 1\nchannels = []\n')
    path = write_config(isolated, [{"name": "bench", "base_url": served}], extra=rule,
                        collection="page_limit = 100")
    config = load_config(path)
    (result,) = collect(config, CollectOptions(since=NOW - timedelta(days=3)), now=NOW,
                        sleep=lambda s: None)
    assert result.ok, result.error
    evaluate_and_record(alert_settings.load(path), NOW, CheckReport())
    monkeypatch.setenv("SPENDWATCH_CONFIG", str(path))
    monkeypatch.setenv("SPENDWATCH_NOW", NOW.strftime("%Y-%m-%dT%H:%M:%SZ"))
    st.cache_data.clear()
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    listed = [m.value for m in at.markdown if "cache per feature" in m.value]
    firing = read(config, lambda batch: history.firing_alerts(batch.conn, NOW))
    assert len(firing) > len(listed) == 10
    assert f"and {len(firing) - 10} more: every one is on Alerts." in [
        c.value for c in at.caption]

    at.switch_page("pages/savings.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = _chart(at, "Saved per lever and feature")
    today = local_today(NOW, config.tz)
    book = read(config, ledger, today - timedelta(days=30), today - timedelta(days=1))
    saved: dict[str, Decimal] = {}
    for r in book.realized:
        if r.cache_savings_usd or r.batch_savings_usd:  # workspaces of no key's usage: none
            saved[r.feature] = saved.get(r.feature, Decimal(0)) + r.cache_savings_usd \
                + r.batch_savings_usd
    assert len(saved) == SIZE["keys"]
    biggest = sorted(saved, key=lambda f: -saved[f])[:10]
    assert {r["feature"] for r in shown} == {*biggest, "other"}
    for lever, total in (("caching", book.totals.cache_savings_usd),
                         ("batch", book.totals.batch_savings_usd)):
        assert round(sum(r["cost_usd"] for r in shown if r["lever"] == lever), 2) == \
            float(round(total, 2))

    at.switch_page("pages/caching.py").run()
    assert not at.exception, [e.value for e in at.exception]
    lines = _chart(at, "Cache hit ratio")
    rows = read(config, spend, today - timedelta(days=6), today, ["feature"],
                metrics=list(figures.INPUT_TOKEN_METRICS))
    fed = {r["feature"]: sum(r[m] for m in figures.INPUT_TOKEN_METRICS) for r in rows}
    assert len(fed) > 10
    most = sorted(fed, key=lambda f: (-fed[f], f))[:10]
    assert {r["group"] for r in lines} == {*most, "other"}
    rest = [r for r in rows if r["feature"] not in most]
    reads = sum(r["cache_read_tokens"] for r in rest)
    inputs = sum(fed[r["feature"]] for r in rest)
    other = [r for r in lines if r["group"] == "other"]
    assert sum(r["input_tokens"] for r in other) == inputs
    assert other and all(0 <= r["hit_ratio"] <= 1 for r in other)
    assert abs(sum(r["hit_ratio"] * r["input_tokens"] for r in other) - reads) < 1
