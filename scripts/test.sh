#!/usr/bin/env bash
# Install spendwatch and its test tools, then run the type check and every test: on a DuckDB
# file (.venv, the newest DuckDB), then the warehouse tests again on a DuckLake (.venv-lake,
# DuckDB 1.4.4 and its extensions, a throwaway PostgreSQL cluster the tests start and stop).
# Needs python3 (3.11+); everything else is installed here, including Debian's chromium (the
# browser tests) and postgresql (the DuckLake catalog), as root or with sudo. CI runs this
# (.ci/run). Arguments go to both pytest runs (-q, -x, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m venv .venv
# uv installs the same packages from PyPI as pip, in parallel: ~10 s here against ~60 s.
.venv/bin/python -m pip install -qq uv  # -qq: no notices or index warnings in the output
.venv/bin/python -m uv pip install --quiet --python .venv/bin/python -e '.[test]'
python3 -m venv .venv-lake
.venv/bin/python -m uv pip install --quiet --python .venv-lake/bin/python -e '.[test,ducklake]'
# mypy's cache lives outside the clone, so a fresh clone on the same machine reuses it.
.venv/bin/python -m mypy --cache-dir "${XDG_CACHE_HOME:-$HOME/.cache}/spendwatch/mypy" \
    spendwatch collectors alerts reports app
# Three workers, each test module on one of them (--dist loadfile), so a module's shared
# warehouse (a module-scoped fixture) is collected once. Three on two cores: a third of the
# time a test waits on a subprocess, a browser or a simulator (measured here: 405 s against
# 445 s with two). Every test has its own folder and its simulators listen on port 0, so the
# workers never meet.
.venv/bin/python -m pytest -n 3 --dist loadfile "$@"
# The warehouse tests on a DuckLake: every module that writes or reads a warehouse (the
# others test config, prices, the simulator, channels and the browser, whose demo writes
# its own file).
.venv-lake/bin/python -m pytest -n 3 --dist loadfile --backend ducklake "$@" \
    $(cat tests/warehouse-tests.txt)
