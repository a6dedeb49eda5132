"""Videos -> a CMP training set: frame pairs, dense flow (OpenCV DIS), lists and TFRecords.

  python -m cmp_jax.data.prepare --videos clips/*.mp4 --out datasets/mine --short-side 256
  python -m cmp_jax.data.prepare --from-lists data/yfcc          # records for an existing dataset

  from cmp_jax.data import prepare                                # the same from Python
  prepare.prepare(prepare.PrepareOptions(videos=("clips/a.mp4",), out="datasets/mine", short_side=256))

The original trains on frame pairs of YFCC videos with flow precomputed by
LiteFlowNet (reference §8.1). This tool makes the same kind of dataset from
any videos with OpenCV's DIS optical flow, on all cores.

Inputs (`--videos`): video files (anything cv2.VideoCapture reads), folders
of frame images (sorted by name), or folders of videos (each video in it is
one input).

For every video, pairs (t, t + frame_step) are taken every `pair_every`
frames and
  * dropped as a scene cut when the colour histograms of the two frames
    differ by more than `cut_hist` (total variation of 8x8x8 RGB histograms,
    0..1) or, after the flow, img2 warped back onto img1 differs from it by
    more than `max_warp_error` grey levels on average;
  * dropped as near-static when the median flow length (or another
    percentile, `motion_percentile`) is below `min_motion` px;
  * dropped when more than `max_saturated` of the pixels have |u| or |v| at
    or beyond 50 px (the JPEG flow encoding clips there).

Output layout (paths in the lists are relative to OUT, which is `data_root`):
  OUT/frames/<video>/<frame:06d>.jpg            RGB frames (after --short-side/--max-side)
  OUT/flows/<video>/<t:06d>_<t2:06d>_x.jpg, _y.jpg  flow planes, p = round((f+50)/100*255)
     (or <t:06d>_<t2:06d>.flo with --flow-format flo)
  OUT/lists/train.txt, OUT/lists/val.txt        the original's list format
  OUT/records/train-00000-of-000NN.tfrecord     (unless --no-records), see formats.TFRECORD_FEATURES
  OUT/records/train.json, val.json              counts and shard names
  OUT/prepare.json                              command, options, per-video statistics

Every file is written through a temporary name and a rename, so an
interrupted run leaves no half-written file; the lists and records are
written last. Re-running over the same OUT rewrites everything it produces
(frames and flows of pairs that are now dropped are left in place).
"""

import argparse
import collections
import dataclasses
import glob
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import sys
import time

import numpy as np

from cmp_jax import fileio
from cmp_jax.data import formats

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
              ".ogv", ".y4m")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DIS_PRESETS = ("ultrafast", "fast", "medium")


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """What `prepare` makes: the command-line options, dashes as underscores (`--help` describes each).

  Give exactly one of `videos` (with `out`) and `from_lists`.
  """
  videos: tuple = ()                 # video files, folders of frames or of videos (globs allowed)
  out: str = None                    # dataset folder (data_root); --from-lists: default from_lists
  from_lists: str = None             # DATA_ROOT of an existing dataset: write its TFRecords
  flow_file_type: str = "jpg"        # with from_lists: the lists' flow columns
  workers: int = 0                   # processes (0: all cores)
  # pairs
  frame_step: int = 1
  pair_every: int = 1
  max_frames: int = 0
  max_pairs_per_video: int = 0
  short_side: int = 0
  max_side: int = 0
  min_motion: float = 0.5
  motion_percentile: float = 50.0
  cut_hist: float = 0.2
  max_warp_error: float = 25.0
  max_saturated: float = 0.01
  # optical flow (cv2.DISOpticalFlow); None: the preset's value
  dis_preset: str = "medium"
  dis_finest_scale: int = None
  dis_patch_size: int = None
  dis_patch_stride: int = None
  dis_gd_iters: int = None
  dis_var_iters: int = None
  # files
  flow_format: str = "jpg"
  jpeg_quality: int = 95
  flow_jpeg_quality: int = 100
  records: bool = True
  record_flow: str = "jpg"
  examples_per_shard: int = 1024
  # validation split
  val_by: str = "video"
  val_fraction: float = 0.1
  val_videos: tuple = None
  progress_every: float = 2.0
  # an --out that already holds files: refused unless one of these says what to do with it
  overwrite: bool = False            # build the new dataset beside it, then replace it
  append: bool = False               # add these videos (new names only) to it

  @classmethod
  def from_args(cls, args):
    """The options of a `build_parser()` namespace."""
    kw = vars(args)
    return cls(**{**kw, "videos": tuple(kw["videos"] or ()),
                  "val_videos": tuple(kw["val_videos"]) if kw["val_videos"] else None})


# ----------------------------------------------------------------------------
# Inputs

class Source:
  """One input video: a file read with cv2.VideoCapture or a folder of frame images."""

  def __init__(self, path, name):
    self.path = path
    self.name = name
    self.is_folder = os.path.isdir(path)
    self.frame_files = _image_files(path) if self.is_folder else None

  def num_frames_estimate(self):
    if self.is_folder:
      return len(self.frame_files)
    import cv2
    cap = cv2.VideoCapture(self.path)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    cap.release()
    return n

  def frames(self):
    """Yields RGB uint8 frames in order. DataError naming the file if nothing can be read."""
    import cv2
    if self.is_folder:
      for f in self.frame_files:
        yield formats.read_image(f, "frame image")
      return
    cap = cv2.VideoCapture(self.path)
    if not cap.isOpened():
      raise formats.DataError(f"cannot open video {self.path} (not a video, or a codec OpenCV lacks)")
    n = 0
    try:
      while True:
        ok, bgr = cap.read()
        if not ok:
          break
        n += 1
        yield np.ascontiguousarray(bgr[:, :, ::-1])
    finally:
      cap.release()
    if n == 0:
      raise formats.DataError(f"cannot read any frame from video {self.path}")

  def check(self):
    """Fails early, naming the file, when the input cannot be read."""
    if self.is_folder:
      if not self.frame_files:
        raise formats.DataError(f"folder {self.path} holds no frame images ({', '.join(IMAGE_EXTS)})")
      formats.read_image(self.frame_files[0], "frame image")
      return
    for _ in self.frames():
      return


def _image_files(folder):
  files = [os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS)]
  return sorted(files, key=_natural_key)


def _natural_key(s):
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def find_sources(paths):
  """Expands --videos arguments into Sources with unique, path-safe names."""
  expanded = []
  for p in paths:
    hits = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
    if not hits:
      raise formats.DataError(f"no input matches {p}")
    for h in hits:
      if not os.path.exists(h):
        raise formats.DataError(f"input not found: {h}")
      if os.path.isdir(h) and not _image_files(h):
        vids = sorted((os.path.join(h, f) for f in os.listdir(h) if f.lower().endswith(VIDEO_EXTS)),
                      key=_natural_key)
        if not vids:
          raise formats.DataError(f"folder {h} holds neither frame images nor videos")
        expanded.extend(vids)
      else:
        expanded.append(h)
  sources, used = [], set()
  for p in expanded:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(os.path.basename(os.path.normpath(p)))[0]) or "video"
    name, k = base, 1
    while name in used:
      k += 1
      name = f"{base}_{k}"
    used.add(name)
    sources.append(Source(p, name))
  return sources


# ----------------------------------------------------------------------------
# Per-pair work

def resize_frame(rgb, short_side=None, max_side=None):
  """Resizes so the short side is `short_side`, or so the long side is at most `max_side`."""
  import cv2
  h, w = rgb.shape[:2]
  if short_side:
    s = short_side / min(h, w)
  elif max_side and max(h, w) > max_side:
    s = max_side / max(h, w)
  else:
    return rgb
  nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
  if (nw, nh) == (w, h):
    return rgb
  interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
  return cv2.resize(rgb, (nw, nh), interpolation=interp)


def histogram_distance(a, b):
  """Total variation (0..1) between the 8x8x8 RGB histograms of two uint8 images."""
  import cv2
  ha = cv2.calcHist([a], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3).ravel()
  hb = cv2.calcHist([b], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3).ravel()
  return 0.5 * float(np.abs(ha / ha.sum() - hb / hb.sum()).sum())


def warp_error(gray1, gray2, flow):
  """Mean |img1 - img2 warped back by the flow| in grey levels (pixels warped from outside are left out)."""
  import cv2
  h, w = gray1.shape
  gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
  mx, my = gx + flow[:, :, 0], gy + flow[:, :, 1]
  warped = cv2.remap(gray2, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
  inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
  if not inside.any():
    return float("inf")
  return float(np.abs(warped.astype(np.float32) - gray1.astype(np.float32))[inside].mean())


_DIS = {}


def make_dis(opts):
  """A cv2.DISOpticalFlow with the preset and parameters of `opts` (cached per process)."""
  import cv2
  key = (opts.dis_preset, opts.dis_finest_scale, opts.dis_patch_size, opts.dis_patch_stride,
         opts.dis_gd_iters, opts.dis_var_iters)
  if key not in _DIS:
    preset = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
              "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[opts.dis_preset]
    dis = cv2.DISOpticalFlow_create(preset)
    if opts.dis_finest_scale is not None:
      dis.setFinestScale(opts.dis_finest_scale)
    if opts.dis_patch_size is not None:
      dis.setPatchSize(opts.dis_patch_size)
    if opts.dis_patch_stride is not None:
      dis.setPatchStride(opts.dis_patch_stride)
    if opts.dis_gd_iters is not None:
      dis.setGradientDescentIterations(opts.dis_gd_iters)
    if opts.dis_var_iters is not None:
      dis.setVariationalRefinementIterations(opts.dis_var_iters)
    _DIS[key] = dis
  return _DIS[key]


def compute_flow(rgb1, rgb2, opts):
  """Dense flow img1 -> img2 (H x W x 2 float32, u then v, pixels) with DIS on grey frames."""
  import cv2
  g1 = cv2.cvtColor(rgb1, cv2.COLOR_RGB2GRAY)
  g2 = cv2.cvtColor(rgb2, cv2.COLOR_RGB2GRAY)
  return make_dis(opts).calc(g1, g2, None), g1, g2


def frame_relpath(video, t):
  return f"frames/{video}/{t:06d}.jpg"


def flow_relpaths(video, t1, t2, flow_format):
  stem = f"flows/{video}/{t1:06d}_{t2:06d}"
  return (stem + ".flo",) if flow_format == "flo" else (stem + "_x.jpg", stem + "_y.jpg")


def process_pair(task):
  """Tests one pair and, if it is kept, writes its frames and flow. Returns a result dict."""
  video, t1, t2, rgb1, rgb2, opts = task
  out = opts.out
  res = {"video": video, "t1": t1, "t2": t2, "status": "kept"}
  hd = histogram_distance(rgb1, rgb2)
  res["hist"] = round(hd, 4)
  if hd > opts.cut_hist:
    res["status"] = "cut"
    return res
  flow, g1, g2 = compute_flow(rgb1, rgb2, opts)
  mag = np.hypot(flow[:, :, 0], flow[:, :, 1])
  res["median_motion"] = round(float(np.median(mag)), 3)
  res["motion"] = round(float(np.percentile(mag, opts.motion_percentile)), 3)
  we = warp_error(g1, g2, flow)
  res["warp_error"] = round(we, 2)
  sat = float(np.mean((np.abs(flow) >= formats.FLOW_JPG_OFFSET).any(axis=2)))
  res["saturated"] = round(sat, 4)
  if we > opts.max_warp_error:
    res["status"] = "cut"
    return res
  if res["motion"] < opts.min_motion:
    res["status"] = "static"
    return res
  if sat > opts.max_saturated:
    res["status"] = "too_fast"
    return res

  # Frames are shared between pairs; identical bytes, so a concurrent rewrite is harmless.
  for t, rgb in ((t1, rgb1), (t2, rgb2)):
    p = os.path.join(out, frame_relpath(video, t))
    if not os.path.exists(p):
      formats.atomic_write_bytes(p, formats.encode_jpeg(rgb, opts.jpeg_quality))
  rel = flow_relpaths(video, t1, t2, opts.flow_format)
  if opts.flow_format == "flo":
    formats.write_flo(os.path.join(out, rel[0]), flow)
  else:
    px, py = formats.encode_jpg_flow(flow)
    formats.atomic_write_bytes(os.path.join(out, rel[0]), formats.encode_jpeg(px, opts.flow_jpeg_quality))
    formats.atomic_write_bytes(os.path.join(out, rel[1]), formats.encode_jpeg(py, opts.flow_jpeg_quality))
    if opts.records and opts.record_flow in ("float16", "float32"):
      # Records want the unquantised flow: stage it until the records are written.
      raw = np.ascontiguousarray(flow, "<f2" if opts.record_flow == "float16" else "<f4").tobytes()
      res["staged"] = _staged_relpath(video, t1, t2)
      formats.atomic_write_bytes(os.path.join(out, res["staged"]), raw)
  res["img1"] = frame_relpath(video, t1)
  res["img2"] = frame_relpath(video, t2)
  res["flow"] = list(rel)
  res["height"], res["width"] = flow.shape[:2]
  return res


def _staged_relpath(video, t1, t2):
  return f"records/.staging/{video}/{t1:06d}_{t2:06d}.raw"


def _worker_init():
  import signal
  import cv2
  cv2.setNumThreads(1)
  # Pool.terminate() sends SIGTERM: exit through Python so atomic writes remove their temp files.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def iter_tasks(source, opts):
  """(video, t1, t2, rgb1, rgb2, opts) for every candidate pair of one source, decoding once."""
  step, every = opts.frame_step, opts.pair_every
  window = collections.OrderedDict()  # frame index -> resized RGB, the last `step` + 1 frames
  count = 0
  for t, rgb in enumerate(source.frames()):
    if opts.max_frames and t >= opts.max_frames:
      break
    window[t] = resize_frame(rgb, opts.short_side, opts.max_side)
    while len(window) > step + 1:
      window.popitem(last=False)
    t1 = t - step
    if t1 >= 0 and t1 % every == 0:
      if opts.max_pairs_per_video and count >= opts.max_pairs_per_video:
        break
      count += 1
      yield (source.name, t1, t, window[t1], window[t], opts)


# ----------------------------------------------------------------------------
# Progress

class Progress:
  """Prints pairs done, pairs/s and ETA at most every `every` seconds."""

  def __init__(self, total, every=2.0, stream=sys.stderr):
    self.total, self.every, self.stream = total, every, stream
    self.start = self.last = time.time()
    self.done = 0
    self.counts = collections.Counter()

  def update(self, status):
    self.done += 1
    self.counts[status] += 1
    now = time.time()
    if now - self.last >= self.every:
      self.last = now
      self.print()

  def print(self, final=False):
    el = max(time.time() - self.start, 1e-9)
    rate = self.done / el
    tot = max(self.total, self.done)
    eta = (tot - self.done) / rate if rate > 0 and not final else 0.0
    c = self.counts
    msg = (f"[prepare] {self.done}/{tot} pairs  kept {c['kept']}  static {c['static']}  cut {c['cut']}  "
           f"too_fast {c['too_fast']}  {rate:.1f} pairs/s  "
           + (f"done in {_hms(el)}" if final else f"ETA {_hms(eta)}"))
    print(msg, file=self.stream, flush=True)


def _hms(s):
  s = int(round(s))
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ----------------------------------------------------------------------------
# Split, lists, records

def split_pairs(kept, sources, opts):
  """(train, val) lists of kept results, by video or by the last fraction of each video's pairs."""
  names = [s.name for s in sources]
  by_video = collections.OrderedDict((n, []) for n in names)
  for r in kept:
    by_video[r["video"]].append(r)
  if opts.val_videos:  # names checked by plan_split
    val_names = {s.name for s in sources for v in opts.val_videos
                 if s.name == v or os.path.normpath(s.path) == os.path.normpath(v)}
  elif opts.val_by == "video":
    n_val = max(1, int(round(opts.val_fraction * len(names)))) if opts.val_fraction > 0 else 0
    val_names = set(names[len(names) - n_val:]) if n_val else set()
  else:
    train, val = [], []
    for n in names:
      rs = by_video[n]
      n_val = int(math.ceil(opts.val_fraction * len(rs))) if rs else 0
      # The last n_val pairs of each video, in time order; train pairs that
      # reach into the val block (share a frame with it) are dropped.
      cut = len(rs) - n_val
      val.extend(rs[cut:])
      tr = rs[:cut]
      if n_val:
        tr = [r for r in tr if r["t2"] < rs[cut]["t1"]]
      train.extend(tr)
    return train, val
  train = [r for n in names if n not in val_names for r in by_video[n]]
  val = [r for n in names if n in val_names for r in by_video[n]]
  return train, val


def write_records(root, split, items, out=None, record_flow="jpg", examples_per_shard=1024,
                  flow_jpeg_quality=100):
  """Writes OUT/records/{split}-*.tfrecord (each shard atomically) and OUT/records/{split}.json.

  `items`: dicts with img1, img2, flow (paths relative to `root`), height,
  width and optionally `staged` (raw flow bytes staged by a video run).
  """
  import tensorflow as tf
  out = root if out is None else out
  rec_dir = os.path.join(out, "records")
  os.makedirs(rec_dir, exist_ok=True)
  n = len(items)
  num_shards = max(1, int(math.ceil(n / examples_per_shard))) if n else 0
  shards = []
  for s in range(num_shards):
    name = f"{split}-{s:05d}-of-{num_shards:05d}.tfrecord"
    path = os.path.join(rec_dir, name)
    chunk = items[s * n // num_shards:(s + 1) * n // num_shards]
    with fileio.atomic_path(path) as tmp, tf.io.TFRecordWriter(tmp) as w:
      for it in chunk:
        w.write(_record_for(root, it, record_flow, flow_jpeg_quality))
    shards.append({"file": name, "num_examples": len(chunk)})
  # Shards of an earlier run with another shard count would be picked up by a glob: remove them.
  keep = {s["file"] for s in shards}
  for old in glob.glob(os.path.join(rec_dir, f"{split}-*-of-*.tfrecord")):
    if os.path.basename(old) not in keep:
      os.unlink(old)
  meta = {"split": split, "num_examples": n, "flow_encoding": record_flow, "shards": shards,
          "pattern": f"records/{split}-*-of-{num_shards:05d}.tfrecord" if num_shards else None,
          "features": {k: v[1] for k, v in formats.TFRECORD_FEATURES.items()}}
  formats.atomic_write_bytes(os.path.join(rec_dir, f"{split}.json"), (json.dumps(meta, indent=1) + "\n").encode())
  return meta


def _remove_records(out, split):
  """Removes the shards and json of `split` left by an earlier run."""
  for old in glob.glob(os.path.join(out, "records", f"{split}-*-of-*.tfrecord")) + \
      glob.glob(os.path.join(out, "records", f"{split}.json")):
    os.unlink(old)


def _record_for(root, it, enc, flow_jpeg_quality):
  def rd(rel):
    return formats._read_bytes(os.path.join(root, rel), "file")

  flow_paths = [os.path.join(root, f) for f in it["flow"]]
  jpg_files = len(flow_paths) == 2
  if enc == "jpg" and jpg_files:
    kw = {"flow_x": rd(it["flow"][0]), "flow_y": rd(it["flow"][1])}
  elif enc != "jpg" and it.get("staged"):
    kw = {"flow_raw": rd(it["staged"])}
  else:
    flow = formats.read_flow(flow_paths, "jpg" if jpg_files else "flo")
    if enc == "jpg":
      px, py = formats.encode_jpg_flow(flow)
      kw = {"flow_x": formats.encode_jpeg(px, flow_jpeg_quality),
            "flow_y": formats.encode_jpeg(py, flow_jpeg_quality)}
    else:
      kw = {"flow_raw": np.ascontiguousarray(flow, "<f2" if enc == "float16" else "<f4").tobytes()}
  return formats.make_tfrecord_example(rd(it["img1"]), rd(it["img2"]), it["height"], it["width"], it["img1"],
                                       flow_encoding=enc, **kw)


def records_from_lists(data_root, out=None, list_files=None, flow_file_type="jpg", record_flow="jpg",
                       examples_per_shard=1024, flow_jpeg_quality=100):
  """TFRecords for an existing dataset in the original layout (lists + frames + flow files).

  `list_files`: {split: list file}; default DATA_ROOT/lists/{train,val}.txt
  (those that exist). Paths in the lists are relative to data_root. Returns
  {split: records meta}.
  """
  from PIL import Image
  if list_files is None:
    list_files = {sp: os.path.join(data_root, "lists", f"{sp}.txt") for sp in ("train", "val")}
    list_files = {sp: f for sp, f in list_files.items() if os.path.isfile(f)}
    if not list_files:
      raise formats.DataError(f"no lists/train.txt or lists/val.txt under {data_root}")
  metas = {}
  for split, lf in list_files.items():
    entries = formats.read_list_files(lf, data_root, flow_file_type)
    items = []
    for e in entries:
      try:
        with Image.open(e.img1) as im:
          w, h = im.size
      except FileNotFoundError:
        raise formats.DataError(f"{e.where}: image not found: {e.img1}") from None
      except OSError as err:
        raise formats.DataError(f"{e.where}: cannot read image {e.img1}: {err}") from None
      items.append({"img1": os.path.relpath(e.img1, data_root), "img2": os.path.relpath(e.img2, data_root),
                    "flow": [os.path.relpath(f, data_root) for f in e.flow], "height": h, "width": w})
    metas[split] = write_records(data_root, split, items, out, record_flow, examples_per_shard,
                                 flow_jpeg_quality)
    print(f"[prepare] {split}: {len(items)} records -> {os.path.join(out or data_root, 'records')}",
          file=sys.stderr, flush=True)
  return metas


# ----------------------------------------------------------------------------
# Driver

def prepare(options):
  """Makes the dataset that `options` (a PrepareOptions) describe: the library entry of the command line.

  Returns the summary written to OUT/prepare.json, or with `from_lists` {split: records meta}.
  """
  opts = check_options(options)
  if opts.from_lists:
    return records_from_lists(opts.from_lists, opts.out, None, opts.flow_file_type, opts.record_flow,
                              opts.examples_per_shard, opts.flow_jpeg_quality)
  sources = find_sources(opts.videos)
  for s in sources:
    s.check()
  out = opts.out
  existing = existing_dataset(out, opts, sources)  # refusals before any work
  opts = plan_split(sources, opts)
  build = out + ".prepare-tmp" if opts.overwrite else out
  if opts.overwrite and os.path.exists(build):  # left by an interrupted --overwrite
    shutil.rmtree(build)
  os.makedirs(build, exist_ok=True)
  staging = os.path.join(build, "records", ".staging")
  if os.path.isdir(staging):  # left by an interrupted run
    shutil.rmtree(staging)

  results, counts = process_pairs(sources, dataclasses.replace(opts, out=build))
  kept = [r for r in results if r["status"] == "kept"]
  if not kept:
    raise formats.DataError(f"no pair was kept from {', '.join(s.path for s in sources)}: "
                            f"{counts}; lower --min-motion or raise --cut-hist/--max-warp-error")
  train, val = split_pairs(kept, sources, opts)
  if not train and not existing:
    raise formats.DataError("the split left no training pair; lower --val-fraction or change --val-by")

  write_lists(build, train, val, keep_existing=bool(existing))
  if opts.records and existing:  # the records of the whole dataset, made anew from its lists
    records_from_lists(build, build, None, opts.flow_format, opts.record_flow, opts.examples_per_shard,
                       opts.flow_jpeg_quality)
  elif opts.records:
    for split, rs in (("train", train), ("val", val)):
      if not rs:
        _remove_records(build, split)
      else:
        write_records(build, split, rs, build, opts.record_flow, opts.examples_per_shard, opts.flow_jpeg_quality)
  if os.path.isdir(staging):
    shutil.rmtree(staging)

  summary = {"command": "python -m cmp_jax.data.prepare " + " ".join(_quote(a) for a in sys.argv[1:])
             if sys.argv and sys.argv[0].endswith("prepare.py") else None,
             "options": {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("videos", "out", "from_lists")},
             "num_train": len(train), "num_val": len(val), "videos": video_stats(sources, results),
             "val_videos": sorted({r["video"] for r in val})}
  if existing:  # --append: the earlier runs' summaries stay, this one is added
    summary = {**summary, "num_train": summary["num_train"] + existing["num_train"],
               "num_val": summary["num_val"] + existing["num_val"],
               "videos": {**existing["videos"], **summary["videos"]},
               "val_videos": sorted(set(existing["val_videos"]) | set(summary["val_videos"])),
               "appended_to": existing.get("runs", []) + [{k: existing[k] for k in ("command", "options")
                                                           if k in existing}]}
  formats.atomic_write_bytes(os.path.join(build, "prepare.json"), (json.dumps(summary, indent=1) + "\n").encode())
  if opts.overwrite:  # the new dataset replaces the old one only once it is complete
    old = out + ".prepare-old"
    if os.path.exists(out):
      os.replace(out, old)
    os.replace(build, out)
    shutil.rmtree(old, ignore_errors=True)
  print(f"[prepare] wrote {summary['num_train']} train / {summary['num_val']} val pairs to {out}/lists"
        + (f" and {out}/records" if opts.records else ""), file=sys.stderr, flush=True)
  return summary


def existing_dataset(out, opts, sources):
  """What `out` already holds: None when it is missing or empty (or --overwrite); with --append the
  summary of the dataset there. Refuses (ValueError) a non-empty `out` without --overwrite or --append,
  and with --append a video whose name the dataset already has."""
  if opts.overwrite or not os.path.isdir(out) or not os.listdir(out):
    if os.path.exists(out) and not os.path.isdir(out):
      raise ValueError(f"--out {out}: exists and is not a folder")
    return None
  if not opts.append:
    raise ValueError(f"--out {out} is not empty; give --overwrite to replace what is there or --append to add "
                     "these videos to the dataset there")
  meta = os.path.join(out, "prepare.json")
  try:
    with open(meta) as f:
      existing = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"--append: {meta} is missing or unreadable ({e}): {out} is not a dataset made by "
                     "prepare") from None
  clash = sorted({s.name for s in sources} & set(existing.get("videos", {})))
  if clash:
    raise ValueError(f"--append: {out} already holds video(s) named {', '.join(clash)}; rename the input(s)")
  return existing


def plan_split(sources, opts):
  """Checks the validation split against the inputs before any flow is computed; returns the options to use.

  One input with the default --val-by video: its last pairs become the val set (--val-by pairs), said in a note.
  """
  names = [s.name for s in sources]
  for v in opts.val_videos or ():
    if not [n for s, n in zip(sources, names) if n == v or os.path.normpath(s.path) == os.path.normpath(v)]:
      raise ValueError(f"--val-videos {v!r} is not one of the inputs ({', '.join(names)})")
  if not opts.val_videos and opts.val_by == "video" and opts.val_fraction > 0:
    if len(sources) == 1 and not opts.append:
      print(f"[prepare] note: one input video, so val is its last {opts.val_fraction:.0%} of pairs (--val-by "
            "pairs); give more videos for a val set of unseen videos", file=sys.stderr, flush=True)
      return dataclasses.replace(opts, val_by="pairs")
    n_val = max(1, int(round(opts.val_fraction * len(names))))
    if n_val >= len(names) and not opts.append:
      raise ValueError(f"--val-by video with --val-fraction {opts.val_fraction} leaves no training video "
                       f"({len(names)} inputs); give more videos, --val-videos, or --val-by pairs")
  return opts


def check_options(o):
  """`o` checked (ValueError naming the option) and completed: out absolute, workers a count."""
  def bad(msg):
    raise ValueError(msg)
  if bool(o.videos) == bool(o.from_lists):
    bad("give exactly one of --videos and --from-lists")
  out = o.out or o.from_lists
  if not out:
    bad("--out is required with --videos")
  if o.frame_step < 1:
    bad(f"--frame-step must be >= 1, got {o.frame_step}")
  if o.pair_every < 1:
    bad(f"--pair-every must be >= 1, got {o.pair_every}")
  if o.short_side and o.max_side:
    bad("give at most one of --short-side and --max-side")
  if not 0 <= o.val_fraction < 1:
    bad(f"--val-fraction must be in [0, 1), got {o.val_fraction}")
  for q in ("jpeg_quality", "flow_jpeg_quality"):
    if not 1 <= getattr(o, q) <= 100:
      bad(f"--{q.replace('_', '-')} must be in 1..100")
  if o.examples_per_shard < 1:
    bad("--examples-per-shard must be >= 1")
  if o.overwrite and o.append:
    bad("give at most one of --overwrite and --append")
  if o.from_lists and (o.overwrite or o.append):
    bad("--overwrite and --append go with --videos, not --from-lists")
  if o.append and o.records and o.flow_format == "jpg" and o.record_flow != "jpg":
    bad("--append rebuilds the records from the files on disk, which hold jpg flow: with --flow-format jpg "
        "give --record-flow jpg (or --no-records)")
  return dataclasses.replace(o, videos=tuple(os.fspath(v) for v in o.videos), out=os.path.abspath(out),
                             workers=o.workers or os.cpu_count() or 1)


def count_candidate_pairs(sources, opts):
  """About how many candidate pairs the sources hold (from their frame counts), for the progress line."""
  total = 0
  for s in sources:
    n = s.num_frames_estimate()
    if opts.max_frames:
      n = min(n, opts.max_frames)
    k = len(range(0, max(0, n - opts.frame_step), opts.pair_every))
    total += min(k, opts.max_pairs_per_video) if opts.max_pairs_per_video else k
  return total


def process_pairs(sources, opts):
  """`process_pair` on every candidate pair, on opts.workers processes: (results in order, status counts)."""
  total = count_candidate_pairs(sources, opts)
  print(f"[prepare] {len(sources)} input(s), about {total} candidate pairs, {opts.workers} worker(s) -> {opts.out}",
        file=sys.stderr, flush=True)
  progress = Progress(total, every=opts.progress_every)
  tasks = (task for s in sources for task in iter_tasks(s, opts))
  results = []

  def done(r):
    results.append(r)
    progress.update(r["status"])

  if opts.workers <= 1:
    _worker_init()
    for task in tasks:
      done(process_pair(task))
  else:
    with mp.get_context("spawn").Pool(opts.workers, initializer=_worker_init) as pool:
      pending = collections.deque()
      for task in tasks:
        pending.append(pool.apply_async(process_pair, (task,)))
        while len(pending) >= 4 * opts.workers:
          done(pending.popleft().get())
      while pending:
        done(pending.popleft().get())
  progress.print(final=True)
  return results, dict(progress.counts)


def write_lists(out, train, val, keep_existing=False):
  """OUT/lists/train.txt and val.txt; a split without pairs removes its old list. keep_existing (--append):
  the lists' present lines stay first and these pairs follow."""
  for split, rs in (("train", train), ("val", val)):
    path = os.path.join(out, "lists", f"{split}.txt")
    lines = [formats.format_list_line(r["img1"], r["img2"], r["flow"]) for r in rs]
    if keep_existing and os.path.exists(path):
      with open(path) as f:
        lines = [line.rstrip("\n") for line in f if line.strip()] + lines
    if lines:
      formats.write_list_file(path, lines)
    elif os.path.exists(path):
      os.unlink(path)


def video_stats(sources, results):
  """Per input: its path, candidate pairs, counts per status, the median motion and frame size of kept pairs."""
  stats = collections.OrderedDict()
  for s in sources:
    rs = [r for r in results if r["video"] == s.name]
    c = collections.Counter(r["status"] for r in rs)
    kept = [r for r in rs if r["status"] == "kept"]
    stats[s.name] = {"path": s.path, "candidate_pairs": len(rs),
                     **{k: c[k] for k in ("kept", "static", "cut", "too_fast")},
                     "median_motion_of_kept": (round(float(np.median([r["median_motion"] for r in kept])), 3)
                                               if kept else None),
                     "frame_size_wh": [kept[0]["width"], kept[0]["height"]] if kept else None}
  return stats


def _quote(a):
  return a if re.fullmatch(r"[A-Za-z0-9_./=:,+-]+", a) else "'" + a.replace("'", "'\\''") + "'"


def build_parser():
  """The command line: one option per PrepareOptions field, with its default."""
  D = PrepareOptions  # noqa: N806 - the defaults
  p = argparse.ArgumentParser(
      prog="python -m cmp_jax.data.prepare",
      description="Turn videos into a CMP dataset: frame pairs, DIS optical flow, list files and TFRecords.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  g = p.add_argument_group("inputs and output")
  g.add_argument("--videos", nargs="+",
                 help="video files, folders of frame images, or folders of videos (globs allowed)")
  g.add_argument("--out", help="dataset folder (data_root); created if missing")
  g.add_argument("--from-lists", metavar="DATA_ROOT",
                 help="instead of --videos: write TFRecords for an existing dataset in the original layout "
                      "(DATA_ROOT/lists/{train,val}.txt, paths relative to DATA_ROOT) into OUT/records "
                      "(OUT defaults to DATA_ROOT)")
  g.add_argument("--flow-file-type", choices=formats.FLOW_FILE_TYPES, default=D.flow_file_type,
                 help="with --from-lists: the lists' flow columns (jpg: flowx flowy; flo: one .flo)")
  g.add_argument("--workers", type=int, default=D.workers, help="processes (0: all cores)")
  g = p.add_argument_group("pairs")
  g.add_argument("--frame-step", type=int, default=D.frame_step, help="pair frame t with frame t + STEP")
  g.add_argument("--pair-every", type=int, default=D.pair_every, help="start a pair every N frames")
  g.add_argument("--max-frames", type=int, default=D.max_frames, help="read at most N frames per video (0: all)")
  g.add_argument("--max-pairs-per-video", type=int, default=D.max_pairs_per_video,
                 help="consider at most the first N candidate pairs of each video (0: no limit)")
  g.add_argument("--short-side", type=int, default=D.short_side, help="resize frames to this short side (0: keep)")
  g.add_argument("--max-side", type=int, default=D.max_side, help="downscale frames so the long side is at most this")
  g.add_argument("--min-motion", type=float, default=D.min_motion,
                 help="drop near-static pairs: those whose median flow length (px) is below this")
  g.add_argument("--motion-percentile", type=float, default=D.motion_percentile,
                 help="percentile of the flow length compared with --min-motion (50: median; use e.g. 90 for "
                      "static-camera videos where only objects move)")
  g.add_argument("--cut-hist", type=float, default=D.cut_hist,
                 help="scene cut: drop pairs whose RGB histograms differ by more (total variation, 0..1)")
  g.add_argument("--max-warp-error", type=float, default=D.max_warp_error,
                 help="scene cut / failed flow: drop pairs whose mean grey-level error after warping is above")
  g.add_argument("--max-saturated", type=float, default=D.max_saturated,
                 help="drop pairs with more than this fraction of pixels at |flow| >= 50 px (clipped by jpg)")
  g = p.add_argument_group("optical flow (cv2.DISOpticalFlow)")
  g.add_argument("--dis-preset", choices=DIS_PRESETS, default=D.dis_preset)
  g.add_argument("--dis-finest-scale", type=int, default=D.dis_finest_scale,
                 help="finest pyramid level (0 = full resolution)")
  g.add_argument("--dis-patch-size", type=int, default=D.dis_patch_size)
  g.add_argument("--dis-patch-stride", type=int, default=D.dis_patch_stride)
  g.add_argument("--dis-gd-iters", type=int, default=D.dis_gd_iters, help="gradient descent iterations per patch")
  g.add_argument("--dis-var-iters", type=int, default=D.dis_var_iters,
                 help="variational refinement iterations (0: off)")
  g = p.add_argument_group("files")
  g.add_argument("--flow-format", choices=("jpg", "flo"), default=D.flow_format,
                 help="jpg: two 8-bit JPEGs per flow as the original (lossy, 0.392 px quantum); flo: float32")
  g.add_argument("--jpeg-quality", type=int, default=D.jpeg_quality, help="frame JPEG quality")
  g.add_argument("--flow-jpeg-quality", type=int, default=D.flow_jpeg_quality, help="flow plane JPEG quality")
  g.add_argument("--no-records", dest="records", action="store_false", help="write no TFRecords")
  g.add_argument("--record-flow", choices=formats.RECORD_FLOW_ENCODINGS, default=D.record_flow,
                 help="flow inside the records: the jpg planes, or raw float16/float32")
  g.add_argument("--examples-per-shard", type=int, default=D.examples_per_shard)
  g = p.add_argument_group("validation split")
  g.add_argument("--val-by", choices=("video", "pairs"), default=D.val_by,
                 help="video: whole videos go to val; pairs: the last fraction of each video's pairs "
                      "(train pairs sharing a frame with them are dropped)")
  g.add_argument("--val-fraction", type=float, default=D.val_fraction, help="fraction of videos (or pairs) for val")
  g.add_argument("--val-videos", nargs="+", default=D.val_videos,
                 help="these inputs (names or paths) are the val set; overrides --val-by/--val-fraction")
  g = p.add_argument_group("an --out that already holds files (refused without one of these)")
  g.add_argument("--overwrite", action="store_true", help="build the new dataset beside it, then replace it")
  g.add_argument("--append", action="store_true",
                 help="add these videos (whose names must be new to it) to the dataset there; val as the options say")
  p.add_argument("--progress-every", type=float, default=D.progress_every, help="seconds between progress lines")
  return p


def main(argv=None):
  args = build_parser().parse_args(argv)
  try:
    prepare(PrepareOptions.from_args(args))
  except (ValueError, OSError) as e:  # includes formats.DataError; OSError: a folder that cannot be written
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
