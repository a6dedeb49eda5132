#!/usr/bin/env bash
# Quick start: set up .venv, train CMP (dilated ResNet-18 + ShallowNet-8x + Plain decoder) on the small
# real sample shipped in data/sample, validate it against two baselines, and export the weights to PyTorch.
# About 7 minutes on a 2-core CPU.
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
rows = [r for r in map(json.loads, open(os.path.join(wd, "metrics.jsonl")))]
for prefix, what in (("val", "the config's dense guidance"), ("val_sparse", "guidance at the paper's density")):
  vals = [r for r in rows if f"{prefix}/epe" in r]
  if not vals:
    continue
  v = vals[-1]
  print(f"\n== final validation, {what} (step {v['step']}, {int(v[prefix + '/samples'])} val pairs of clips never "
        f"seen in training, {v[prefix + '/points']:.0f} guidance points per 128x128 crop)")
  print(f"   {'':22s}{'all pixels':>12s}{'moving (>1px)':>15s}")
  for name, key in (("CMP (this run)", "epe"), ("zero flow", "zero_epe"), ("nearest guidance", "nearest_epe")):
    print(f"   EPE {name:18s}{v[prefix + '/' + key]:10.3f} px{v[prefix + '/' + key + '_moving']:12.3f} px")
  for base, label in (("zero_epe", "zero-flow"), ("nearest_epe", "nearest-guidance")):
    ok = v[prefix + "/epe"] < v[prefix + "/" + base] and v[prefix + "/epe_moving"] < v[prefix + "/" + base + "_moving"]
    print(f"   beats the {label} baseline on all and on moving pixels: {'yes' if ok else 'NO'}")
ck = os.path.join(wd, "checkpoints")
steps = sorted(int(s) for s in os.listdir(ck) if s.isdigit())
pics = {p: sorted(f for f in os.listdir(os.path.join(wd, "vis")) if f.startswith(p + "_0"))[-1]
        for p in ("val", "val_sparse") if any(f.startswith(p + "_0") for f in os.listdir(os.path.join(wd, "vis")))}
print(f"""
== outputs
   checkpoint (orbax)    {os.path.join(ck, str(steps[-1]))}
   metrics (JSON lines)  {os.path.join(wd, 'metrics.jsonl')}
   TensorBoard events    {os.path.join(wd, 'events')}    (tensorboard --logdir {wd})
   validation pictures   {'  '.join(os.path.join(wd, 'vis', f) for f in pics.values())}
                         (rows: input + guidance crosses | predicted | target flow)
   PyTorch weights       {os.path.join(wd, 'export', 'image_encoder.pth')}  (image encoder, for downstream tasks)
                         {os.path.join(wd, 'export', 'cmp_full.pth')}  (full model, the original's key layout)
   log                   {os.path.join(wd, 'log.txt')}""")
EOF
