"""Conditional motion propagation: a still image and a few arrows -> dense flow.

    python -m cmp_jax.propagate --config configs/resnet50_vip_mpii_liteflow.py --checkpoint runs/demo \\
        --image photo.jpg --guide 200,150,20,0 --guide 100,300,0,0 \\
        --out_flo flow.flo --out_png flow.png --out_crop marked.png

This is the original's demo (`demos/demo_cmp.ipynb`, reference §7.1) as a command; the work is done by
`cmp_jax.inference` (shared with the demos in `cmp_jax.demos`):

  * Each arrow (x, y, dx, dy) is in pixels of the user's image: (x, y) the start, (dx, dy) the motion;
    dx = dy = 0 pins a still point. The flow comes back at the image's size, in its pixels (u right,
    v down). The network sees the whole image with its short side at config.data.short_size (PIL
    bicubic), padded to a multiple of its stride; the geometry is printed.
  * --frame=crop keeps the original demo's frame instead (for parity checks): the centre crop of
    config.data.crop_size (384 x 384 for the demo config) of the resized image; arrows and flow in
    pixels of that crop.
  * The model runs in eval mode; the flow is the softmax expectation over bins, upsampled with align
    corners (`cmp_jax.losses.predict_flow`), then resampled to the image.

Outputs: a Middlebury .flo (H x W x 2 float32), its colour picture (`cmp_jax.flowviz`), and optionally the
picture the arrows live in (the image, or the crop) with the guidance points marked.

Library use: see `cmp_jax.inference` (`Predictor.load(config, checkpoint).flow(image, arrows)`).
"""

import sys

import numpy as np
from absl import flags

from cmp_jax import cli, flowviz, inference
from cmp_jax.data import formats
# The names this module has always offered, now living in cmp_jax.inference.
from cmp_jax.inference import Frame, normalise, prepare_image, sparse_input  # noqa: F401

PropagateError = inference.InferenceError


def parse_guide(text):
  """'x,y,dx,dy' -> (x, y, dx, dy) floats; PropagateError naming the problem."""
  return inference.parse_arrow(text, "--guide")


def build(config, checkpoint=None):
  """(model, variables, step) for config; random weights (step None) when checkpoint is None."""
  return inference.load_model(config, checkpoint)


def propagate(model, variables, image_rgb, guides, config, frame="image"):
  """Dense flow for a raw RGB image and guides (x, y, dx, dy): in the image's pixels and at its size
  (frame 'image'), or in the demo crop's (frame 'crop')."""
  return inference.Predictor(model, variables, config, frame).flow(image_rgb, guides).flow


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def define_flags(fv):
  inference.define_model_flags(fv)
  flags.DEFINE_multi_string("guide", [], "X,Y,DX,DY: an arrow from image pixel (X, Y) moving by (DX, DY) pixels "
                            "(crop pixels with --frame=crop); 0,0 motion = still point. Repeat for more arrows; a "
                            "later arrow on the same pixel wins.", flag_values=fv)
  flags.DEFINE_string("out_flo", None, "write the flow here (Middlebury .flo)", flag_values=fv)
  flags.DEFINE_string("out_png", None, "write the flow's colour picture here (Middlebury colour code)",
                      flag_values=fv)
  flags.DEFINE_string("out_crop", None, "also write the picture the arrows live in (the image; the crop with "
                      "--frame=crop), guidance marked with red crosses", flag_values=fv)
  flags.DEFINE_boolean("marks", True, "mark the guidance on --out_crop (--nomarks: the bare picture)",
                       flag_values=fv)


def main(argv):
  """The command line (see the module docstring); returns the exit code, 2 for a bad input."""
  return cli.main_of(argv, define_flags, _main, __doc__, required=("config", "image"),
                     user_errors=(PropagateError,))


def _main(args):
  if not (args.out_flo or args.out_png or args.out_crop):
    raise PropagateError("nothing to write: give --out_flo, --out_png and/or --out_crop")
  guides = [parse_guide(g) for g in args.guide]
  config = inference.config_from_flags(args)
  image = inference.read_image(args.image)
  ch, cw = (int(s) for s in config.data.crop_size)
  if args.frame == "crop":
    inference.check_points(guides, cw, ch, "--guide", "crop")  # before anything slow
  else:
    inference.check_points(guides, image.shape[1], image.shape[0], "--guide", "image")
  pred = inference.predictor_from_flags(args, config)
  frame = pred.prepare(image)[1]
  print(frame.describe())
  fmax = pred.fmax / (1.0 if args.frame == "crop" else min(frame.scale))
  if any(abs(g[2]) > fmax or abs(g[3]) > fmax for g in guides):
    print(f"note: an arrow is longer than the model's range of +-{fmax:.4g} px per component; the predicted "
          f"flow saturates there.", file=sys.stderr)
  if not guides:
    print("note: no --guide given: the flow is the model's guess from the image alone.", file=sys.stderr)

  result = pred.flow(image, guides)
  flow = result.flow
  inference.flow_is_finite(flow, f"the model ({args.checkpoint or 'RANDOM'})")
  h, w = flow.shape[:2]
  where = "crop" if args.frame == "crop" else "image"
  mag = np.sqrt((flow ** 2).sum(-1))
  print(f"flow {w}x{h}: mean |flow| {mag.mean():.2f} px, max {mag.max():.2f} px, from {len(guides)} "
        f"guide{'s' if len(guides) != 1 else ''}")
  if args.out_flo:
    formats.write_flo(args.out_flo, flow)
    print(f"wrote {args.out_flo} (Middlebury .flo, {h}x{w}x2 float32: u, v in {where} pixels)")
  if args.out_png:
    flowviz.save_png(args.out_png, flowviz.flow_to_image(flow))
    print(f"wrote {args.out_png} (flow colour code, {w}x{h})")
  if args.out_crop:
    out = result.image if not args.marks or not guides else flowviz.draw_guidance(result.image, guides)
    flowviz.save_png(args.out_crop, out)
    print(f"wrote {args.out_crop} (the {where}, {w}x{h}{', guides marked' if args.marks else ''})")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
