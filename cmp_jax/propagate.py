"""Conditional motion propagation: a still image and a few arrows -> dense flow.

    python -m cmp_jax.propagate --config configs/resnet50_vip_mpii_liteflow.py --checkpoint runs/demo \\
        --image photo.jpg --guide 200,150,20,0 --guide 100,300,0,0 \\
        --out_flo flow.flo --out_png flow.png --out_crop crop.png

This is the original's demo (`demos/demo_cmp.ipynb`, reference §7.1) as a command and a library:

  * The image is prepared as the demo does: the short side resized to config.data.short_size with PIL
    bicubic (416 for the demo config), then a centre crop to config.data.crop_size (384 x 384), padded
    with black where the resized image is smaller (pad // 2 on top/left), then (x - mean) / std.
  * Each arrow (x, y, dx, dy) is in pixels of that crop: (x, y) the start, (dx, dy) the motion. It sets
    sparse[int(y), int(x)] = (dx, dy) and the mask to 1 in both mask channels (coordinates truncated toward
    zero; when two arrows share a pixel the later one wins). dx = dy = 0 is a static point: "this pixel
    does not move".
  * The model runs in eval mode (BatchNorm running statistics, no dropout); the flow is the softmax
    expectation over bins at the decoder resolution, upsampled (bilinear, align corners) to the crop
    (`cmp_jax.losses.predict_flow`), in pixels of the crop, channel 0 = u (right), 1 = v (down).

Outputs: a Middlebury .flo (crop_h x crop_w x 2 float32), its colour picture (`cmp_jax.flowviz`), and
optionally the crop itself with the guidance points marked, so you can see the frame the arrows live in.

Library use (the demos and tests call this without the command line):

    prop = Propagator(model, variables, config)
    crop, frame = prepare_image(image_rgb, config.data.short_size, config.data.crop_size)
    flow = prop(crop, [(200, 150, 20, 0), (100, 300, 0, 0)])     # H x W x 2 float32
    # or in one call from the raw image:
    flow = propagate(model, variables, image_rgb, guides, config)
"""

import dataclasses
import math
import sys
from typing import Tuple

import jax
import numpy as np
from absl import flags
from PIL import Image

from cmp_jax import checkpoint as ckpt_lib
from cmp_jax import cli, config_lib, flowviz, losses, models
from cmp_jax.data import formats

class PropagateError(ValueError):
  """Bad input to propagate: a guide, an image, or a checkpoint that does not fit the config."""


# ---------------------------------------------------------------------------
# Image preparation (the demo's image_resize + image_crop)
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Frame:
  """Where the crop sits: original (w, h) -> resized (w, h) -> crop of crop_size at (top, left).

  (top, left) is the crop's top-left corner in resized-image pixels; it is negative where the crop
  was padded (the resized image was smaller than the crop). A point (X, Y) of the original image lands
  at crop pixel (X * resized_w / orig_w - left, Y * resized_h / orig_h - top).
  """
  orig_size: Tuple[int, int]
  resized_size: Tuple[int, int]
  crop_size: Tuple[int, int]  # (h, w), as config.data.crop_size
  top: int
  left: int

  def to_crop(self, x, y):
    """Original-image pixel coordinates -> crop pixel coordinates (floats)."""
    (ow, oh), (rw, rh) = self.orig_size, self.resized_size
    return x * rw / ow - self.left, y * rh / oh - self.top

  def describe(self):
    (ow, oh), (rw, rh), (ch, cw) = self.orig_size, self.resized_size, self.crop_size
    pad = " (padded with black)" if self.top < 0 or self.left < 0 or rh < ch or rw < cw else ""
    return (f"image {ow}x{oh} -> resized {rw}x{rh} -> centre crop {cw}x{ch} at x={self.left}, "
            f"y={self.top} of the resized image{pad}")


def resized_size(w, h, short_size):
  """(new_w, new_h) with the short side at short_size; the other side truncated by int(), as the original."""
  if w < h:
    return short_size, int(short_size / float(w) * h)
  return int(short_size / float(h) * w), short_size


def prepare_image(image_rgb, short_size, crop_size):
  """The demo's preprocessing up to normalisation: PIL bicubic short-side resize, then centre crop.

  Args:
    image_rgb: H x W x 3 uint8 RGB array (or a PIL image).
    short_size: the resized short side (config.data.short_size).
    crop_size: (crop_h, crop_w) (config.data.crop_size). Where the resized image is smaller, it is
      padded with black first, pad // 2 on top/left and the rest on bottom/right (reference §3.3).
  Returns:
    (crop, frame): crop_h x crop_w x 3 uint8, and the `Frame` describing the geometry.
  """
  im = image_rgb if isinstance(image_rgb, Image.Image) else Image.fromarray(np.asarray(image_rgb, np.uint8))
  if im.mode != "RGB":
    im = im.convert("RGB")
  w, h = im.size
  nw, nh = resized_size(w, h, int(short_size))
  resized = np.asarray(im.resize((nw, nh), Image.BICUBIC))
  ch, cw = (int(s) for s in crop_size)
  pad_h, pad_w = max(ch - nh, 0), max(cw - nw, 0)
  if pad_h or pad_w:
    resized = np.pad(resized, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
  hoff = (resized.shape[0] - ch) // 2
  woff = (resized.shape[1] - cw) // 2
  crop = np.ascontiguousarray(resized[hoff:hoff + ch, woff:woff + cw])
  frame = Frame(orig_size=(w, h), resized_size=(nw, nh), crop_size=(ch, cw),
                top=hoff - pad_h // 2, left=woff - pad_w // 2)
  return crop, frame


def normalise(image_uint8, mean, std):
  """(x - mean) / std per RGB channel on the 0..255 scale, float32."""
  x = np.asarray(image_uint8, np.float32)
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


# ---------------------------------------------------------------------------
# Guidance
# ---------------------------------------------------------------------------

def parse_guide(text):
  """'x,y,dx,dy' -> (x, y, dx, dy) floats; PropagateError naming the problem."""
  parts = [p.strip() for p in str(text).split(",")]
  if len(parts) != 4:
    raise PropagateError(f"--guide {text!r}: expected four comma-separated numbers x,y,dx,dy "
                         f"(got {len(parts)} field{'s' if len(parts) != 1 else ''})")
  try:
    values = tuple(float(p) for p in parts)
  except ValueError:
    raise PropagateError(f"--guide {text!r}: x,y,dx,dy must all be numbers") from None
  if not all(math.isfinite(v) for v in values):
    raise PropagateError(f"--guide {text!r}: x,y,dx,dy must be finite")
  return values


def sparse_input(guides, height, width):
  """The demo's sparse input: H x W x 4 float32 [u, v, mask, mask].

  For each guide (x, y, dx, dy), in order: sparse[int(y), int(x)] = (dx, dy, 1, 1), so coordinates
  are truncated toward zero and a later guide on the same pixel wins. (dx, dy) = (0, 0) marks a
  static point. Coordinates must lie in the crop: 0 <= x < width, 0 <= y < height.
  """
  sparse = np.zeros((height, width, 4), np.float32)
  for i, g in enumerate(guides):
    if len(g) != 4:
      raise PropagateError(f"guide {i}: expected (x, y, dx, dy), got {tuple(g)!r}")
    x, y, dx, dy = (float(v) for v in g)
    if not all(math.isfinite(v) for v in (x, y, dx, dy)):
      raise PropagateError(f"guide {i} {tuple(g)!r}: values must be finite")
    if not (0 <= x < width and 0 <= y < height):
      raise PropagateError(f"guide {i} starts at (x={x:g}, y={y:g}), outside the {width}x{height} crop: "
                           f"x must be in [0, {width}) and y in [0, {height}) (pixels of the processed "
                           f"crop; write it with --out_crop to see the frame)")
    sparse[int(y), int(x)] = (dx, dy, 1.0, 1.0)
  return sparse


# ---------------------------------------------------------------------------
# Model and checkpoint
# ---------------------------------------------------------------------------

def build(config, checkpoint=None):
  """(model, variables, step) for config; random weights (step None) when checkpoint is None."""
  model = models.build_model(config.model, bn_groups=1)
  ch, cw = (int(s) for s in config.data.crop_size)
  try:
    model.check_input((1, ch, cw, 3), (1, ch, cw, 4))
  except ValueError as e:
    raise PropagateError(f"config.data.crop_size {(ch, cw)}: {e}") from None
  if checkpoint is None:
    return model, models.init_variables(model, jax.random.key(int(config.seed)), ch, cw), None
  try:
    variables, step = ckpt_lib.load_checked(checkpoint, config)
  except ckpt_lib.CheckpointError as e:
    raise PropagateError(str(e)) from None
  return model, variables, step


class Propagator:
  """A model in eval mode with its weights on the device and a jitted image + guidance -> flow.

  `prop(crop_uint8, guides)` -> H x W x 2 float32 flow for one prepared crop (see `prepare_image`);
  `prop.run(images, sparse)` -> [B, H, W, 2] for normalised images [B, H, W, 3] and sparse inputs
  [B, H, W, 4] (e.g. the annotation demo's four probing directions).
  """

  def __init__(self, model, variables, config):
    self.model = model
    self.config = config
    self.variables = jax.device_put({"params": variables["params"],
                                     "batch_stats": variables.get("batch_stats", {})})
    nbins, fmax = int(config.model.nbins), float(config.model.fmax)

    def flow_fn(v, images, sparse):
      logits = model.apply(v, images, sparse, train=False)
      return losses.predict_flow(logits, size=images.shape[1:3], nbins=nbins, fmax=fmax)

    self._flow_fn = jax.jit(flow_fn)

  def run(self, images, sparse):
    images = np.asarray(images, np.float32)
    sparse = np.asarray(sparse, np.float32)
    self.model.check_input(images.shape, sparse.shape)
    return np.asarray(self._flow_fn(self.variables, images, sparse))

  def __call__(self, crop, guides):
    crop = np.asarray(crop)
    h, w = crop.shape[:2]
    image = normalise(crop, self.config.data.image_mean, self.config.data.image_std)
    return self.run(image[None], sparse_input(guides, h, w)[None])[0]


def propagate(model, variables, image_rgb, guides, config):
  """Dense flow (crop_h x crop_w x 2 float32, crop pixels) for a raw RGB image and guides in crop pixels."""
  crop, _ = prepare_image(image_rgb, config.data.short_size, config.data.crop_size)
  return Propagator(model, variables, config)(crop, guides)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def define_flags(fv):
  flags.DEFINE_string("checkpoint", None, "workdir, its checkpoints/ folder, or one step folder; omitted: RANDOM "
                      "weights (only to check the tool runs)", flag_values=fv)
  flags.DEFINE_string("image", None, "input image (any format PIL reads)", flag_values=fv)
  flags.DEFINE_multi_string("guide", [], "X,Y,DX,DY: an arrow from crop pixel (X, Y) moving by (DX, DY) pixels; "
                            "0,0 motion = static point. Repeat for more arrows; a later arrow on the same pixel "
                            "wins.", flag_values=fv)
  flags.DEFINE_string("out_flo", None, "write the flow here (Middlebury .flo)", flag_values=fv)
  flags.DEFINE_string("out_png", None, "write the flow's colour picture here (Middlebury colour code)",
                      flag_values=fv)
  flags.DEFINE_string("out_crop", None, "also write the processed crop here, guidance marked with red crosses",
                      flag_values=fv)
  flags.DEFINE_boolean("marks", True, "mark the guidance on --out_crop (--nomarks: the bare crop)", flag_values=fv)


def main(argv):
  """The command line (see the module docstring); returns the exit code, 2 for a bad input."""
  try:
    args, _ = cli.parse(argv, define_flags, __doc__, required=("config", "image"))
    return _main(args)
  except (cli.UsageError, PropagateError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _main(args):
  if not (args.out_flo or args.out_png or args.out_crop):
    raise PropagateError("nothing to write: give --out_flo, --out_png and/or --out_crop")
  guides = [parse_guide(g) for g in args.guide]
  try:
    config = config_lib.validate(args.config, check_paths=False)
  except config_lib.ConfigError as e:
    raise PropagateError(str(e)) from None
  ch, cw = (int(s) for s in config.data.crop_size)
  sparse_input(guides, ch, cw)  # checks the guides before anything slow
  try:
    image = formats.read_image(args.image, "input image")
  except formats.DataError as e:
    raise PropagateError(str(e)) from None
  crop, frame = prepare_image(image, config.data.short_size, (ch, cw))
  print(frame.describe())

  if args.checkpoint is None:
    print("WARNING: no --checkpoint given: the model has RANDOM weights, so the flow is meaningless "
          "(this run only shows that the tool works).", file=sys.stderr)
  model, variables, step = build(config, args.checkpoint)
  if step is not None:
    print(f"loaded {args.checkpoint} (step {step})")
  fmax = float(config.model.fmax)
  if any(abs(g[2]) > fmax or abs(g[3]) > fmax for g in guides):
    print(f"note: an arrow is longer than the model's range of +-{fmax:g} px per component; the predicted "
          f"flow saturates there.", file=sys.stderr)
  if not guides:
    print("note: no --guide given: the flow is the model's guess from the image alone.", file=sys.stderr)

  flow = Propagator(model, variables, config)(crop, guides)
  if not np.isfinite(flow).all():
    raise PropagateError(f"the model predicted non-finite flow: the weights in {args.checkpoint or 'RANDOM'} hold "
                         "NaN or inf (a diverged training?); nothing was written")
  mag = np.sqrt((flow ** 2).sum(-1))
  print(f"flow {cw}x{ch}: mean |flow| {mag.mean():.2f} px, max {mag.max():.2f} px, from {len(guides)} "
        f"guide{'s' if len(guides) != 1 else ''}")
  if args.out_flo:
    formats.write_flo(args.out_flo, flow)
    print(f"wrote {args.out_flo} (Middlebury .flo, {ch}x{cw}x2 float32: u, v in crop pixels)")
  if args.out_png:
    flowviz.save_png(args.out_png, flowviz.flow_to_image(flow))
    print(f"wrote {args.out_png} (flow colour code, {cw}x{ch})")
  if args.out_crop:
    out = crop if not args.marks or not guides else flowviz.draw_guidance(crop, guides)
    flowviz.save_png(args.out_crop, out)
    print(f"wrote {args.out_crop} (the processed crop, {cw}x{ch}{', guides marked' if args.marks else ''})")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
