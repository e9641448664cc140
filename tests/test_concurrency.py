"""A reader in a second process while the collector writes: no lock error escapes, totals exact."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from collectors.sync import CollectOptions, collect
from conftest import REPO, SIM_NOW, Simulator
from spendwatch.config import load_config
from warehouse import db_path, totals, truth_totals

READER = r"""
import json, sys, time
from dataclasses import replace
from pathlib import Path
from spendwatch import storage
from spendwatch.config import load_config
from spendwatch.errors import DatabaseBusy, DatabaseMissing
config, stop = load_config(sys.argv[1]), Path(sys.argv[2])
reads = busy = missing = 0
while not stop.exists():
    try:
        with storage.reader(replace(config, storage=replace(config.storage,
                                                            lock_timeout_seconds=5))) as conn:
            conn.execute("SELECT sum(amount_usd) FROM cost_buckets").fetchone()
        reads += 1
    except DatabaseMissing:
        missing += 1
    except DatabaseBusy:
        busy += 1
    time.sleep(0.005)
with storage.reader(config) as conn:
    final = str(conn.execute("SELECT sum(amount_usd) FROM cost_buckets").fetchone()[0])
print(json.dumps({"reads": reads, "busy": busy, "final": final}))
"""


def test_a_reader_process_and_the_collector_share_the_file(org_config,
                                                           simulator: Simulator,
                                                           tmp_path: Path) -> None:
    config = load_config(org_config())
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(config.path),
                               str(stop)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        start = datetime(2026, 11, 10, tzinfo=timezone.utc)
        (result,) = collect(config, CollectOptions(since=start), now=SIM_NOW)
    finally:
        stop.touch()
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    assert "Traceback" not in err
    report = json.loads(out)
    assert result.ok, result.error
    assert report["reads"] > 0
    expected = truth_totals(simulator.truth(start, SIM_NOW))
    assert totals(db_path(config), start, SIM_NOW) == expected
    from decimal import Decimal
    assert Decimal(report["final"]) == expected["cost_usd"]
