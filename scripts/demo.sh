#!/usr/bin/env bash
# Set up (if needed) and run the main job: the end-to-end demo on the synthetic world.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/bci demo "$@"
