#!/usr/bin/env bash
# Trains the motion model of configs/motion_cpu.py: its three stages, each a run started from the previous
# stage's weights, then validates the last stage per clip at the paper's guidance density and packs it.
#
#   bash scripts/train_motion.sh OUT_DIR       # e.g. runs/motion; the data: scripts/make_motion_data.sh
#
# OUT_DIR/stage1, stage2, stage3: the runs (a stage whose run is complete is skipped; an interrupted one
# resumes from its last checkpoint when the script is run again); OUT_DIR/validation: validation.json and
# validation.png of stage 3; OUT_DIR/packed: weights.msgpack (bfloat16) + config.json, the shippable model.
# Env: PY (python, default .venv/bin/python), CMP_MOTION_DATA (the data, default /work/datasets/motion).
set -euo pipefail
OUT=${1:?usage: bash scripts/train_motion.sh OUT_DIR}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
CONFIG=$REPO/configs/motion_cpu.py
cd "$REPO"
previous=""
for stage in stage1 stage2 stage3; do
  echo "[train_motion] $stage -> $OUT/$stage"
  "$PY" train.py --config "$CONFIG:$stage" --workdir "$OUT/$stage" ${previous:+--config.init_from="$previous"}
  previous=$OUT/$stage
done
"$PY" -m cmp_jax.validate --config "$CONFIG:stage3" --checkpoint "$OUT/stage3" --out "$OUT/validation"
"$PY" -m cmp_jax.convert pack --config "$CONFIG:stage3" --checkpoint "$OUT/stage3" --out "$OUT/packed"
echo "[train_motion] done: runs in $OUT/stage{1,2,3}, validation in $OUT/validation, packed model in $OUT/packed"
