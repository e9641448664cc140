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
# uv installs the same packages from PyPI as pip, in parallel: ~10 s here against ~60 s.
.venv/bin/python -m pip install -qq uv  # -qq: no notices or index warnings in the output
.venv/bin/python -m uv pip install --quiet --python .venv/bin/python -e '.[test]'
# mypy's cache lives outside the clone, so a fresh clone on the same machine reuses it.
.venv/bin/python -m mypy --cache-dir "${XDG_CACHE_HOME:-$HOME/.cache}/spendwatch/mypy" \
    spendwatch collectors alerts reports app
# Three workers, each test module on one of them (--dist loadfile), so a module's shared
# warehouse (a module-scoped fixture) is collected once. Three on two cores: a third of the
# time a test waits on a subprocess, a browser or a simulator (measured here: 405 s against
# 445 s with two). Every test has its own folder and its simulators listen on port 0, so the
# workers never meet.
.venv/bin/python -m pytest -n 3 --dist loadfile "$@"
