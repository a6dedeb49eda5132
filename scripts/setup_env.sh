#!/usr/bin/env bash
# Creates .venv (if missing) and installs the pinned stack into it. Idempotent.
#   bash scripts/setup_env.sh            the Python stack (the main job)
#   bash scripts/setup_env.sh browser    also headless Chromium for the demo page's test (test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import jax, flax, optax, orbax.checkpoint, tensorflow, torch, cv2, ml_collections, gradio, selenium" 2>/dev/null \
   || [ requirements.txt -nt .venv/.installed ]; then
  echo "[setup] installing requirements.txt into .venv (about a minute on a fresh machine)"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  touch .venv/.installed
fi
# Headless Chromium and its driver for the demo page's browser test (tests/test_app.py), from Debian's
# packages, only where missing (root, as on CI; elsewhere the test skips with the reason).
if [ "${1:-}" = browser ] && { ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium and chromium-driver (apt-get) for the demo page's browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
      || echo "[setup] WARNING: could not install chromium; tests/test_app.py will skip its browser test"
  else
    echo "[setup] note: chromium/chromedriver missing and not root: tests/test_app.py will skip its browser test"
  fi
fi
