#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install the project with its test extras, at the exact versions of
# requirements.lock (a pip constraints file; refresh it with: bash scripts/lock.sh).
# Re-running is cheap: it reinstalls only when pyproject.toml or requirements.lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/python.sh setup
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PY" -V 2>&1)"
  "$PY" -m venv .venv
fi
stamp=.venv/.bci-installed
lock=()
if [ -f requirements.lock ]; then lock=(-c requirements.lock); fi
want="$({ cat pyproject.toml; if [ -f requirements.lock ]; then cat requirements.lock; fi; } | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! compgen -G '.venv/lib/python3*/site-packages/torch' >/dev/null && [ -z "${BCI_SKIP_DISK_CHECK:-}" ]; then
    # torch + torchvision (with their CUDA libraries on x86_64) take about 6 GiB in .venv
    free_kib="$(df -Pk . | awk 'NR==2 {print $4}')"
    if [ -n "$free_kib" ] && [ "$free_kib" -lt $((13 * 512 * 1024)) ]; then
      echo "setup: only $((free_kib / 1024)) MiB free in $(pwd); installing torch and the other dependencies into .venv" \
           "needs about 6.5 GiB. Free some space (or set BCI_SKIP_DISK_CHECK=1 to try anyway)." >&2
      exit 1
    fi
  fi
  echo "setup: installing the project and its dependencies into .venv (first time: several minutes)"
  .venv/bin/python -m pip install --upgrade --quiet pip
  .venv/bin/python -m pip install --quiet --no-cache-dir ${lock[@]+"${lock[@]}"} -e ".[dev]"
  echo "$want" > "$stamp"
fi
