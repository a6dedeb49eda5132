#!/usr/bin/env bash
# Quick start: set up .venv, train CMP (dilated ResNet-18 + ShallowNet-8x + Plain decoder) on the small
# real sample shipped in data/sample, validate it against two baselines, and export the weights to PyTorch.
# About 6 minutes on a 2-core CPU.
#
#   bash quickstart.sh [WORKDIR]        (default runs/quickstart; an existing WORKDIR is resumed / reused)
set -euo pipefail
cd "$(dirname "$0")"
WORKDIR=${1:-runs/quickstart}
PY=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL=2

echo "== 1/3 environment (scripts/setup_env.sh)"
bash scripts/setup_env.sh

echo "== 2/3 training configs/quickstart.py in $WORKDIR (progress every 20 steps, validation every 100)"
"$PY" train.py --config configs/quickstart.py --workdir "$WORKDIR"

echo "== 3/3 exporting to PyTorch"
mkdir -p "$WORKDIR/export"
"$PY" -W ignore -m cmp_jax.convert to-torch --config configs/quickstart.py --checkpoint "$WORKDIR" \
  --part image_encoder --out "$WORKDIR/export/image_encoder.pth"
"$PY" -W ignore -m cmp_jax.convert to-torch --config configs/quickstart.py --checkpoint "$WORKDIR" \
  --part full --out "$WORKDIR/export/cmp_full.pth"

"$PY" - "$WORKDIR" <<'EOF'
import json, os, sys
wd = sys.argv[1]
vals = [r for r in map(json.loads, open(os.path.join(wd, "metrics.jsonl"))) if "val/epe" in r]
v = vals[-1]
print(f"\n== final validation (step {v['step']}, {int(v['val/samples'])} val pairs, whole list)")
print(f"   {'':22s}{'all pixels':>12s}{'moving (>1px)':>15s}")
for name, key in (("CMP (this run)", "epe"), ("zero flow", "zero_epe"), ("nearest guidance", "nearest_epe")):
  print(f"   EPE {name:18s}{v['val/' + key]:10.3f} px{v['val/' + key + '_moving']:12.3f} px")
ok = v["val/epe"] < v["val/zero_epe"] and v["val/epe_moving"] < v["val/zero_epe_moving"]
print(f"   beats the zero-flow baseline on all and on moving pixels: {'yes' if ok else 'NO'}")
ck = os.path.join(wd, "checkpoints")
steps = sorted(int(s) for s in os.listdir(ck) if s.isdigit())
pics = sorted(os.listdir(os.path.join(wd, "vis")))
print(f"""
== outputs
   checkpoint (orbax)    {os.path.join(ck, str(steps[-1]))}
   metrics (JSON lines)  {os.path.join(wd, 'metrics.jsonl')}
   TensorBoard events    {os.path.join(wd, 'events')}    (tensorboard --logdir {wd})
   validation pictures   {os.path.join(wd, 'vis', pics[-1])}  (input + guidance | predicted | target flow)
   PyTorch weights       {os.path.join(wd, 'export', 'image_encoder.pth')}  (image encoder, for downstream tasks)
                         {os.path.join(wd, 'export', 'cmp_full.pth')}  (full model, the original's key layout)
   log                   {os.path.join(wd, 'log.txt')}""")
EOF
