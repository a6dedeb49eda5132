"""Does a model follow arrows? One arrow at a time on one image, with still points elsewhere.

  python scripts/arrow_check.py --config configs/motion_cpu.py:stage3 --checkpoint runs/motion/stage3 [RUN ...]
      [--image data/sample/frames/tree/000056.jpg] [--point 175 60] [--arrows="-8,0 8,0 0,8 -16,0"]
      [--still="60,110 120,30"] [--out arrows.png]

For each checkpoint and each arrow (dx, dy) placed at --point, the model propagates that arrow plus the still
points (zero vectors, which tell it what does not move), and this prints the mean predicted flow in the 11 x 11
pixels around the point, next to the arrow, and the median |flow| of the whole image. A model that follows
arrows gives back about the arrow there; one that shrinks them gives a fraction of it. The defaults are the
tree clip's frame 56 (a val clip of the motion recipe, never trained on) with the arrow on the waving hand:
benchmarks/LEARNING.md, sections 9-12. --out writes a picture: a row per checkpoint, the first arrow and the
still points drawn as crosses on the image, then the flow of each arrow in Middlebury colours on one scale
(saturated at the longest arrow's length).
"""

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere: make the cmp_jax package importable
  sys.path.insert(0, ROOT)
from cmp_jax import checkpoint, config_lib, flowviz, inference

WINDOW = 5  # the mean is over (2 * WINDOW + 1)^2 pixels around the arrow's point


def vectors(text):
  """'X,Y X,Y ...' -> [(float, float), ...] (one argument, so that a leading minus is not taken for a flag)."""
  out = []
  for item in text.split():
    try:
      a, b = (float(v) for v in item.split(","))
    except ValueError:
      raise argparse.ArgumentTypeError(f"{item!r} is not two numbers as X,Y") from None
    out.append((a, b))
  return out


def check(model, image, point, arrows, still):
  """Rows (arrow, mean flow around the point, median |flow|) and the flow fields, for one model."""
  x, y = point
  h, w = image.shape[:2]
  rows, flows = [], []
  for dx, dy in arrows:
    flow = model.flow(image, [(x, y, dx, dy)] + [(sx, sy, 0.0, 0.0) for sx, sy in still]).flow
    window = flow[max(y - WINDOW, 0):min(y + WINDOW + 1, h), max(x - WINDOW, 0):min(x + WINDOW + 1, w)]
    rows.append(((dx, dy), window.reshape(-1, 2).mean(0), float(np.median(np.hypot(flow[..., 0], flow[..., 1])))))
    flows.append(flow)
  return rows, flows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="the checkpoints' config file (path[:arg])")
  p.add_argument("--checkpoint", required=True, nargs="+", help="runs, checkpoint folders or packed models")
  p.add_argument("--image", default=os.path.join(ROOT, "data/sample/frames/tree/000056.jpg"))
  p.add_argument("--point", type=int, nargs=2, default=(175, 60), metavar=("X", "Y"), help="where the arrow starts")
  p.add_argument("--arrows", type=vectors, default=[(-8, 0), (8, 0), (0, 8), (-16, 0)], metavar='"DX,DY ..."',
                 help="the arrows tried, one at a time (px)")
  p.add_argument("--still", type=vectors, default=[(60, 110), (120, 30)], metavar='"X,Y ..."',
                 help="points given zero motion ('' for none)")
  p.add_argument("--out", help="write the picture here (.png)")
  args = p.parse_args(argv)
  try:
    config = config_lib.load_config(args.config)
    image = inference.read_image(args.image)
    h, w = image.shape[:2]
    if not args.arrows:
      raise inference.InferenceError("--arrows: no arrow given")
    for name, (x, y) in [("--point", args.point)] + [("--still", s) for s in args.still]:
      if not (0 <= x < w and 0 <= y < h):
        raise inference.InferenceError(f"{name} {x:g},{y:g} is outside {args.image} ({w}x{h})")
    results = []
    for path in args.checkpoint:
      model = inference.Predictor.load(config, path)
      results.append((path, *check(model, image, tuple(args.point), args.arrows, args.still)))
  except (config_lib.ConfigError, inference.InferenceError, checkpoint.CheckpointError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  print(f"{args.image}, arrow at {tuple(args.point)}, still points {[tuple(map(int, s)) for s in args.still]}; "
        f"mean flow of the {2 * WINDOW + 1}x{2 * WINDOW + 1} pixels around the arrow (px):")
  print("| checkpoint | arrow | flow there | median \\|flow\\| of the image |")
  print("|---|---|---|---|")
  for path, rows, _ in results:
    for (dx, dy), (u, v), median in rows:
      print(f"| {path} | ({dx:+g}, {dy:+g}) | ({u:+.2f}, {v:+.2f}) | {median:.2f} |")
  if args.out:
    x, y = args.point
    first = [(x, y) + tuple(args.arrows[0])] + [(sx, sy, 0.0, 0.0) for sx, sy in args.still]
    marked = flowviz.draw_guidance(image, inference.sparse_input(first, h, w))
    scale = max(float(np.hypot(dx, dy)) for dx, dy in args.arrows)
    picture = np.concatenate([np.concatenate([marked] + [flowviz.flow_to_image(f, maxrad=scale) for f in flows], 1)
                              for _, _, flows in results], 0)
    flowviz.save_png(args.out, picture)
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
