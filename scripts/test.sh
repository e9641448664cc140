#!/usr/bin/env bash
# Install spendwatch and its test tools into .venv, then run the type check and every test.
# Needs only python3 (3.11+); everything else is installed here. CI runs this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
.venv/bin/python -m mypy spendwatch collectors alerts
.venv/bin/python -m pytest "$@"
