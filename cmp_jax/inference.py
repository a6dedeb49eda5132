"""Inference: a trained CMP, a user's image and arrows in its pixels -> dense flow at the image's size.

The one implementation behind `cmp_jax.propagate`, the demos (`cmp_jax.demos.animate`, `.annotate`, `.app`):

    config = config_lib.load_config("configs/resnet50_vip_mpii_liteflow.py")
    pred = Predictor.load(config, "runs/demo")            # a workdir, a from-torch folder or a short name
    result = pred.flow(image_rgb, [(200, 150, 20, 0), (100, 300, 0, 0)])
    result.flow        # H x W x 2 float32 at the image's size, in the image's pixels (u right, v down)

Model. `load_model(config, checkpoint)` loads a checkpoint of `train.py` (a workdir, its checkpoints/ folder
or one step folder), a `convert from-torch` output folder, or a short name from `MODELS` (the model shipped
with the repository, `quickstart`: the run `bash quickstart.sh` writes). Weights are orbax arrays, read
without executing code, and refused when they are not of the config's architecture
(`checkpoint.load_checked`).

Image preparation (`prepare_image`), two network frames:
  * frame='image' (the default): the short side is resized to config.data.short_size (PIL bicubic; the
    long side truncated by int(), as the original), then padded with black to a multiple of the
    network's input stride (pad // 2 on top/left). The network sees the whole image; arrows are given in
    the user's image pixels and mapped in, the flow is mapped back to the image's size and pixels.
  * frame='crop': the original demo's preparation exactly (reference §7.1): the same resize, then the
    centre crop to config.data.crop_size (384 x 384 for the demo config; black padding where smaller).
    Arrows and the flow are in pixels of that crop, as the original notebook (for parity checks).
Both use `cmp_jax.data.transforms` (resized_size, crop_offsets, crop_window, resize_crop_image), the
functions the training/validation pipeline crops its frames with, and its `normalise` ((x - mean) / std).

Sparse input (`sparse_input`): for each arrow (x, y, dx, dy) in network pixels, in order,
sparse[int(y), int(x)] = (dx, dy, 1, 1) (`transforms.fill_sparse`, the pipeline's): coordinates truncated
toward zero, a later arrow on the same pixel wins, (0, 0) pins a still point. In frame='image' an arrow
(X, Y, DX, DY) of the image becomes (X * sx - left, Y * sy - top, DX * sx, DY * sy) with sx, sy the resize
factors (`Frame`).

Run and decode: the model in eval mode (BatchNorm running statistics, no dropout), the flow is the softmax
expectation over the bins at the decoder's resolution, upsampled with align corners to the input
(`losses.predict_flow`), then (frame='image') resampled to the image's pixel grid (bilinear, at pixel
centres) and divided by sx, sy. The network predicts at most +-config.model.fmax px per component in its
own frame, i.e. +-fmax / sx in the image.
"""

import dataclasses
import math
import os
from typing import Sequence, Tuple

import cv2
import jax
import numpy as np
from PIL import Image

from cmp_jax import checkpoint as ckpt_lib
from cmp_jax import losses, models
from cmp_jax.data import formats, transforms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Short names for --checkpoint: (config file, checkpoint folder), relative to the repository. `quickstart` is
# the model the repository ships the recipe for (bash quickstart.sh writes it, ~6 min on 2 CPU cores); a
# better shipped model is added here. `demo` is the original's released demo model after `convert
# from-torch` (README, "Demos").
MODELS = {
    "quickstart": ("configs/quickstart.py", "runs/quickstart"),
    "demo": ("configs/resnet50_vip_mpii_liteflow.py", "runs/demo"),
}

MAX_IMAGE_SIDE = 8000  # the demos refuse larger images (pixels a side)


class InferenceError(ValueError):
  """Bad input to inference: an arrow, an image, a checkpoint that does not fit the config."""


# ---------------------------------------------------------------------------
# Image preparation
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Frame:
  """Where the network input sits in the user's image.

  image (w, h) -> resized (w, h) -> the network input of input_size (h, w), whose pixel (0, 0) is at
  (top, left) of the resized image (negative where padded). A point (X, Y) of the image lands at input
  pixel (X * sx - left, Y * sy - top), sx = resized_w / image_w, sy = resized_h / image_h.
  kind: 'image' (whole image, padded) or 'crop' (the original demo's centre crop).
  """
  image_size: Tuple[int, int]
  resized_size: Tuple[int, int]
  input_size: Tuple[int, int]  # (h, w), as config.data.crop_size
  top: int
  left: int
  kind: str = "image"

  @property
  def scale(self):
    (iw, ih), (rw, rh) = self.image_size, self.resized_size
    return rw / iw, rh / ih

  def to_input(self, x, y):
    """Image pixel coordinates -> network input pixel coordinates (floats)."""
    sx, sy = self.scale
    return x * sx - self.left, y * sy - self.top

  to_crop = to_input  # the name cmp_jax.propagate used

  def arrows_to_input(self, arrows):
    """Arrows (x, y, dx, dy) in image pixels -> in network input pixels."""
    sx, sy = self.scale
    return [(*self.to_input(x, y), dx * sx, dy * sy) for x, y, dx, dy in arrows]

  def map_to_image(self, values, interpolation=cv2.INTER_LINEAR, outside=None):
    """An input-frame map (H x W or H x W x C) resampled at the image's pixel centres: image_h x image_w.

    Where the image lies outside the input: the input's border values, or `outside` if given."""
    (iw, ih), (sx, sy) = self.image_size, self.scale
    xs = (np.arange(iw, dtype=np.float32) + 0.5) * sx - 0.5 - self.left
    ys = (np.arange(ih, dtype=np.float32) + 0.5) * sy - 0.5 - self.top
    mx, my = np.meshgrid(xs, ys)
    values = np.asarray(values, np.float32)
    if outside is None:
      out = cv2.remap(values, mx, my, interpolation, borderMode=cv2.BORDER_REPLICATE)
    else:
      out = cv2.remap(values, mx, my, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=float(outside))
    return out.reshape((ih, iw) + values.shape[2:])

  def flow_to_image(self, flow):
    """A flow of the network input (H x W x 2, input pixels) -> at the image's size, in image pixels."""
    sx, sy = self.scale
    out = self.map_to_image(flow)
    out[..., 0] /= sx
    out[..., 1] /= sy
    return out

  def describe(self):
    (iw, ih), (rw, rh), (ch, cw) = self.image_size, self.resized_size, self.input_size
    if self.kind == "crop":
      pad = " (padded with black)" if self.top < 0 or self.left < 0 or rh < ch or rw < cw else ""
      return (f"image {iw}x{ih} -> resized {rw}x{rh} -> centre crop {cw}x{ch} at x={self.left}, "
              f"y={self.top} of the resized image{pad}")
    pad = f", padded to {cw}x{ch}" if (cw, ch) != (rw, rh) else ""
    return f"image {iw}x{ih} -> resized {rw}x{rh}{pad} (the network sees the whole image)"


def resized_size(w, h, short_size):
  """(new_w, new_h) with the short side at short_size (the pipeline's `transforms.resized_size`)."""
  return transforms.resized_size(w, h, int(short_size))


def _to_pil(image):
  im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
  return im.convert("RGB") if im.mode != "RGB" else im


def prepare_image(image, short_size, crop_size=None, multiple=8):
  """The network input for an RGB image and where it sits (`Frame`).

  Args:
    image: H x W x 3 uint8 RGB array (or a PIL image).
    short_size: the resized short side (config.data.short_size).
    crop_size: (crop_h, crop_w): the original demo's centre crop (frame 'crop'), padded with black where
      the resized image is smaller (pad // 2 on top/left, reference §3.3). None: the whole resized image,
      padded with black to a multiple of `multiple` (frame 'image').
    multiple: the network's input stride (model.input_multiple), for crop_size None.
  Returns:
    (input uint8 H x W x 3, Frame).
  """
  im = _to_pil(image)
  w, h = im.size
  size = resized_size(w, h, short_size)
  if crop_size is None:
    nw, nh = size
    out = (-(-nh // multiple) * multiple, -(-nw // multiple) * multiple)
    kind = "image"
  else:
    out, kind = tuple(int(s) for s in crop_size), "crop"
  hoff, woff = transforms.crop_offsets(size, out, False, None)
  window = transforms.crop_window(size, out, hoff, woff)
  net = transforms.resize_crop_image(im, size, window, out, whole=True)
  t, l, _, _, dy, dx = window
  return net, Frame(image_size=(w, h), resized_size=size, input_size=out, top=t - dy, left=l - dx, kind=kind)


def normalise(image_uint8, mean, std):
  """(x - mean) / std per RGB channel on the 0..255 scale, float32 (`transforms.normalise`)."""
  return transforms.normalise(np.asarray(image_uint8, np.uint8), transforms.normalise_table(mean, std))


def read_image(path, max_side=MAX_IMAGE_SIDE):
  """An image file as H x W x 3 uint8 RGB; InferenceError naming the file if unreadable or too large."""
  try:
    with Image.open(path) as im:
      w, h = im.size
  except FileNotFoundError:
    raise InferenceError(f"image {path}: no such file") from None
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise InferenceError(f"image {path}: not a readable image ({e})") from None
  if max(w, h) > max_side:
    raise InferenceError(f"image {path} is {w}x{h}: larger than {max_side} px a side")
  try:
    return formats.read_image(path, "image")
  except formats.DataError as e:
    raise InferenceError(str(e)) from None


# ---------------------------------------------------------------------------
# Arrows and points
# ---------------------------------------------------------------------------

_WORDS = {2: "two", 4: "four"}


def _parse_numbers(text, n, what, names):
  parts = [p.strip() for p in str(text).split(",")]
  if len(parts) != n:
    raise InferenceError(f"{what} {text!r}: expected {_WORDS.get(n, n)} comma-separated numbers {names} "
                         f"(got {len(parts)} field{'s' if len(parts) != 1 else ''})")
  try:
    values = tuple(float(p) for p in parts)
  except ValueError:
    raise InferenceError(f"{what} {text!r}: {names} must all be numbers") from None
  if not all(math.isfinite(v) for v in values):
    raise InferenceError(f"{what} {text!r}: {names} must be finite")
  return values


def parse_arrow(text, what="--guide"):
  """'x,y,dx,dy' -> (x, y, dx, dy) floats; InferenceError naming the problem."""
  return _parse_numbers(text, 4, what, "x,y,dx,dy")


def parse_point(text, what="point"):
  """'x,y' -> (x, y) floats; InferenceError naming the problem."""
  return _parse_numbers(text, 2, what, "x,y")


def check_points(points, width, height, what="arrow", frame_name="image"):
  """Raises InferenceError unless every point (x, y, ...) lies in [0, width) x [0, height)."""
  for i, p in enumerate(points):
    if len(p) < 2:
      raise InferenceError(f"{what} {i}: expected (x, y, ...), got {tuple(p)!r}")
    vals = [float(v) for v in p]
    if not all(math.isfinite(v) for v in vals):
      raise InferenceError(f"{what} {i} {tuple(p)!r}: values must be finite")
    x, y = vals[:2]
    if not (0 <= x < width and 0 <= y < height):
      raise InferenceError(f"{what} {i} at (x={x:g}, y={y:g}) is outside the {width}x{height} {frame_name}: "
                           f"x must be in [0, {width}) and y in [0, {height}) ({frame_name} pixels)")


def sparse_input(arrows, height, width, frame_name="crop"):
  """The network's guidance input: H x W x 4 float32 [u, v, mask, mask] for arrows in its pixels.

  For each arrow (x, y, dx, dy), in order: sparse[int(y), int(x)] = (dx, dy, 1, 1) (`transforms.fill_sparse`):
  coordinates truncated toward zero, a later arrow on the same pixel wins, (0, 0) is a still point.
  """
  for i, a in enumerate(arrows):
    if len(a) != 4:
      raise InferenceError(f"arrow {i}: expected (x, y, dx, dy), got {tuple(a)!r}")
  check_points(arrows, width, height, "arrow", frame_name)
  sparse = np.zeros((height, width, 4), np.float32)
  if len(arrows):
    a = np.asarray(arrows, np.float64)
    transforms.fill_sparse(sparse, a[:, 1].astype(np.int64), a[:, 0].astype(np.int64), a[:, 2:4])
  return sparse


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

def resolve_checkpoint(checkpoint):
  """A --checkpoint value -> a path: a short name of `MODELS` (its folder in the repository) or a path."""
  if checkpoint in MODELS and not os.path.exists(checkpoint):
    config_file, folder = MODELS[checkpoint]
    path = os.path.join(ROOT, folder)
    if not os.path.isdir(path):
      how = ("bash quickstart.sh" if checkpoint == "quickstart" else
             "python -m cmp_jax.convert from-torch ckpt_iter_42000.pth.tar --config "
             "configs/resnet50_vip_mpii_liteflow.py --out runs/demo (README, Demos)")
      raise InferenceError(f"--checkpoint {checkpoint}: the model {checkpoint!r} is not there yet ({path}); "
                           f"make it with: {how} (its config: {config_file})")
    return path
  return checkpoint


def load_model(config, checkpoint=None):
  """(model, variables, step) for config; random weights (step None) when checkpoint is None.

  checkpoint: a workdir, its checkpoints/ folder, one step folder, a `convert from-torch` folder, or a
  short name of `MODELS`. Raises InferenceError for a checkpoint that is missing or of another model.
  """
  model = models.build_model(config.model, bn_groups=1)
  ch, cw = (int(s) for s in config.data.crop_size)
  try:
    model.check_input((1, ch, cw, 3), (1, ch, cw, 4))
  except ValueError as e:
    raise InferenceError(f"config.data.crop_size {(ch, cw)}: {e}") from None
  if checkpoint is None:
    return model, models.init_variables(model, jax.random.key(int(config.seed)), ch, cw), None
  try:
    variables, step = ckpt_lib.load_checked(resolve_checkpoint(checkpoint), config)
  except ckpt_lib.CheckpointError as e:
    raise InferenceError(str(e)) from None
  return model, variables, step


@dataclasses.dataclass
class FlowResult:
  """What `Predictor.flow` returns.

  flow: H x W x 2 float32 in the caller's frame (the image's pixels and size for frame 'image', the
  crop's for 'crop'); image: the picture that flow belongs to (the user's image, or the crop);
  input_flow / input_image: the network's own frame; frame: the geometry; arrows: as given.
  """
  flow: np.ndarray
  image: np.ndarray
  input_flow: np.ndarray
  input_image: np.ndarray
  frame: Frame
  arrows: Sequence[Tuple[float, float, float, float]]


class Predictor:
  """A model in eval mode with its weights on the device and a jitted normalised image + sparse -> flow.

    pred = Predictor.load(config, checkpoint)        # or Predictor(model, variables, config)
    pred.flow(image, arrows).flow                    # arrows and flow in the image's pixels
    pred.run(images, sparse)                         # [B,H,W,3] normalised, [B,H,W,4] -> [B,H,W,2]

  frame: 'image' (default) or 'crop' (the original demo's centre crop; arrows and flow in crop pixels).
  """

  def __init__(self, model, variables, config, frame="image"):
    if frame not in ("image", "crop"):
      raise InferenceError(f"frame must be 'image' or 'crop', got {frame!r}")
    self.model = model
    self.config = config
    self.frame = frame
    self.step = None
    self.variables = jax.device_put({"params": variables["params"],
                                     "batch_stats": variables.get("batch_stats", {})})
    self._table = transforms.normalise_table(config.data.image_mean, config.data.image_std)
    nbins, fmax = int(config.model.nbins), float(config.model.fmax)

    def flow_fn(v, images, sparse):
      logits = model.apply(v, images, sparse, train=False)
      return losses.predict_flow(logits, size=images.shape[1:3], nbins=nbins, fmax=fmax)

    self._flow_fn = jax.jit(flow_fn)

  @classmethod
  def load(cls, config, checkpoint, frame="image"):
    model, variables, step = load_model(config, checkpoint)
    pred = cls(model, variables, config, frame)
    pred.step = step
    return pred

  @property
  def input_multiple(self):
    return int(self.model.input_multiple)

  @property
  def fmax(self):
    return float(self.config.model.fmax)

  def prepare(self, image, frame=None):
    """(network input uint8, Frame) of an RGB image in this predictor's frame."""
    crop = self.config.data.crop_size if (frame or self.frame) == "crop" else None
    return prepare_image(image, self.config.data.short_size, crop, self.input_multiple)

  def normalise(self, image_uint8):
    return transforms.normalise(image_uint8, self._table)

  def run(self, images, sparse):
    """Flow [B, H, W, 2] of normalised images [B, H, W, 3] and sparse inputs [B, H, W, 4]."""
    images = np.asarray(images, np.float32)
    sparse = np.asarray(sparse, np.float32)
    try:
      self.model.check_input(images.shape, sparse.shape)
    except ValueError as e:
      raise InferenceError(str(e)) from None
    return np.asarray(self._flow_fn(self.variables, images, sparse))

  def input_flow(self, input_image, arrows):
    """The flow of one prepared input (uint8) for arrows in its pixels: H x W x 2."""
    h, w = np.shape(input_image)[:2]
    sparse = sparse_input(arrows, h, w, "network input")
    return self.run(self.normalise(input_image)[None], sparse[None])[0]

  def check_arrows(self, image, arrows, what="arrow"):
    """Raises InferenceError unless the arrows start inside the image (of this predictor's frame)."""
    im = _to_pil(image)
    if self.frame == "crop":
      ch, cw = (int(s) for s in self.config.data.crop_size)
      check_points(arrows, cw, ch, what, "crop")
    else:
      check_points(arrows, im.size[0], im.size[1], what, "image")

  def flow(self, image, arrows):
    """`FlowResult` for an RGB image and arrows (x, y, dx, dy) in its pixels (frame 'image') or in the
    pixels of the demo's crop (frame 'crop')."""
    arrows = [tuple(float(v) for v in a) for a in arrows]
    for i, a in enumerate(arrows):
      if len(a) != 4:
        raise InferenceError(f"arrow {i}: expected (x, y, dx, dy), got {a!r}")
    self.check_arrows(image, arrows)
    net, frame = self.prepare(image)
    if self.frame == "crop":
      flow = self.input_flow(net, arrows)
      return FlowResult(flow, net, flow, net, frame, arrows)
    net_arrows = frame.arrows_to_input(arrows)
    ih, iw = frame.input_size
    # An arrow inside the image always lands inside the input; clip the last sub-pixel of rounding.
    net_arrows = [(min(max(x, 0.0), iw - 1e-3), min(max(y, 0.0), ih - 1e-3), dx, dy) for x, y, dx, dy in net_arrows]
    flow_in = self.input_flow(net, net_arrows)
    return FlowResult(frame.flow_to_image(flow_in), np.asarray(_to_pil(image)), flow_in, net, frame, arrows)


def flow_is_finite(flow, where="the model"):
  """Raises InferenceError if a predicted flow holds NaN or inf (diverged weights)."""
  if not np.isfinite(flow).all():
    raise InferenceError(f"{where} predicted non-finite flow: the weights hold NaN or inf (a diverged "
                         "training?); nothing was written")


# ---------------------------------------------------------------------------
# What the command lines share (propagate and the demos)
# ---------------------------------------------------------------------------

def define_model_flags(fv, image=True):
  """--checkpoint, --image and --frame, as every inference tool takes them."""
  from absl import flags
  flags.DEFINE_string("checkpoint", None, "a training workdir, its checkpoints/ folder, one step folder, a "
                      f"`convert from-torch` folder, or a short name ({', '.join(MODELS)}); omitted: RANDOM "
                      "weights (only to check the tool runs)", flag_values=fv)
  if image:
    flags.DEFINE_string("image", None, "input image (any format PIL reads)", flag_values=fv)
  flags.DEFINE_enum("frame", "image", ["image", "crop"], "image: coordinates and results in the image's pixels "
                    "(the network sees the whole image); crop: in pixels of the original demo's centre crop "
                    "of config.data.crop_size (for parity checks)", flag_values=fv)


def config_from_flags(args):
  """The validated config of a parsed command line (InferenceError on a bad one)."""
  from cmp_jax import config_lib
  try:
    return config_lib.validate(args.config, check_paths=False)
  except config_lib.ConfigError as e:
    raise InferenceError(str(e)) from None


def predictor_from_flags(args, config, log=print):
  """Predictor.load for --checkpoint/--frame, saying what was loaded (a WARNING for random weights)."""
  import sys
  if args.checkpoint is None:
    print("WARNING: no --checkpoint given: the model has RANDOM weights, so the result is meaningless "
          "(this run only shows that the tool works).", file=sys.stderr)
  pred = Predictor.load(config, args.checkpoint, args.frame)
  if pred.step is not None:
    log(f"loaded {args.checkpoint} (step {pred.step})")
  return pred
