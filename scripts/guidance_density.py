"""Guidance points per crop for the original's densities scaled to smaller crops, measured on real flows.

  python scripts/guidance_density.py DATA_ROOT [--splits val train] [--md F] [--json F]

The original samples grid + watershed guidance (cmp_jax.sampling). Two densities matter:
  * base   : config_lib.base() (alexnet_yfcc_voc): bg_ratio 1.5625e-4 (grid stride 80), nms_ks 41 at 384x384;
  * paper  : the paper's "K=81, G=200, on average 13.5 points per 384x384 image"
             (alexnet_yfcc+youtube_voc: bg_ratio 2.5e-5, stride 200, nms_ks 81).
To keep the points per image area at a crop of side s, both lengths scale with s / 384: grid stride
round(G * s / 384) (the grid then has the same rows x columns as at 384) and nms_ks the nearest odd integer
to K * s / 384 (ties up). The config key is sample_bg_ratio = 1 / (stride + 0.5)^2, whose
int(sqrt(1 / bg_ratio)) is exactly `stride` (1 / stride^2 can truncate to stride - 1).

For every pair of DATA_ROOT/lists/{split}.txt the flow is resized to short side round(s * 416 / 384) as the
pipeline does (cv2 bilinear, values scaled), centre-cropped to s x s, and cmp_jax.sampling.guidance_points
draws the points (strategy grid + watershed, max_num_guide -1, RandomState(pair index)).
"""

import argparse
import json
import math
import os
import sys

import cv2
import numpy as np

from cmp_jax import sampling
from cmp_jax.data import formats

REF_CROP = 384
DENSITIES = {"base": (80, 41), "paper": (200, 81)}   # (grid stride G, nms_ks K) at 384 x 384
CROPS = (128, 160, 192, 256, 384)


def scaled(g, k, s):
  """(grid stride, nms_ks) at crop side s: G * s / 384 rounded, and the odd integer nearest K * s / 384."""
  x = k * s / REF_CROP
  return int(round(g * s / REF_CROP)), max(1, 2 * int(math.floor((x - 1) / 2 + 0.5)) + 1)


def bg_ratio_for(stride):
  bg = 1.0 / (stride + 0.5) ** 2
  assert int(np.sqrt(1.0 / bg)) == stride, (stride, bg)
  return bg


def settings():
  out = []
  for name, (g, k) in DENSITIES.items():
    for s in CROPS:
      stride, ks = (g, k) if s == REF_CROP else scaled(g, k, s)
      bg = 1.5625e-4 if (name, s) == ("base", REF_CROP) else 2.5e-5 if (name, s) == ("paper", REF_CROP) \
          else bg_ratio_for(stride)
      out.append({"density": name, "crop": s, "stride": int(np.sqrt(1.0 / bg)), "bg_ratio": bg, "nms_ks": ks})
  out.append({"density": "quickstart", "crop": 128, "stride": 16, "bg_ratio": 1.0 / 256, "nms_ks": 15})
  return out


def centre_crop_flow(flow, s):
  h, w = flow.shape[:2]
  short = int(round(s * 416 / 384))
  nw, nh = (short, int(short / w * h)) if w < h else (int(short / h * w), short)
  f = cv2.resize(flow, (nw, nh), interpolation=cv2.INTER_LINEAR) * (nh / h)
  t, l = (nh - s) // 2, (nw - s) // 2
  return np.ascontiguousarray(f[t:t + s, l:l + s])


def measure(flows, st):
  grid, ws, tot = [], [], []
  gh, gw = sampling.grid_points(st["crop"], st["crop"], st["bg_ratio"])
  for i, flow in enumerate(flows):
    f = centre_crop_flow(flow, st["crop"])
    ph, _ = sampling.guidance_points(f, ("grid", "watershed"), st["bg_ratio"], st["nms_ks"], -1,
                                     rng=np.random.RandomState(i))
    grid.append(len(gh))
    tot.append(len(ph))
    ws.append(len(ph) - len(gh))
  tot = np.asarray(tot)
  return {"grid": float(np.mean(grid)), "watershed": round(float(np.mean(ws)), 2), "total": round(float(tot.mean()), 2),
          "min": int(tot.min()), "max": int(tot.max()),
          "per_100x100": round(float(tot.mean()) * 1e4 / st["crop"] ** 2, 2)}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("data_root")
  p.add_argument("--splits", nargs="+", default=["val"])
  p.add_argument("--md")
  p.add_argument("--json")
  a = p.parse_args(argv)
  flows = {}
  for sp in a.splits:
    es = formats.read_list_files(os.path.join(a.data_root, "lists", f"{sp}.txt"), a.data_root, "jpg")
    flows[sp] = [formats.read_flow(e.flow, "jpg") for e in es]
  rows = []
  for st in settings():
    r = dict(st)
    for sp in a.splits:
      r[sp] = measure(flows[sp], st)
    rows.append(r)
    print(json.dumps(r), file=sys.stderr, flush=True)
  head = ("| density | crop | short side | grid stride (sample_bg_ratio) | nms_ks | grid pts | "
          + " | ".join(f"{sp}: watershed / total (min-max) / per 100x100 px" for sp in a.splits) + " |")
  lines = [head, "|" + "---|" * (6 + len(a.splits))]
  for r in rows:
    cells = [f"{r[sp]['watershed']:.1f} / **{r[sp]['total']:.1f}** ({r[sp]['min']}-{r[sp]['max']}) / "
             f"{r[sp]['per_100x100']:.2f}" for sp in a.splits]
    lines.append(f"| {r['density']} | {r['crop']} | {int(round(r['crop'] * 416 / 384))} | {r['stride']} "
                 f"({r['bg_ratio']:.4g}) | {r['nms_ks']} | {r[a.splits[0]]['grid']:.0f} | " + " | ".join(cells) + " |")
  md = "\n".join(lines) + "\n"
  print(md)
  if a.md:
    with open(a.md, "w") as f:
      f.write(md)
  if a.json:
    with open(a.json, "w") as f:
      json.dump(rows, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
