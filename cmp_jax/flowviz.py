"""Flow pictures: the Middlebury colour code, guidance crosses, and PNG writing.

`flow_to_image` follows the original's `utils/flowlib.py` (reference §4.6):
hue from the direction, saturation from the length, lengths normalised by
`maxrad = max(5, max |f|)`, so flows under 5 px stay pale. Two things differ
on purpose and change no picture the original draws from finite flow:
  * the caller's array is never modified (the original zeroed unknown pixels
    in place);
  * NaN pixels are left out of `maxrad` (the original's `max(5, nan)` gave 5
    whenever any pixel was NaN); they are black, as in the original.
`maxrad` is found in the input's float dtype and the rest runs in float64,
as the original's numpy code did, so its pixels are reproduced exactly
(checked against a transcription of flowlib on random float32/float64 flows).
That includes one quirk: with float32 input, a pixel that ties the maximum
length can come out a little over 1 after normalisation (float64 rounding)
and is then darkened (x0.75) like flow beyond maxrad.

`draw_guidance` draws the red crosses of the original's validation images
(`visualize_utils.draw_cross`: arm half-length int(W/50), half-thickness 2).

Flow layout everywhere: H x W x 2, channel 0 = u (x, right), 1 = v (y, down).
"""

import os

import numpy as np
from PIL import Image

from cmp_jax import fileio

UNKNOWN_FLOW_THRESH = 1e7
MIN_MAXRAD = 5.0


def make_color_wheel():
  """The 55 x 3 Middlebury colour wheel (float64, 0..255): RY, YG, GC, CB, BM, MR."""
  ry, yg, gc, cb, bm, mr = 15, 6, 4, 11, 13, 6

  def ramp(n):
    return np.floor(255 * np.arange(n) / n)

  def segment(n, r, g, b):
    s = np.zeros((n, 3))
    s[:, 0], s[:, 1], s[:, 2] = r, g, b
    return s

  segments = [
      segment(ry, 255, ramp(ry), 0),         # red -> yellow
      segment(yg, 255 - ramp(yg), 255, 0),   # yellow -> green
      segment(gc, 0, 255, ramp(gc)),         # green -> cyan
      segment(cb, 0, 255 - ramp(cb), 255),   # cyan -> blue
      segment(bm, ramp(bm), 0, 255),         # blue -> magenta
      segment(mr, 255, 0, 255 - ramp(mr)),   # magenta -> red
  ]
  return np.concatenate(segments, axis=0)


COLOR_WHEEL = make_color_wheel()


def flow_to_image(flow, maxrad=None):
  """Middlebury colour picture of a flow field.

  Args:
    flow: H x W x 2 (u, v) array-like, any float dtype; left unchanged.
    maxrad: the length drawn at full saturation. None (default): as the
      original, max(5, largest finite known length in this flow). Give a fixed
      value to compare several pictures on one scale.
  Returns:
    H x W x 3 uint8 RGB. Zero flow is white; pixels with |u| or |v| > 1e7
    ("unknown") or NaN are black.
  """
  flow = np.asarray(flow)
  if flow.ndim != 3 or flow.shape[-1] != 2:
    raise ValueError(f"flow must be H x W x 2, got shape {flow.shape}")
  if flow.dtype not in (np.float16, np.float32, np.float64):
    flow = flow.astype(np.float64)
  u, v = flow[..., 0], flow[..., 1]
  nan = np.isnan(u) | np.isnan(v)
  unknown = (np.abs(u) > UNKNOWN_FLOW_THRESH) | (np.abs(v) > UNKNOWN_FLOW_THRESH)
  black = nan | unknown
  u = np.where(black, 0, u).astype(flow.dtype)  # new arrays: the caller's flow is untouched
  v = np.where(black, 0, v).astype(flow.dtype)

  if maxrad is None:
    # The largest length in the input's dtype, as the original (so float32
    # flows give the original's pixels exactly); the rest runs in float64.
    rad = np.sqrt(u ** 2 + v ** 2)
    maxrad = max(MIN_MAXRAD, float(rad.max()) if rad.size else 0.0)
  denom = float(maxrad) + np.finfo(np.float64).eps
  u = u.astype(np.float64) / denom
  v = v.astype(np.float64) / denom

  ncols = COLOR_WHEEL.shape[0]
  rad = np.sqrt(u ** 2 + v ** 2)
  a = np.arctan2(-v, -u) / np.pi               # in [-1, 1]; note atan2(-0.0, -x) = -pi
  fk = (a + 1) / 2 * (ncols - 1) + 1           # 1-based position on the wheel, in [1, ncols]
  k0 = np.floor(fk).astype(np.int64)
  k1 = k0 + 1
  k1[k1 == ncols + 1] = 1
  f = (fk - k0)[..., None]
  col = (1 - f) * COLOR_WHEEL[k0 - 1] / 255 + f * COLOR_WHEEL[k1 - 1] / 255

  small = (rad <= 1)[..., None]
  col = np.where(small, 1 - rad[..., None] * (1 - col), col * 0.75)  # pale inside, darker outside
  img = np.floor(255 * col)
  img[black] = 0
  return img.astype(np.uint8)


def _guidance_mask(guidance, height, width):
  """Boolean H x W mask of guidance pixels from a mask, a sparse input, or points."""
  if hasattr(guidance, "shape"):  # numpy or jax array
    guidance = np.asarray(guidance)
  if isinstance(guidance, np.ndarray) and guidance.ndim in (2, 3) and guidance.shape[:2] == (height, width):
    g = guidance
    if g.ndim == 3:
      if g.shape[2] == 4:      # sparse input [u, v, mask, mask]
        g = g[..., 2]
      elif g.shape[2] == 1:
        g = g[..., 0]
      else:
        raise ValueError(f"a guidance array must be H x W (mask), H x W x 1 or H x W x 4 "
                         f"([u, v, mask, mask]); got {g.shape}")
    return np.asarray(g) > 0
  mask = np.zeros((height, width), dtype=bool)
  for p in guidance:
    x, y = int(p[0]), int(p[1])   # truncation toward zero, as the demos place guidance
    if 0 <= x < width and 0 <= y < height:
      mask[y, x] = True
  return mask


def draw_guidance(image, guidance, radius=None, thickness=2, color=(255, 0, 0)):
  """Draws a cross on every guidance pixel, as the original's validation images.

  Args:
    image: H x W x 3 uint8 RGB; left unchanged.
    guidance: one of (an array whose first two sizes are the image's is a mask)
      * an H x W mask (nonzero = guidance pixel) or H x W x 1,
      * an H x W x 4 sparse input [u, v, mask, mask] (channel 2 is used),
      * a sequence of points whose first two entries are x, y in pixels (for
        example propagate's guides (x, y, dx, dy)); coordinates are truncated
        toward zero and points outside the image are skipped.
    radius: arm half-length in pixels; default int(W / 50), as the original.
    thickness: arm half-thickness (the original's 2).
    color: RGB of the crosses (the original's red).
  Returns:
    A new H x W x 3 uint8 image.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"image must be H x W x 3, got shape {image.shape}")
  h, w = image.shape[:2]
  if radius is None:
    radius = int(w / 50)
  mask = _guidance_mask(guidance, h, w)
  out = np.array(image, dtype=np.uint8, copy=True)
  ys, xs = np.nonzero(mask)
  for y, x in zip(ys, xs):
    # A horizontal bar (2r+1 wide, 2t+1 high) and a vertical one, clipped to the image.
    out[max(0, y - thickness):y + thickness + 1, max(0, x - radius):x + radius + 1] = color
    out[max(0, y - radius):y + radius + 1, max(0, x - thickness):x + thickness + 1] = color
  return out


def save_png(path, rgb):
  """Writes an H x W x 3 (or H x W) uint8 array as PNG, atomically (temporary file, then rename)."""
  rgb = np.asarray(rgb)
  if rgb.dtype != np.uint8:
    raise ValueError(f"save_png needs uint8 pixels, got {rgb.dtype}")
  path = os.path.abspath(path)
  with fileio.atomic_path(path) as tmp:
    Image.fromarray(rgb).save(tmp, format="PNG")
  return path
