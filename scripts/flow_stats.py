"""Motion statistics of a CMP dataset, per split and per clip, read from its list files.

  python scripts/flow_stats.py DATA_ROOT [--splits train val] [--short-side S] [--json F] [--md F]

For every pair of DATA_ROOT/lists/{split}.txt (the original's list format, read with cmp_jax.data.formats),
it decodes the flow and reports, per clip (frames/<clip>/...) and per split:
  pairs, frame size(s), moving share = fraction of pixels with |flow| > 1 px (mean over pairs, and the
  lowest pair's), median and 90th percentile of |flow| over the moving pixels (all pairs pooled), and the
  share of pairs with fewer than 1 % moving pixels ("near-static").
--short-side S scales each flow by S / (its frame's short side) first, i.e. the flow as the training
pipeline sees it after resizing the frames to short side S (0: as stored).
"""

import argparse
import collections
import json
import os
import sys

import numpy as np

from cmp_jax.data import formats

BIN = 0.01          # |flow| histogram resolution (px)
MAX_MAG = 200.0


class Acc:
  def __init__(self):
    self.pairs = 0
    self.sizes = collections.Counter()
    self.shares = []
    self.hist = np.zeros(int(MAX_MAG / BIN) + 1, np.int64)

  def add(self, mag, size):
    self.pairs += 1
    self.sizes[size] += 1
    moving = mag > 1.0
    self.shares.append(float(moving.mean()))
    idx = np.minimum((mag[moving] / BIN).astype(np.int64), len(self.hist) - 1)
    self.hist += np.bincount(idx, minlength=len(self.hist))

  def merge(self, other):
    self.pairs += other.pairs
    self.sizes.update(other.sizes)
    self.shares += other.shares
    self.hist += other.hist

  def quantile(self, q):
    n = self.hist.sum()
    if n == 0:
      return float("nan")
    k = np.searchsorted(np.cumsum(self.hist), q * n)
    return (k + 0.5) * BIN

  def summary(self):
    s = np.asarray(self.shares)
    return {"pairs": self.pairs,
            "sizes_wh": {f"{w}x{h}": c for (w, h), c in sorted(self.sizes.items())},
            "moving_share_mean": round(float(s.mean()), 4) if len(s) else None,
            "moving_share_min": round(float(s.min()), 4) if len(s) else None,
            "near_static_pairs": int((s < 0.01).sum()),
            "median_moving_flow_px": round(self.quantile(0.5), 2),
            "p90_moving_flow_px": round(self.quantile(0.9), 2)}


def clip_of(path, root):
  rel = os.path.relpath(path, root).split(os.sep)
  return rel[1] if len(rel) > 2 and rel[0] == "frames" else rel[0]


def stats(root, split, short_side=0):
  lf = os.path.join(root, "lists", f"{split}.txt")
  entries = formats.read_list_files(lf, root, "jpg")
  clips = collections.OrderedDict()
  for e in entries:
    flow = formats.read_flow(e.flow, "jpg")
    h, w = flow.shape[:2]
    mag = np.hypot(flow[..., 0], flow[..., 1])
    if short_side:
      mag = mag * (short_side / min(h, w))
    clips.setdefault(clip_of(e.img1, root), Acc()).add(mag, (w, h))
  total = Acc()
  for a in clips.values():
    total.merge(a)
  return {"split": split, "all": total.summary(), "clips": {k: a.summary() for k, a in clips.items()}}


def markdown(results, short_side):
  scale = f"flow scaled to short side {short_side}" if short_side else "flow in the stored frames' pixels"
  lines = [f"| split | clip | pairs | frame size | moving share (> 1 px), mean (min) | near-static pairs (< 1 %) "
           f"| median / p90 \\|flow\\| of moving px |", "|---|---|---|---|---|---|---|"]
  for r in results:
    rows = list(r["clips"].items()) + [("**all**", r["all"])]
    for name, s in rows:
      sizes = ", ".join(s["sizes_wh"]) if len(s["sizes_wh"]) <= 2 else f"{len(s['sizes_wh'])} sizes"
      lines.append(f"| {r['split']} | {name} | {s['pairs']} | {sizes} | {s['moving_share_mean']:.2f} "
                   f"({s['moving_share_min']:.2f}) | {s['near_static_pairs']} | {s['median_moving_flow_px']:.2f} / "
                   f"{s['p90_moving_flow_px']:.2f} px |")
  return f"({scale})\n\n" + "\n".join(lines) + "\n"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("data_root")
  p.add_argument("--splits", nargs="+", default=["train", "val"])
  p.add_argument("--short-side", type=int, default=0, help="scale the flow to this frame short side (0: as stored)")
  p.add_argument("--json", help="write the figures here")
  p.add_argument("--md", help="write the markdown table here")
  a = p.parse_args(argv)
  results = [stats(a.data_root, s, a.short_side) for s in a.splits
             if os.path.isfile(os.path.join(a.data_root, "lists", f"{s}.txt"))]
  md = markdown(results, a.short_side)
  print(md)
  if a.json:
    with open(a.json, "w") as f:
      json.dump({"data_root": a.data_root, "short_side": a.short_side, "results": results}, f, indent=1)
  if a.md:
    with open(a.md, "w") as f:
      f.write(md)
  return 0


if __name__ == "__main__":
  sys.exit(main())
