"""What the benchmarks share: a config for the local simulator, collected from ``since``."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from collectors.simulator.server import SimulatorServer
from collectors.sync import CollectOptions, OrgResult, collect
from spendwatch.config import Config, load_config

KEY = "sk-ant-admin01-bench"


def collected(folder: str, sim: SimulatorServer, since: datetime,
              now: datetime, cuts: list[str] | None = None) -> tuple[Config, OrgResult]:
    """One organization "bench" on ``sim``, collected from ``since`` to ``now`` into
    ``folder``; ``cuts`` as the organization's ``cuts`` (None: the default cuts). Raises
    AssertionError when the collection failed."""
    path = Path(folder) / "config.toml"
    cut_line = "" if cuts is None else f"cuts = {cuts!r}\n".replace("'", '"')
    path.write_text(f'timezone = "America/Chicago"\n[[organizations]]\nname = "bench"\n'
                    f'base_url = "{sim.url}"\n{cut_line}', encoding="utf-8")
    path.chmod(0o600)
    os.environ["ANTHROPIC_ADMIN_KEY"] = KEY
    config = load_config(path)
    (result,) = collect(config, CollectOptions(since=since), now=now)
    assert result.ok, result.error
    return config, result
