"""How well can the guidance alone do, and how much does the loss's quantisation cost, on a config's val set?

  python scripts/guidance_baselines.py --config configs/motion_cpu.py [--fmax 50 25]

Reads the val pairs exactly as validation does (centre crops, guidance from the config's sampler), and prints
per clip, EPE in px over all pixels (moving pixels, |flow| > 1 px):
  * fills of the dense flow from the guidance alone: nearest point (validation's baseline), linear
    (Delaunay triangles; nearest outside their hull) and inverse-distance weights (power 4);
  * for each --fmax, the error of a perfect classifier under the original's DiscreteLoss: every pixel's
    target flow quantised to its bin of 99 over +-fmax and decoded at the bin centre (flow beyond fmax
    clipped): the floor that hard-bin targets put under a model's error.
No model is involved. benchmarks/LEARNING.md, section 10, shows what it printed for the motion recipe.
"""

import argparse
import collections
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere: make the cmp_jax package importable
  sys.path.insert(0, ROOT)
from cmp_jax import config_lib, losses
from cmp_jax.evaluators.flow import (MOVING_THRESHOLD, idw_guidance_flow, linear_guidance_flow,
                                     nearest_guidance_flow)


def quantised(flow, fmax, nbins=99):
  """Target flow at the centre of its DiscreteLoss bin (flow beyond +-fmax clipped)."""
  return np.asarray(losses.bin_centres(nbins, fmax))[np.asarray(losses.flow_to_bins(flow, nbins, fmax))]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="a config file (path[:arg]); its val list and sampler are used")
  p.add_argument("--fmax", type=float, nargs="*", default=[], help="loss flow ranges to show the floor of "
                 "(default: the config's model.fmax)")
  args = p.parse_args(argv)
  try:
    config = config_lib.load_config(args.config)
  except (config_lib.ConfigError, OSError, ValueError) as e:
    print(f"--config {args.config}: {e}", file=sys.stderr)
    return 2
  from cmp_jax.data import pipeline  # TensorFlow: only once the config is known to be good
  from cmp_jax.validate import clip_of_each_pair
  config.val_batch_size = 8
  clips = clip_of_each_pair(config)  # None for TFRecord val data: one group, "all"
  fills = {"nearest": nearest_guidance_flow, "linear": linear_guidance_flow, "idw4": idw_guidance_flow}
  fills.update({f"bins fmax {f:g}": (lambda f_: lambda s, flow: quantised(flow, f_))(f)
                for f in (args.fmax or [float(config.model.fmax)])})
  sums = collections.defaultdict(lambda: np.zeros(4))  # (group, method) -> epe, epe moving, pixels, moving
  it = pipeline.make_val_iterator(config, process_index=0, process_count=1, local_devices=1)
  for batch in it:
    for sparse, flow, valid, index in zip(batch["sparse"], batch["flow"], batch["valid"], batch["index"]):
      if not valid:
        continue
      moving = np.sqrt(np.sum(np.square(flow), -1)) > MOVING_THRESHOLD
      for name, fill in fills.items():
        pred = fill(sparse, flow) if name.startswith("bins") else fill(sparse)
        epe = np.sqrt(np.sum(np.square(pred - flow), -1))
        for group in {"all", clips[int(index)] if clips else "all"}:
          sums[group, name] += (epe.sum(), epe[moving].sum(), epe.size, moving.sum())
  groups = ["all"] + sorted({g for g, _ in sums} - {"all"})
  print("| fill | " + " | ".join(groups) + " |")
  print("|---" * (len(groups) + 1) + "|")
  for name in fills:
    cells = [f"{s[0] / s[2]:.3f} ({s[1] / max(s[3], 1):.3f})" for s in (sums[g, name] for g in groups)]
    print(f"| {name} | " + " | ".join(cells) + " |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
