#!/usr/bin/env bash
# Install spendwatch into .venv and run the demo: a simulated organization on this machine,
# collected into DuckDB, with what it spent checked against the simulator's ground truth.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/spendwatch demo "$@"
