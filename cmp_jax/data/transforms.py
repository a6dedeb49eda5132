"""One sample, from its encoded files to the arrays of a batch (numpy / PIL / OpenCV).

  image, image2, flow, points = process(sample, settings, train, rs, pyrng)

The steps, in the original's order (reference §3.3), each a function here:
  open_frames        the two frames' headers; both one size
  decode_flow        jpg planes (a lookup table), .flo or a record's raw flow; the frames' size
  resized_size       the short side at settings.short_size (frames: PIL bicubic; flow: cv2 INTER_LINEAR,
                     both components times new_h / h)
  crop_offsets       train: hoff = int(rand * (H - ch)) then woff likewise; val: the centre
  crop_window        that crop of the resized frame, padded to the crop where smaller (black / 0,
                     pad // 2 on top/left)
  resize_crop_image  the frame resized over the crop window only (PIL resize with a source box)
  resize_crop_flow   the whole flow resized (cv2, as the original), then cropped
  augment            train only: flip, reverse, scale, rotate (config.data.aug_*)
  guidance_points    the guidance sampler `cmp_jax.sampling` on the cropped flow

The frames stay uint8: `cmp_jax.data.pipeline` normalises them as it fills the batch.

Bad data raises `formats.BadFileError` naming the files; `cmp_jax.data.pipeline` turns it into a
BadSampleError naming the list line, or skips the sample.
"""

import dataclasses
import io

import cv2
import numpy as np
from PIL import Image

from cmp_jax import sampling
from cmp_jax.data import formats
from cmp_jax.data.sources import read_ref, ref_label

# Flow value of each 8-bit JPEG level, the original's decoding (formats.decode_jpg_flow) as a lookup table.
_JPG_FLOW_LUT = formats.decode_jpg_flow(*[np.arange(256, dtype=np.uint8)[None]] * 2)[0, :, 0]


@dataclasses.dataclass(frozen=True)
class Settings:
  """Plain values taken from config.data (read once; safe to use from the tf.data threads)."""
  short_size: int = 416
  crop_size: tuple = (384, 384)
  strategy: tuple = ("grid", "watershed")
  bg_ratio: float = 1.5625e-4
  nms_ks: int = 41
  max_num_guide: int = 150
  aug_flip: bool = False
  aug_reverse: bool = False
  aug_scale: bool = False
  aug_rotate: bool = False
  with_image2: bool = False

  @classmethod
  def from_config(cls, config, with_image2=False):
    d = config.data
    return cls(short_size=int(d.short_size), crop_size=tuple(int(s) for s in d.crop_size),
               strategy=tuple(d.sample_strategy), bg_ratio=float(d.sample_bg_ratio), nms_ks=int(d.nms_ks),
               max_num_guide=int(d.max_num_guide), aug_flip=bool(d.aug_flip), aug_reverse=bool(d.aug_reverse),
               aug_scale=bool(d.aug_scale), aug_rotate=bool(d.aug_rotate), with_image2=with_image2)


def process(sample, settings, train, rs, pyrng):
  """One EncodedSample -> (image uint8 HxWx3, image2 uint8 or None, flow f32 HxWx2, guidance points).

  The guidance points are (rows, cols), or None for 'full' (every pixel). rs: np.random.RandomState for
  the crop offsets and the sampler (called in the original's order); pyrng: random.Random for the
  augmentations. Raises formats.BadFileError for bad data.
  """
  crop = settings.crop_size
  im1, im2 = open_frames(sample)
  flow, flow_names = decode_flow(sample, im1.size)
  load_image(im1, sample.image1, "image1")
  if settings.with_image2:
    load_image(im2, sample.image2, "image2")

  size = resized_size(*im1.size, settings.short_size)
  window = crop_window(size, crop, *crop_offsets(size, crop, train, rs))
  image = resize_crop_image(im1, size, window, crop)
  image2 = resize_crop_image(im2, size, window, crop) if settings.with_image2 else None
  flow = resize_crop_flow(flow, size, window, crop)
  if sample.flow_kind != "jpg" and not np.isfinite(flow).all():
    raise formats.BadFileError(flow_names, "the flow holds NaN or infinite values")

  if train:
    image, image2, flow = augment(image, image2, flow, settings, pyrng)
  try:
    points = guidance_points(flow, settings, rs)
  except ValueError as e:
    raise formats.BadFileError(flow_names, f"guidance sampler: {e}") from None
  return image, image2, flow, points


# --------------------------------------------------------------------------------------------------
# Decoding.
# --------------------------------------------------------------------------------------------------

def open_image(ref, kind):
  """A lazily decoded PIL image (header read) from a ref; `kind` names it in messages."""
  data = read_ref(ref)
  try:
    im = Image.open(io.BytesIO(data))
    im.size  # noqa: B018
  except Exception as e:  # noqa: BLE001 - PIL raises several kinds for a bad header
    raise formats.BadFileError([ref_label(ref)], f"{kind} is not a readable image ({type(e).__name__}: {e})") from None
  return im


def load_image(im, ref, kind):
  """Decodes a PIL image, naming the file on failure (truncated or corrupt data)."""
  try:
    im.load()
  except Exception as e:  # noqa: BLE001
    raise formats.BadFileError([ref_label(ref)], f"{kind} cannot be decoded ({type(e).__name__}: {e})") from None
  return im


def open_frames(sample):
  """The two frames of a sample as lazily decoded PIL images, checked to be of one size."""
  im1 = open_image(sample.image1, "image1")
  im2 = open_image(sample.image2, "image2")
  if im2.size != im1.size:
    raise formats.BadFileError([ref_label(sample.image1), ref_label(sample.image2)],
                               f"image1 is {im1.size[0]}x{im1.size[1]} but image2 is {im2.size[0]}x{im2.size[1]}")
  return im1, im2


def decode_flow(sample, size):
  """(H x W x 2 float32 flow, the names of its files) of a sample whose frames are size = (w, h).

  jpg planes are decoded by PIL and a lookup table (the original's values); .flo and a record's raw
  float16/float32 by `formats`. The flow must have the frames' size.
  """
  w, h = size
  if sample.flow_kind == "jpg":
    flow_names = [ref_label(f) for f in sample.flow]
    planes = []
    for ref, kind in zip(sample.flow, ("flow_x", "flow_y")):
      plane = open_image(ref, kind)
      if plane.size != (w, h):
        raise formats.BadFileError([ref_label(sample.image1), ref_label(ref)],
                                   f"image1 is {w}x{h} but {kind} is {plane.size[0]}x{plane.size[1]}")
      if plane.mode != "L":
        raise formats.BadFileError([ref_label(ref)],
                                   f"{kind} has mode {plane.mode}; a jpg flow must be a single-channel 8-bit image")
      planes.append(np.asarray(load_image(plane, ref, kind)))
    flow = cv2.LUT(cv2.merge(planes), _JPG_FLOW_LUT)
  elif sample.flow_kind == "flo":
    flow_names = [ref_label(sample.flow[0])]
    flow = formats.decode_flo(read_ref(sample.flow[0]), flow_names[0])
  else:  # raw float16/float32 in a record
    (data, name), encoding, fh, fw = sample.flow
    flow_names = [name]
    flow = formats.decode_raw_flow(data, encoding, fh, fw, name)
  if flow.shape[:2] != (h, w):
    raise formats.BadFileError([ref_label(sample.image1), flow_names[0]],
                               f"image1 is {w}x{h} but the flow is {flow.shape[1]}x{flow.shape[0]}")
  return flow, flow_names


# --------------------------------------------------------------------------------------------------
# Geometry: resize, pad, crop.
# --------------------------------------------------------------------------------------------------

def resized_size(w, h, short_size):
  """(new_w, new_h) with the short side at short_size, the other truncated by int() as the original."""
  if w < h:
    return short_size, int(short_size / float(w) * h)
  return int(short_size / float(h) * w), short_size


def crop_offsets(size, out_size, train, rs):
  """(hoff, woff) of the crop in the resized frame of size (nw, nh), padded to at least out_size.

  Train: two rand() calls, h first, as the original; val: the centre.
  """
  nw, nh = size
  ch, cw = out_size
  ph, pw = max(nh, ch), max(nw, cw)
  if train:
    hoff = int(rs.rand() * (ph - ch))
    woff = int(rs.rand() * (pw - cw))
  else:
    hoff, woff = (ph - ch) // 2, (pw - cw) // 2
  return hoff, woff


def crop_window(size, out_size, hoff, woff):
  """For a resized image of size (nw, nh) padded to at least out_size, the crop at (hoff, woff) of the
  padded image as (top, left, bottom, right) inside the image plus the canvas offset (dy, dx)."""
  nw, nh = size
  ch, cw = out_size
  pad_top = max(ch - nh, 0) // 2
  pad_left = max(cw - nw, 0) // 2
  t, l = hoff - pad_top, woff - pad_left
  top, left = max(t, 0), max(l, 0)
  bottom, right = min(t + ch, nh), min(l + cw, nw)
  return top, left, bottom, right, top - t, left - l


def resize_crop_image(im, new_size, window, out_size, whole=False):
  """The crop of `im` resized to new_size (PIL bicubic), as uint8 out_size, black where padded.

  window = (top, left, bottom, right, dy, dx) from `crop_window`: the part of the resized image inside
  the crop, which goes to rows dy.. and columns dx.. of the output. Only that part is computed (PIL's
  resize with a source box), not the whole resized frame, unless `whole`: then the whole frame is resized
  and cropped, exactly as the original's demo and loader (`cmp_jax.inference` uses this for parity).
  """
  (nw, nh), (t, l, b, r, dy, dx) = new_size, window
  ch, cw = out_size
  w, h = im.size
  if im.mode != "RGB":
    im = im.convert("RGB")
  if whole or (l, t, r, b) == (0, 0, nw, nh):
    part = im.resize((nw, nh), Image.BICUBIC)
    if (l, t, r, b) != (0, 0, nw, nh):
      part = part.crop((l, t, r, b))
  else:
    sx, sy = w / nw, h / nh
    box = (l * sx, t * sy, min(r * sx, w), min(b * sy, h))
    part = im.resize((r - l, b - t), Image.BICUBIC, box=box)
  part = np.asarray(part)
  if part.shape[:2] == (ch, cw):
    return part
  out = np.zeros((ch, cw, 3), np.uint8)
  out[dy:dy + b - t, dx:dx + r - l] = part
  return out


def resize_crop_flow(flow, new_size, window, out_size):
  """The crop of `flow` resized to new_size (cv2 INTER_LINEAR of the whole flow, values times new_h / h).

  window as for `resize_crop_image`; 0 where padded.
  """
  (nw, nh), (t, l, b, r, dy, dx) = new_size, window
  ch, cw = out_size
  ratio = float(nh) / flow.shape[0]
  flow_r = cv2.resize(flow, (nw, nh), interpolation=cv2.INTER_LINEAR)
  part = flow_r[t:b, l:r] * ratio
  if part.shape[:2] == (ch, cw):
    return np.ascontiguousarray(part)
  out = np.zeros((ch, cw, 2), np.float32)
  out[dy:dy + b - t, dx:dx + r - l] = part
  return out


def normalise_table(mean, std):
  """The per-channel lookup table of (x - mean) / std for x = 0..255 (float32, as torchvision's Normalize),
  shaped 1 x 256 x 3 for `normalise` (cv2.LUT)."""
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  return ((np.arange(256, dtype=np.float32)[:, None] - mean) / std).reshape(1, 256, 3)


def normalise(image, table, out=None):
  """H x W x 3 uint8 RGB -> float32 (x - mean) / std by the `normalise_table` (written into `out` if given).

  The one normalisation of the network input: the pipeline's batches and `cmp_jax.inference` both use it.
  """
  image = np.ascontiguousarray(image, np.uint8)
  if out is None:
    return cv2.LUT(image, table)
  cv2.LUT(image, table, dst=out)
  return out


def fill_sparse(sparse, rows, cols, uv):
  """Writes guidance into an H x W x 4 sparse input [u, v, mask, mask]: sparse[rows, cols] = (u, v, 1, 1).

  The one construction of the network's guidance input: the pipeline (sampled points of the target flow)
  and `cmp_jax.inference` (the user's arrows) both use it. rows/cols: integer index arrays (or slices);
  uv: [..., 2] values. Where a pixel is listed twice, the later entry wins (numpy assignment order).
  """
  sparse[rows, cols, :2] = uv
  sparse[rows, cols, 2:] = 1.0
  return sparse


# --------------------------------------------------------------------------------------------------
# Augmentation and guidance.
# --------------------------------------------------------------------------------------------------

def augment(image, image2, flow, settings, pyrng):
  """The original's image_flow_aug (flip) then flow_aug (reverse, scale, rotate), with its random calls."""
  if settings.aug_flip and pyrng.random() < 0.5:
    image = np.ascontiguousarray(image[:, ::-1])
    image2 = None if image2 is None else np.ascontiguousarray(image2[:, ::-1])
    flow = np.ascontiguousarray(flow[:, ::-1])
    flow[:, :, 0] = -flow[:, :, 0]
  if settings.aug_reverse and pyrng.random() < 0.5:
    flow = -flow
  if settings.aug_scale:
    flow = flow * np.float32(pyrng.uniform(0.5, 2.0))
  if settings.aug_rotate and pyrng.random() < 0.5:
    length = np.sqrt(np.square(flow[:, :, 0]) + np.square(flow[:, :, 1]))
    with np.errstate(divide="ignore", invalid="ignore"):
      alpha = np.arctan(flow[:, :, 1] / flow[:, :, 0])
    alpha = np.where(length == 0, 0, alpha)  # the original's 0/0 -> NaN; length 0 gives 0 anyway
    theta = pyrng.uniform(0, np.pi * 2)
    flow = np.stack([length * np.cos(alpha + theta), length * np.sin(alpha + theta)], -1).astype(np.float32)
  return image, image2, flow


def guidance_points(flow, settings, rs):
  """(rows, cols) of the guidance pixels from `cmp_jax.sampling`, or None for 'full' (every pixel)."""
  if "full" in settings.strategy:
    return None
  return sampling.guidance_points(flow, settings.strategy, settings.bg_ratio, settings.nms_ks,
                                  settings.max_num_guide, rng=rs)
