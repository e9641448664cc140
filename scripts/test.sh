#!/usr/bin/env bash
# Install spendwatch and its test tools into .venv, then run the type check and every test.
# Needs python3 (3.11+); everything else is installed here, including Debian's chromium for
# the browser tests (as root, or with sudo). CI runs this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
.venv/bin/python -m mypy spendwatch collectors alerts
.venv/bin/python -m pytest "$@"
