#!/usr/bin/env bash
# Sets up .venv and runs the whole test suite (its time on 2 CPU cores: README, Tests).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh browser
exec .venv/bin/python -m pytest -q tests "$@"
