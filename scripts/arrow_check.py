"""Does a model follow arrows? One arrow at a time on one image, with still points elsewhere.

  python scripts/arrow_check.py --config configs/motion_cpu.py:stage3 --checkpoint runs/motion/stage3 \
      [--checkpoint OTHER_RUN ...] [--image data/sample/frames/tree/000056.jpg] [--point=175,60] \
      [--arrows="-8,0 8,0 0,8 -16,0"] [--still="60,110 120,30"] [--out arrows.png] [--config.KEY=VALUE]

For each checkpoint and each arrow (dx, dy) placed at --point, the model propagates that arrow plus the still
points (zero vectors, which tell it what does not move), and this prints the mean predicted flow in the 11 x 11
pixels around the point, next to the arrow, and the median |flow| of the whole image. A model that follows
arrows gives back about the arrow there; one that shrinks them gives a fraction of it. The defaults are the
tree clip's frame 56 (a val clip of the motion recipe, never trained on) with the arrow on the waving hand:
benchmarks/LEARNING.md, sections 9-14. --out writes a picture: a row per checkpoint, the first arrow and the
still points drawn as crosses on the image, then the flow of each arrow in Middlebury colours on one scale
(saturated at the longest arrow's length). Give vectors with `=` (`--arrows=-8,0`), so that a leading minus
is not read as a flag.
"""

import os
import sys

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere: make the cmp_jax package importable
  sys.path.insert(0, ROOT)
from cmp_jax import checkpoint, cli, config_lib, flowviz, inference

WINDOW = 5  # the mean is over (2 * WINDOW + 1)^2 pixels around the arrow's point


def define_flags(fv):
  flags.DEFINE_multi_string("checkpoint", None, "a run, checkpoint folder or packed model (repeat the flag to "
                            "compare several)", flag_values=fv)
  flags.DEFINE_string("image", os.path.join(ROOT, "data/sample/frames/tree/000056.jpg"), "the image",
                      flag_values=fv)
  flags.DEFINE_string("point", "175,60", "X,Y: where each arrow starts (image pixels)", flag_values=fv)
  flags.DEFINE_string("arrows", "-8,0 8,0 0,8 -16,0", "DX,DY ...: the arrows tried, one at a time (px)",
                      flag_values=fv)
  flags.DEFINE_string("still", "60,110 120,30", "X,Y ...: points given zero motion ('' for none)", flag_values=fv)
  flags.DEFINE_string("out", None, "write the picture here (.png)", flag_values=fv)


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


def main(argv):
  """The command line (module docstring); returns the exit code, 2 for a bad input."""
  return cli.main_of(argv, define_flags, _main, __doc__, required=("config", "checkpoint"),
                     user_errors=(inference.InferenceError, checkpoint.CheckpointError, config_lib.ConfigError))


def _main(args):
  config = config_lib.validate(args.config, check_paths=False)
  point = inference.parse_point(args.point, "--point")
  arrows = [inference.parse_point(a, "--arrows") for a in args.arrows.split()]
  still = [inference.parse_point(p, "--still") for p in args.still.split()]
  if not arrows:
    raise cli.UsageError("--arrows: no arrow given")
  image = inference.read_image(args.image)
  h, w = image.shape[:2]
  inference.check_points([point], w, h, "--point")
  inference.check_points(still, w, h, "--still")
  point = (int(point[0]), int(point[1]))
  results = [(path, *check(inference.Predictor.load(config, path), image, point, arrows, still))
             for path in args.checkpoint]

  print(f"{args.image}, arrow at {point}, still points {[tuple(map(int, s)) for s in still]}; mean flow of the "
        f"{2 * WINDOW + 1}x{2 * WINDOW + 1} pixels around the arrow (px):")
  print("| checkpoint | arrow | flow there | median \\|flow\\| of the image |")
  print("|---|---|---|---|")
  for path, rows, _ in results:
    for (dx, dy), (u, v), median in rows:
      print(f"| {path} | ({dx:+g}, {dy:+g}) | ({u:+.2f}, {v:+.2f}) | {median:.2f} |")
  if args.out:
    first = [point + tuple(arrows[0])] + [(sx, sy, 0.0, 0.0) for sx, sy in still]
    marked = flowviz.draw_guidance(image, inference.sparse_input(first, h, w))
    scale = max(float(np.hypot(dx, dy)) for dx, dy in arrows)
    picture = np.concatenate([np.concatenate([marked] + [flowviz.flow_to_image(f, maxrad=scale) for f in flows], 1)
                              for _, _, flows in results], 0)
    flowviz.save_png(args.out, picture)
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  cli.run(main)
