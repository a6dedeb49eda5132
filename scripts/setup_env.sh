#!/usr/bin/env bash
# Creates .venv (if missing) and installs the pinned stack into it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import jax, flax, optax, orbax.checkpoint, tensorflow, torch, cv2, ml_collections" 2>/dev/null \
   || [ requirements.txt -nt .venv/.installed ]; then
  echo "[setup] installing requirements.txt into .venv (about a minute on a fresh machine)"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  touch .venv/.installed
fi
