"""Synthetic motion on real photos, with exact flow, written in `prepare`'s on-disk format.

Not in the original. Each pair is made of layers, as in FlyingChairs: a background (a random crop of one photo)
and 0 to `max_objects` objects (a random crop of another photo, cut out with a random ellipse or star-shaped
polygon). Every layer moves by its own random similarity transform (translation, rotation, zoom about its
centre); the background stays still with probability `still_background`, as under a fixed camera. Frame 1
composites the layers in place, frame 2 composites them moved, and the flow of a frame-1 pixel is the motion of
the topmost layer there. So the flow is exact and its edges are exactly the objects' edges in frame 1.

Translation lengths are log-uniform in [min_shift, max_shift] px with a uniform direction, so large motions (the
ones that make a model read its guidance) are as common per octave as small ones. A draw whose flow reaches
`FLOW_LIMIT` px anywhere is drawn again: the JPEG flow planes hold +-50 px.

  python -m cmp_jax.data.synthetic --photos 'DATA/frames/bikes/*.jpg' ... --out DATA --pairs 1200

writes DATA/frames/<name>/NNNNNN_{1,2}.jpg, DATA/flows/<name>/NNNNNN_{x,y}.jpg, DATA/lists/<name>.txt (one
`img1 img2 flow_x flow_y` line per pair, paths relative to DATA, the list written last) and
DATA/<name>.json (the options and the flow statistics). Add the list to `data.train_source`.
"""

import argparse
import dataclasses
import glob
import json
import os
import sys
import time
from typing import Tuple

import cv2
import numpy as np

from cmp_jax import fileio
from cmp_jax.data import formats

FLOW_LIMIT = 48.0  # px; formats' JPEG flow planes clip at 50


@dataclasses.dataclass(frozen=True)
class SynthOptions:
  photos: Tuple[str, ...]  # image files (globs expanded)
  out: str                 # dataset folder (the config's data_root)
  pairs: int = 1200
  name: str = "synth"
  size: Tuple[int, int] = (192, 256)  # (height, width) of the frames
  max_objects: int = 3
  still_background: float = 0.3
  min_shift: float = 0.5
  max_shift: float = 20.0
  background_rotate: float = 5.0   # degrees, uniform in +-
  background_zoom: float = 0.05    # zoom factor uniform in 1 +- this
  object_rotate: float = 15.0
  object_zoom: float = 0.1
  object_radius: Tuple[float, float] = (0.12, 0.35)  # fraction of the short side
  seed: int = 0
  jpeg_quality: int = 95
  flow_jpeg_quality: int = 100

  def check(self):
    """Raises ValueError naming the first bad option."""
    if not self.photos:
      raise ValueError("--photos: no image files matched")
    if self.pairs < 1:
      raise ValueError(f"--pairs {self.pairs}: must be at least 1")
    if min(self.size) < 32:
      raise ValueError(f"--size {self.size[0]}x{self.size[1]}: both sides must be at least 32")
    if not 0 < self.min_shift <= self.max_shift < FLOW_LIMIT / 2:
      raise ValueError(f"--min-shift {self.min_shift} / --max-shift {self.max_shift}: need 0 < min <= max < "
                       f"{FLOW_LIMIT / 2:g}")
    if not 0 <= self.still_background <= 1:
      raise ValueError(f"--still-background {self.still_background}: must be in [0, 1]")
    if self.max_objects < 0:
      raise ValueError(f"--max-objects {self.max_objects}: must be at least 0")
    if not any(c.isalnum() for c in self.name) or any(c in self.name for c in "/\\ \t"):
      raise ValueError(f"--name {self.name!r}: must be a plain folder name")


def similarity(center, shift, angle_deg, zoom):
  """2x3 matrix moving points by rotation and zoom about `center` (x, y), then by `shift` (dx, dy)."""
  m = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), float(angle_deg), float(zoom))
  m[:, 2] += shift
  return m


def displacement(m, height, width):
  """H x W x 2 float32: where each pixel (x, y) goes under the 2x3 matrix m, minus (x, y)."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  u = m[0, 0] * x + m[0, 1] * y + m[0, 2] - x
  v = m[1, 0] * x + m[1, 1] * y + m[1, 2] - y
  return np.stack([u, v], axis=-1).astype(np.float32)


def _shift(rng, o):
  length = np.exp(rng.uniform(np.log(o.min_shift), np.log(o.max_shift)))
  angle = rng.uniform(0, 2 * np.pi)
  return np.array([length * np.cos(angle), length * np.sin(angle)])


def _crop(photo, size, rng):
  """A random crop of `size` (h, w) from the photo, zoomed in by up to 1.5x (scaled up if the photo is small)."""
  h, w = size
  ph, pw = photo.shape[:2]
  scale = max(h / ph, w / pw) * rng.uniform(1.0, 1.5)
  nh, nw = max(h, int(np.ceil(ph * scale))), max(w, int(np.ceil(pw * scale)))
  im = cv2.resize(photo, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
  y0, x0 = rng.integers(0, nh - h + 1), rng.integers(0, nw - w + 1)
  return im[y0:y0 + h, x0:x0 + w]


def _shape(size, radius, rng):
  """A filled ellipse or star-shaped polygon (uint8 0/1 mask) and its centre (x, y)."""
  h, w = size
  cx, cy = rng.uniform(0, w), rng.uniform(0, h)
  mask = np.zeros((h, w), np.uint8)
  if rng.random() < 0.5:
    axes = (int(radius), int(radius * rng.uniform(0.4, 1.0)))
    cv2.ellipse(mask, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
  else:
    n = rng.integers(5, 10)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.5, 1.0, n)
    pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], -1).round().astype(np.int32)
    cv2.fillPoly(mask, [pts], 1)
  return mask, (cx, cy)


def make_pair(photos, options, rng):
  """(frame1, frame2, flow): two H x W x 3 uint8 frames and the exact H x W x 2 float32 flow of frame 1.

  photos: a callable returning a random RGB uint8 photo, given rng."""
  o = options
  h, w = o.size
  while True:
    layers = []  # (texture, mask or None, 2x3 matrix), bottom first
    if rng.random() < o.still_background:
      bg_m = similarity((w / 2, h / 2), (0.0, 0.0), 0.0, 1.0)
    else:
      bg_m = similarity((w / 2, h / 2), _shift(rng, o), rng.uniform(-1, 1) * o.background_rotate,
                        1 + rng.uniform(-1, 1) * o.background_zoom)
    layers.append((_crop(photos(rng), o.size, rng), None, bg_m))
    for _ in range(rng.integers(0, o.max_objects + 1)):
      radius = rng.uniform(*o.object_radius) * min(h, w)
      mask, center = _shape(o.size, radius, rng)
      if not mask.any():
        continue
      m = similarity(center, _shift(rng, o), rng.uniform(-1, 1) * o.object_rotate,
                     1 + rng.uniform(-1, 1) * o.object_zoom)
      layers.append((_crop(photos(rng), o.size, rng), mask, m))
    flow = displacement(bg_m, h, w)
    for _, mask, m in layers[1:]:
      flow[mask > 0] = displacement(m, h, w)[mask > 0]
    if np.abs(flow).max() < FLOW_LIMIT:
      break
  frame1 = layers[0][0].copy()
  frame2 = cv2.warpAffine(layers[0][0], bg_m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
  for texture, mask, m in layers[1:]:
    frame1[mask > 0] = texture[mask > 0]
    moved = cv2.warpAffine(texture, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    alpha = cv2.warpAffine(mask.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    frame2 = (alpha * moved + (1 - alpha) * frame2).round().astype(np.uint8)
  return frame1, frame2, flow


class _Photos:
  """Reads the photo files on demand, keeping each once read (a few hundred small frames)."""

  def __init__(self, paths):
    self.paths = list(paths)
    self.cache = {}

  def __call__(self, rng):
    i = int(rng.integers(len(self.paths)))
    if i not in self.cache:
      self.cache[i] = formats.read_image(self.paths[i], "photo")
    return self.cache[i]


def generate(options, progress_every=10.0):
  """Writes the pairs, their list and <name>.json under options.out; returns the statistics written."""
  o = options
  o.check()
  photos = _Photos(o.photos)
  lines, moving, median = [], [], []
  start = last = time.time()
  for i in range(o.pairs):
    rng = np.random.default_rng([o.seed, i])
    frame1, frame2, flow = make_pair(photos, o, rng)
    rel = {"img1": f"frames/{o.name}/{i:06d}_1.jpg", "img2": f"frames/{o.name}/{i:06d}_2.jpg",
           "x": f"flows/{o.name}/{i:06d}_x.jpg", "y": f"flows/{o.name}/{i:06d}_y.jpg"}
    fileio.atomic_write_bytes(os.path.join(o.out, rel["img1"]), formats.encode_jpeg(frame1, o.jpeg_quality))
    fileio.atomic_write_bytes(os.path.join(o.out, rel["img2"]), formats.encode_jpeg(frame2, o.jpeg_quality))
    for plane, key in zip(formats.encode_jpg_flow(flow), ("x", "y")):
      fileio.atomic_write_bytes(os.path.join(o.out, rel[key]), formats.encode_jpeg(plane, o.flow_jpeg_quality))
    lines.append(formats.format_list_line(rel["img1"], rel["img2"], (rel["x"], rel["y"])))
    length = np.linalg.norm(flow, axis=-1)
    moving.append(float((length > 1).mean()))
    median.append(float(np.median(length[length > 1])) if (length > 1).any() else 0.0)
    now = time.time()
    if now - last >= progress_every or i + 1 == o.pairs:
      last = now
      eta = (now - start) / (i + 1) * (o.pairs - i - 1)
      print(f"[synthetic] {i + 1}/{o.pairs} pairs | ETA {eta:.0f} s", file=sys.stderr, flush=True)
  stats = {"pairs": o.pairs, "moving_share_mean": float(np.mean(moving)),
           "median_flow_of_moving_px_mean": float(np.mean(median)), "photos": len(o.photos)}
  record = {"options": {k: v for k, v in dataclasses.asdict(o).items() if k != "photos"},
            "photo_files": [os.path.relpath(p, o.out) for p in o.photos], "stats": stats}
  fileio.atomic_write_bytes(os.path.join(o.out, f"{o.name}.json"), json.dumps(record, indent=1).encode())
  formats.write_list_file(os.path.join(o.out, "lists", f"{o.name}.txt"), lines)
  return stats


def build_parser():
  d = SynthOptions(photos=(), out="")
  p = argparse.ArgumentParser(prog="python -m cmp_jax.data.synthetic", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--photos", nargs="+", required=True, help="image files or quoted globs")
  p.add_argument("--out", required=True, help="dataset folder (data_root)")
  p.add_argument("--pairs", type=int, default=d.pairs)
  p.add_argument("--name", default=d.name, help="folder and list name under --out")
  p.add_argument("--size", type=int, nargs=2, default=d.size, metavar=("H", "W"))
  p.add_argument("--max-objects", type=int, default=d.max_objects)
  p.add_argument("--still-background", type=float, default=d.still_background,
                 help="probability that the background does not move")
  p.add_argument("--min-shift", type=float, default=d.min_shift, help="px, log-uniform translation length")
  p.add_argument("--max-shift", type=float, default=d.max_shift, help="px")
  p.add_argument("--seed", type=int, default=d.seed)
  return p


def main(argv=None):
  a = build_parser().parse_args(argv)
  photos = set()
  for pattern in a.photos:
    matched = [f for f in glob.glob(pattern) if os.path.isfile(f)]
    if not matched:
      print(f"error: --photos: {pattern} matches no file", file=sys.stderr)
      return 2
    photos.update(matched)
  options = SynthOptions(photos=tuple(sorted(photos)), out=a.out, pairs=a.pairs, name=a.name, size=tuple(a.size),
                         max_objects=a.max_objects, still_background=a.still_background,
                         min_shift=a.min_shift, max_shift=a.max_shift, seed=a.seed)
  try:
    stats = generate(options)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"[synthetic] {stats['pairs']} pairs in {os.path.join(a.out, 'lists', a.name + '.txt')}: moving share "
        f"{stats['moving_share_mean']:.2f}, median |flow| of moving px {stats['median_flow_of_moving_px_mean']:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
