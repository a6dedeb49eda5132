"""Semi-automatic annotation: a few clicks on an object -> its mask, by probing how the object would move.

    python -m cmp_jax.demos.annotate --config configs/quickstart.py --checkpoint quickstart \\
        --image data/sample/frames/cockatoo/000000.jpg --positive 140,60 --positive 150,90 \\
        --negative 10,10 --out mask.png [--overlay overlay.png]

The original's annotation demo (`demos/demo_annot.ipynb`, reference §7.3), in the image's pixels:
  * Automatic zoom (with more than one click and zoom_factor != -1): the bounding box of all clicks,
    its centre ((minx + maxx) // 2, (miny + maxy) // 2) and sz = min(max(box w, box h) * zoom_factor, S),
    S the image's short side (the original's crop side). If sz < S, a square of side sz (made even; at
    least MIN_ZOOM px here) centred there is cropped (black outside the image) and resized to
    config.data.crop_size (PIL bicubic, 384 x 384 for the demo config); otherwise the whole image is used
    as everywhere in `cmp_jax.inference`.
  * Four-direction probing (a batch of 4): each positive click gets the guidance (+V, 0), (-V, 0), (0, +V),
    (0, -V) in samples 0..3; each negative click (0, 0) in all four, written after the positive ones.
    V = --velocity in network pixels (the notebook calls it with 30).
  * score = mean |flow| over the 4 samples and 2 channels, divided by its maximum (a zero map stays zero,
    where the original divides by zero); it is resampled back to the image (bilinear; into the zoom box,
    0 outside it) and thresholded: mask = score > th (0.5).
Pixels that move with a click whichever way it is pushed belong to its object; negative clicks pin the
background.
"""

import sys

import numpy as np
from absl import flags
from PIL import Image

from cmp_jax import cli, flowviz, inference
from cmp_jax.data import transforms

MIN_ZOOM = 32  # px: the smallest zoom square (the original has none: two clicks 1 px apart zoom to 4 px)
DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def zoom_box(points, width, height, zoom_factor=4):
  """(x0, y0, sz): the original's automatic zoom square in image pixels, or None for the whole image."""
  if len(points) < 2 or zoom_factor == -1:
    return None
  xs = [int(p[0]) for p in points]
  ys = [int(p[1]) for p in points]
  cx, cy = (min(xs) + max(xs)) // 2, (min(ys) + max(ys)) // 2
  side = min(width, height)
  sz = min(max(max(xs) - min(xs), max(ys) - min(ys)) * zoom_factor, side)
  if sz >= side:
    return None
  sz = max(int(sz) // 2 * 2, MIN_ZOOM)
  if sz >= side:
    return None
  return cx - sz // 2, cy - sz // 2, sz


def zoom_input(image, box, input_size):
  """(input uint8, Frame): the square `box` = (x0, y0, sz) of the image (black outside it) at input_size."""
  x0, y0, sz = box
  ih, iw = input_size
  im = Image.fromarray(np.asarray(image, np.uint8)).crop((x0, y0, x0 + sz, y0 + sz))
  net = np.asarray(im.resize((iw, ih), Image.BICUBIC))
  h, w = np.shape(image)[:2]
  sx, sy = iw / sz, ih / sz
  frame = inference.Frame(image_size=(w, h), resized_size=(w * sx, h * sy), input_size=(ih, iw),
                          top=y0 * sy, left=x0 * sx, kind="zoom")
  return net, frame


def probe_sparse(positive, negative, height, width, velocity):
  """[4, H, W, 4] sparse inputs: positive points pushed +x, -x, +y, -y; negative points pinned (0, 0)."""
  sparse = np.zeros((4, height, width, 4), np.float32)
  pos = np.asarray(positive, np.float64).reshape(-1, 2)
  neg = np.asarray(negative, np.float64).reshape(-1, 2)
  for k, (dx, dy) in enumerate(DIRECTIONS):
    if len(pos):
      transforms.fill_sparse(sparse[k], pos[:, 1].astype(np.int64), pos[:, 0].astype(np.int64),
                             np.array([dx * velocity, dy * velocity], np.float32))
    if len(neg):
      transforms.fill_sparse(sparse[k], neg[:, 1].astype(np.int64), neg[:, 0].astype(np.int64),
                             np.zeros(2, np.float32))
  return sparse


def score_map(flows):
  """mean |flow| over the samples and channels of [B, H, W, 2], divided by its maximum (zero stays zero)."""
  score = np.abs(np.asarray(flows, np.float32)).mean(axis=(0, 3))
  top = score.max()
  return score / top if top > 0 else score


def check_clicks(positive, negative, width, height, frame_name="image"):
  """InferenceError for no positive click, a click outside the picture, or a pixel clicked both ways."""
  if not positive:
    raise inference.InferenceError("no positive click: give at least one --positive X,Y on the object")
  inference.check_points(positive, width, height, "--positive", frame_name)
  inference.check_points(negative, width, height, "--negative", frame_name)
  both = {(int(x), int(y)) for x, y in positive} & {(int(x), int(y)) for x, y in negative}
  if both:
    x, y = sorted(both)[0]
    raise inference.InferenceError(f"pixel (x={x}, y={y}) is clicked both positive and negative: a point cannot "
                                   "be on the object and pinned to the background")


def annotate(predictor, image, positive, negative=(), velocity=30.0, th=0.5, zoom_factor=4):
  """(mask bool, score float32, picture): the object's mask at the picture's size.

  picture is the image (frame 'image') or the demo crop (frame 'crop'), in whose pixels the clicks are.
  """
  positive = [tuple(float(v) for v in p[:2]) for p in positive]
  negative = [tuple(float(v) for v in p[:2]) for p in negative]
  if predictor.frame == "crop":
    picture, _ = predictor.prepare(image)
  else:
    picture = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, np.uint8)
  h, w = picture.shape[:2]
  check_clicks(positive, negative, w, h, "crop" if predictor.frame == "crop" else "image")
  box = zoom_box(positive + negative, w, h, zoom_factor)
  if box is not None:
    net, frame = zoom_input(picture, box, tuple(int(s) for s in predictor.config.data.crop_size))
  elif predictor.frame == "crop":
    net = picture
    frame = inference.Frame(image_size=(w, h), resized_size=(w, h), input_size=(h, w), top=0, left=0, kind="crop")
  else:
    net, frame = predictor.prepare(picture)
  nh, nw = frame.input_size

  def to_net(points):
    out = [frame.to_input(x, y) for x, y in points]
    return [(min(max(x, 0.0), nw - 1e-3), min(max(y, 0.0), nh - 1e-3)) for x, y in out]

  sparse = probe_sparse(to_net(positive), to_net(negative), nh, nw, float(velocity))
  image_n = predictor.normalise(net)
  flows = predictor.run(np.repeat(image_n[None], 4, axis=0), sparse)
  inference.flow_is_finite(flows)
  score = frame.map_to_image(score_map(flows), outside=0.0)
  return score > th, score, picture


def overlay(picture, mask, alpha=0.5, color=(0, 0, 255)):
  """The picture with the mask blended in `color` (the original's blue at alpha 0.5)."""
  out = np.asarray(picture, np.float32).copy()
  out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_clicks(picture, positive, negative):
  """Positive clicks as green crosses, negative ones as red."""
  out = flowviz.draw_guidance(picture, positive, color=(0, 255, 0)) if positive else np.asarray(picture)
  return flowviz.draw_guidance(out, negative, color=(255, 0, 0)) if negative else out


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def define_flags(fv):
  inference.define_model_flags(fv)
  flags.DEFINE_multi_string("positive", [], "X,Y: a click on the object (image pixels); repeat", flag_values=fv)
  flags.DEFINE_multi_string("negative", [], "X,Y: a background point pinned still; repeat", flag_values=fv)
  flags.DEFINE_float("velocity", 30.0, "probe length V in network pixels (the notebook's 30)", flag_values=fv)
  flags.DEFINE_float("th", 0.5, "mask threshold on the normalised score", flag_values=fv)
  flags.DEFINE_integer("zoom_factor", 4, "automatic zoom: the square is max(bbox side) x this; -1: never zoom",
                       flag_values=fv)
  flags.DEFINE_string("out", None, "the mask (PNG, 255 = object) at the image's size", flag_values=fv)
  flags.DEFINE_string("overlay", None, "also the image with the mask in blue and the clicks marked (PNG)",
                      flag_values=fv)


def main(argv):
  return cli.main_of(argv, define_flags, _main, __doc__, required=("config", "image", "out"),
                     user_errors=(inference.InferenceError,))


def _main(args):
  positive = [inference.parse_point(p, "--positive") for p in args.positive]
  negative = [inference.parse_point(p, "--negative") for p in args.negative]
  if not 0 < args.th < 1:
    raise inference.InferenceError(f"--th {args.th}: must be between 0 and 1")
  config = inference.config_from_flags(args)
  image = inference.read_image(args.image)
  if args.frame == "crop":
    ch, cw = (int(s) for s in config.data.crop_size)
    check_clicks(positive, negative, cw, ch, "crop")
  else:
    check_clicks(positive, negative, image.shape[1], image.shape[0])
  pred = inference.predictor_from_flags(args, config)
  mask, score, picture = annotate(pred, image, positive, negative, args.velocity, args.th, args.zoom_factor)
  h, w = mask.shape
  box = zoom_box(positive + negative, w, h, args.zoom_factor)
  print(f"{'zoomed to the %d px square at x=%d, y=%d' % (box[2], box[0], box[1]) if box else 'whole image'}; "
        f"mask: {int(mask.sum())} of {w * h} pixels ({100 * mask.mean():.1f}%)")
  flowviz.save_png(args.out, (mask * 255).astype(np.uint8))
  print(f"wrote {args.out} (mask {w}x{h}, 255 = object)")
  if args.overlay:
    flowviz.save_png(args.overlay, draw_clicks(overlay(picture, mask), positive, negative))
    print(f"wrote {args.overlay} (mask in blue, positive clicks green, negative red)")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
