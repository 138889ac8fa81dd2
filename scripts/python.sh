# Sourced by scripts/setup.sh and scripts/lock.sh: sets PY to a Python >= 3.11 ($PYTHON, else the first of
# python3.11 python3.12 python3.13 python3 found), or stops with a message prefixed by $1.
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
if [ -z "$PY" ]; then echo "$1: no python3 found; install Python 3.11 or newer" >&2; exit 1; fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "$1: $PY is $("$PY" -V 2>&1); this project needs Python 3.11 or newer (set PYTHON=...)" >&2; exit 1
fi
