#!/usr/bin/env bash
# Install spendwatch into .venv and run the demo: a simulated organization on this machine,
# collected into DuckDB, with what it spent checked against the simulator's ground truth.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# uv installs the same packages from PyPI as pip, in parallel (seconds rather than a minute).
.venv/bin/python -m pip install -qq uv  # -qq: no notices or index warnings in the output
.venv/bin/python -m uv pip install --quiet --python .venv/bin/python -e .
exec .venv/bin/spendwatch demo "$@"
