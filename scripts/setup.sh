#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install the project with its test extras.
# Re-running is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
if [ -z "$PY" ]; then echo "setup: no python3 found; install Python 3.11 or newer" >&2; exit 1; fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: $PY is $("$PY" -V 2>&1); this project needs Python 3.11 or newer (set PYTHON=...)" >&2; exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PY" -V 2>&1)"
  "$PY" -m venv .venv
fi
stamp=.venv/.bci-installed
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing the project and its dependencies into .venv (first time: several minutes)"
  .venv/bin/python -m pip install --upgrade --quiet pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
fi
