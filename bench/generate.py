"""Load a synthetic large organization into a warehouse, through the project's own path.

Run: ``python bench/generate.py --out DIR [--keys 400] [--workspaces 40] [--models 10]
[--months 12]``. Writes ``DIR/config.toml`` and the warehouse it names
(``DIR/spendwatch.duckdb``), collected by ``spendwatch collect --since`` over HTTP from the
organization served by ``_serve.py`` (the simulator's server scaled to that size; see
``_scale.py``), with DuckDB's bulk load of the same rows into ``DIR/baseline.duckdb`` as the
ingest baseline. Twelve months are the 364 days the Analytics API keeps. Prints the row
counts and the ingest figures as JSON. Then: ``python bench/run.py DIR``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import _scale
from _synthetic import MODELS


def main() -> None:
    parser = argparse.ArgumentParser(prog="python bench/generate.py")
    parser.add_argument("--out", type=Path, required=True, help="folder to create")
    parser.add_argument("--keys", type=int, default=400)
    parser.add_argument("--workspaces", type=int, default=40)
    parser.add_argument("--models", type=int, default=len(MODELS),
                        help=f"1 to {len(MODELS)}")
    parser.add_argument("--months", type=int, default=12)
    args = parser.parse_args()
    if args.keys < 1 or args.workspaces < 1 or args.months < 1:
        parser.error("--keys, --workspaces and --months must be at least 1")
    if not 1 <= args.models <= len(MODELS):
        parser.error(f"--models must be 1 to {len(MODELS)}")
    built = _scale.generate(args.out, args.months, args.keys, args.workspaces, args.models)
    print(json.dumps(built, indent=1, default=str))


if __name__ == "__main__":
    main()
