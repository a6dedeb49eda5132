"""On-disk formats: list files, images, flow as .flo or as two 8-bit JPEGs, TFRecords.

Everything here reads or writes one file or one record; the tf.data pipeline
(`cmp_jax.data.pipeline`) and the dataset maker (`cmp_jax.data.prepare`) are
built on it. Reference §3.1-§3.2.

Flow layout everywhere: H x W x 2 float32, channel 0 = u (x, right), 1 = v
(y, down), in pixels.

List files (the original's `train_source` / `val_source`), one sample a line,
whitespace-separated, paths relative to `data_root`:
  flow_file_type 'jpg':  img1 img2 flowx flowy
  flow_file_type 'flo':  img1 img2 flow.flo

JPEG flow (what every original config reads): each of u and v is an 8-bit
grey image with p = round((f + 50) / 100 * 255), decoded as
f = float32(p) / 255 * 100 - 50 (in float32, in that order, as the original).
So f is in [-50, 50] with a quantum of 100/255 = 0.392 px, and there is no
exact zero (p 127 -> -0.196, 128 -> +0.196). JPEG is lossy: at quality 100 a
smooth flow plane comes back within about one level.

.flo (Middlebury): float32 magic 202021.25, int32 width, int32 height, then
height*width*2 float32 (u, v interleaved), little-endian.

TFRecords (`TFRECORD_FEATURES`): one tf.train.Example per pair, images as the
JPEG bytes of the files, flow as the two JPEG planes ('jpg') or as raw
little-endian float16/float32 H x W x 2 bytes. `parse_tfrecord_example` is the
one reader of a record (the pipeline's too); `decode_tfrecord_example` decodes it.

Every reader raises `DataError` naming the file (and the line, for list
files) when a file is missing, unreadable or malformed; the decoders of bytes
raise its subclass `BadFileError`, which keeps the name and the reason apart.
"""

import collections.abc
import os
import struct
from typing import NamedTuple

import numpy as np
from PIL import Image

from cmp_jax.fileio import atomic_write_bytes  # noqa: F401  (formats' writers and their callers use it)

FLO_MAGIC = 202021.25
FLOW_JPG_OFFSET = 50.0     # f = p / 255 * FLOW_JPG_RANGE - FLOW_JPG_OFFSET
FLOW_JPG_RANGE = 100.0
FLOW_FILE_TYPES = ("jpg", "flo")
LIST_COLUMNS = {"jpg": 4, "flo": 3}


class DataError(ValueError):
  """A data file (image, flow, list, record) is missing, unreadable or malformed; the message names it."""


class BadFileError(DataError):
  """A DataError about given files or records: `files` names them, `reason` says what is wrong.

  The message is 'FILES: REASON'; the input pipeline keeps the two apart to count bad files.
  """

  def __init__(self, files, reason):
    self.files = tuple(str(f) for f in files)
    self.reason = reason
    super().__init__(f"{', '.join(self.files)}: {reason}")

  def __reduce__(self):
    return type(self), (self.files, self.reason)


def _read_bytes(path, what):
  try:
    with open(path, "rb") as f:
      return f.read()
  except FileNotFoundError:
    raise DataError(f"{what} not found: {path}") from None
  except OSError as e:
    raise DataError(f"cannot read {what} {path}: {e}") from None


# ----------------------------------------------------------------------------
# .flo

def read_flo(path):
  """Reads a Middlebury .flo file into H x W x 2 float32. DataError naming the file if it is not one."""
  data = _read_bytes(path, ".flo flow file")
  return decode_flo(data, path)


def decode_flo(data, name="<bytes>"):
  """Decodes the bytes of a .flo file (see `read_flo`); BadFileError naming `name` if malformed."""
  if len(data) < 12:
    raise BadFileError([name], f"not a .flo file (only {len(data)} bytes)")
  magic = np.frombuffer(data, "<f4", 1)[0]
  if magic != np.float32(FLO_MAGIC):
    raise BadFileError([name], f"not a .flo file (magic number {float(magic)!r}, expected {FLO_MAGIC})")
  w, h = struct.unpack("<ii", data[4:12])
  if w <= 0 or h <= 0:
    raise BadFileError([name], f"bad .flo size {w} x {h}")
  n = 2 * w * h
  if len(data) < 12 + 4 * n:
    raise BadFileError([name], f"truncated .flo file ({len(data)} bytes, {w} x {h} needs {12 + 4 * n})")
  return np.frombuffer(data, "<f4", n, offset=12).reshape(h, w, 2).astype(np.float32)


def encode_flo(flow):
  """The bytes of a .flo file holding `flow` (H x W x 2)."""
  flow = np.asarray(flow)
  if flow.ndim != 3 or flow.shape[2] != 2:
    raise ValueError(f"flow must be H x W x 2, got shape {flow.shape}")
  h, w = flow.shape[:2]
  return (np.array([FLO_MAGIC], "<f4").tobytes() + struct.pack("<ii", w, h)
          + np.ascontiguousarray(flow, "<f4").tobytes())


def write_flo(path, flow):
  """Writes `flow` (H x W x 2) as a Middlebury .flo file, atomically."""
  atomic_write_bytes(path, encode_flo(flow))


# ----------------------------------------------------------------------------
# JPEG flow (two 8-bit planes)

def encode_jpg_flow(flow):
  """(px, py) uint8 H x W planes: p = round((f + 50) / 100 * 255), clipped to 0..255."""
  flow = np.asarray(flow, np.float64)
  if flow.ndim != 3 or flow.shape[2] != 2:
    raise ValueError(f"flow must be H x W x 2, got shape {flow.shape}")
  p = np.clip(np.rint((flow + FLOW_JPG_OFFSET) / FLOW_JPG_RANGE * 255.0), 0, 255).astype(np.uint8)
  return p[:, :, 0].copy(), p[:, :, 1].copy()


def decode_jpg_flow(px, py):
  """H x W x 2 float32 flow from the two uint8 planes, as the original: float32(p) / 255 * 100 - 50."""
  px = np.asarray(px)
  py = np.asarray(py)
  if px.shape != py.shape or px.ndim != 2:
    raise ValueError(f"flow planes must be two H x W arrays of one shape, got {px.shape} and {py.shape}")
  fx = px.astype(np.float32) / 255 * 100 - 50
  fy = py.astype(np.float32) / 255 * 100 - 50
  return np.stack([fx, fy], axis=-1)


def read_jpg_flow(x_path, y_path):
  """Reads the x and y flow JPEGs into H x W x 2 float32 (PIL decoding, as the original)."""
  px = read_gray(x_path, "flow x image")
  py = read_gray(y_path, "flow y image")
  if px.shape != py.shape:
    raise DataError(f"flow planes differ in size: {x_path} is {px.shape[1]}x{px.shape[0]}, "
                    f"{y_path} is {py.shape[1]}x{py.shape[0]}")
  return decode_jpg_flow(px, py)


# ----------------------------------------------------------------------------
# Images

def _decode_pil(data, name, what, mode):
  import io
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      if im.mode != mode:
        im = im.convert(mode)
      return np.asarray(im)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise DataError(f"cannot decode {what} {name}: {e}") from None


def read_image(path, what="image"):
  """Reads an image file as H x W x 3 uint8 RGB (PIL `.convert('RGB')`, as the original)."""
  return _decode_pil(_read_bytes(path, what), path, what, "RGB")


def read_gray(path, what="image"):
  """Reads a single-channel 8-bit image as H x W uint8 (PIL, mode 'L')."""
  return _decode_pil(_read_bytes(path, what), path, what, "L")


def decode_image(data, name="<bytes>"):
  """Decodes encoded image bytes as H x W x 3 uint8 RGB (PIL)."""
  return _decode_pil(data, name, "image", "RGB")


def encode_jpeg(image, quality=95):
  """JPEG bytes of an H x W x 3 RGB or H x W grey uint8 array (OpenCV's libjpeg, 4:2:0 chroma)."""
  import cv2
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"encode_jpeg needs uint8, got {image.dtype}")
  if image.ndim == 3:
    image = image[:, :, ::-1]  # RGB -> BGR for OpenCV
  ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image), [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
  if not ok:
    raise ValueError("JPEG encoding failed")
  return buf.tobytes()


# ----------------------------------------------------------------------------
# List files

class ListEntry(NamedTuple):
  """One line of a list file. Paths are joined with data_root."""
  img1: str
  img2: str
  flow: tuple       # (flowx, flowy) for 'jpg', (flow.flo,) for 'flo'
  where: str        # 'list_file:line' for error messages


class ListEntries(collections.abc.Sequence):
  """The samples of list files (`read_list_files`): entries[i] is a ListEntry, slices give lists.

  The lines are kept in one byte buffer with offsets, not as Python objects, so the 1.26M YFCC lines take
  about the size of the files.

  Attributes: list_files, data_root, flow_file_type; malformed_lines (lines skipped with skip_malformed).
  """

  def __init__(self, list_files, data_root, flow_file_type, lines, where_file, where_line, malformed_lines):
    self.list_files = list_files
    self.data_root = data_root
    self.flow_file_type = flow_file_type
    self.malformed_lines = malformed_lines
    self._offsets = np.cumsum([0] + [len(l) for l in lines], dtype=np.int64)
    self._buf = b"".join(lines)
    self._file = np.asarray(where_file, np.int32)
    self._line = np.asarray(where_line, np.int32)

  def __len__(self):
    return len(self._offsets) - 1

  def fields(self, i):
    """The path fields of entry i, as written in the list."""
    return self._buf[self._offsets[i]:self._offsets[i + 1]].decode("utf-8").split(" ")

  def where(self, i):
    """'list_file:line' of entry i."""
    return f"{self.list_files[self._file[i]]}:{self._line[i]}"

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    n = len(self)
    if not -n <= i < n:
      raise IndexError(f"list entry {i} out of range ({n} entries)")
    i %= n
    paths = [os.path.join(self.data_root, p) for p in self.fields(i)]
    return ListEntry(paths[0], paths[1], tuple(paths[2:]), self.where(i))


def read_list_files(list_files, data_root="", flow_file_type="jpg", skip_malformed=False):
  """Reads the original's list files, lines concatenated in order, into ListEntries.

  Args:
    list_files: a path or a sequence of paths (config `train_source` / `val_source`).
    data_root: joined in front of every path in the lists ('' = as written).
    flow_file_type: 'jpg' (4 columns) or 'flo' (3 columns).
    skip_malformed: skip lines with the wrong number of columns (counted in `.malformed_lines`) instead of
      raising.

  Blank lines and lines starting with '#' are skipped. Raises DataError naming the file and line for a
  malformed line, and naming the file for a missing, non-UTF-8 or empty list.
  """
  if flow_file_type not in LIST_COLUMNS:
    raise ValueError(f"flow_file_type must be one of {FLOW_FILE_TYPES}, got {flow_file_type!r}")
  if isinstance(list_files, (str, os.PathLike)):
    list_files = [list_files]
  list_files = tuple(str(f) for f in list_files)
  if not list_files:
    raise DataError("no list files given")
  want = LIST_COLUMNS[flow_file_type]
  layout = "img1 img2 flowx flowy" if flow_file_type == "jpg" else "img1 img2 flow.flo"
  lines, where_file, where_line, malformed = [], [], [], 0
  for fi, path in enumerate(list_files):
    text = _read_bytes(path, "list file")
    try:
      text.decode("utf-8")
    except UnicodeDecodeError as e:
      raise DataError(f"list file {path} is not UTF-8 text: {e}") from None
    n0 = len(lines)
    for ln, line in enumerate(text.splitlines(), 1):
      fields = line.split()
      if not fields or fields[0].startswith(b"#"):
        continue
      if len(fields) != want:
        if not skip_malformed:
          raise DataError(f"{path}:{ln}: expected {want} columns ({layout}) for flow_file_type "
                          f"{flow_file_type!r}, got {len(fields)}: {line.strip().decode()!r}")
        malformed += 1
        continue
      lines.append(b" ".join(fields))
      where_file.append(fi)
      where_line.append(ln)
    if len(lines) == n0:
      raise DataError(f"list file {path} holds no samples")
  return ListEntries(list_files, data_root or "", flow_file_type, lines, where_file, where_line, malformed)


def format_list_line(img1, img2, flow_paths):
  """One list line (paths as given, relative to data_root); no spaces allowed in paths."""
  cols = [img1, img2, *flow_paths]
  for c in cols:
    if not c or any(ch.isspace() for ch in c):
      raise ValueError(f"list paths cannot be empty or contain whitespace: {c!r}")
  return " ".join(cols)


def write_list_file(path, lines):
  """Writes list lines (from `format_list_line`) atomically, one per line."""
  atomic_write_bytes(path, "".join(l + "\n" for l in lines).encode("utf-8"))


# ----------------------------------------------------------------------------
# Whole samples

def read_flow(flow_paths, flow_file_type="jpg"):
  """Flow from a ListEntry's flow paths: (x.jpg, y.jpg) or (f.flo,)."""
  if flow_file_type == "jpg":
    return read_jpg_flow(*flow_paths)
  if flow_file_type == "flo":
    return read_flo(flow_paths[0])
  raise ValueError(f"flow_file_type must be one of {FLOW_FILE_TYPES}, got {flow_file_type!r}")


def read_sample(entry, flow_file_type="jpg"):
  """(img1, img2, flow) for one ListEntry: two H x W x 3 uint8 RGB and H x W x 2 float32.

  Checks, as the original asserts, that both images have the flow's size.
  """
  img1 = read_image(entry.img1)
  img2 = read_image(entry.img2)
  flow = read_flow(entry.flow, flow_file_type)
  fh, fw = flow.shape[:2]
  for path, im in ((entry.img1, img1), (entry.img2, img2)):
    if im.shape[:2] != (fh, fw):
      raise DataError(f"{entry.where}: image {path} is {im.shape[1]}x{im.shape[0]} but its flow "
                      f"{entry.flow[0]} is {fw}x{fh}")
  return img1, img2, flow


# ----------------------------------------------------------------------------
# TFRecords
#
# One tf.train.Example per pair. Feature spec (name: type, meaning):
TFRECORD_FEATURES = {
    "img1": ("bytes", "first frame, encoded image bytes (JPEG as on disk)"),
    "img2": ("bytes", "second frame, encoded image bytes"),
    "height": ("int64", "frame and flow height"),
    "width": ("int64", "frame and flow width"),
    "flow_encoding": ("bytes", "b'jpg', b'float16' or b'float32'"),
    "flow_x": ("bytes", "'jpg': u plane as an 8-bit grey JPEG (p = (u+50)/100*255); else empty"),
    "flow_y": ("bytes", "'jpg': v plane as an 8-bit grey JPEG; else empty"),
    "flow_raw": ("bytes", "'float16'/'float32': H x W x 2 little-endian (u, v) values; else empty"),
    "key": ("bytes", "img1 path relative to the dataset root, for messages"),
}
RECORD_FLOW_ENCODINGS = ("jpg", "float16", "float32")


def make_tfrecord_example(img1_bytes, img2_bytes, height, width, key, flow_encoding="jpg",
                          flow_x=b"", flow_y=b"", flow_raw=b""):
  """A serialised tf.train.Example with `TFRECORD_FEATURES` (imports TensorFlow)."""
  import tensorflow as tf
  if flow_encoding not in RECORD_FLOW_ENCODINGS:
    raise ValueError(f"flow_encoding must be one of {RECORD_FLOW_ENCODINGS}, got {flow_encoding!r}")

  def b(v):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

  def i(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

  feats = {
      "img1": b(img1_bytes), "img2": b(img2_bytes), "height": i(height), "width": i(width),
      "flow_encoding": b(flow_encoding.encode()), "flow_x": b(flow_x), "flow_y": b(flow_y),
      "flow_raw": b(flow_raw), "key": b(key.encode() if isinstance(key, str) else key),
  }
  # deterministic: map keys sorted, so a rebuild gives byte-identical records
  return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString(deterministic=True)


class TFRecordExample(NamedTuple):
  """The fields of one record (`parse_tfrecord_example`), still encoded."""
  img1: bytes           # encoded image bytes
  img2: bytes
  flow: tuple           # 'jpg': (flow_x, flow_y) JPEG bytes; 'float16' / 'float32': (flow_raw,)
  flow_encoding: str    # 'jpg', 'float16' or 'float32'
  height: int           # None when the record has none (a 'jpg' record does not need them)
  width: int
  key: str              # img1 path relative to the dataset root; '' if the record has none
  name: str             # 'NAME (key)' for messages; a feature is named 'NAME (key):img1'


def parse_tfrecord_example(serialized, name="<record>"):
  """Splits one serialised tf.train.Example (`TFRECORD_FEATURES`) into its fields (imports TensorFlow).

  Nothing is decoded: `decode_tfrecord_example` or the input pipeline decode the images and flow.
  `name` names the record in errors (e.g. 'train-00000-of-00004.tfrecord#34'). Raises BadFileError for
  a record that is not an Example, lacks a feature, or has an unknown flow_encoding. A record without
  flow_encoding is 'jpg'.
  """
  import tensorflow as tf
  try:
    feat = tf.train.Example.FromString(serialized).features.feature
  except Exception:  # noqa: BLE001 - protobuf raises its own DecodeError
    raise BadFileError([name], "record is not a tf.train.Example (corrupt)") from None
  key = feat["key"].bytes_list.value[0].decode(errors="replace") if "key" in feat else ""
  if key:
    name = f"{name} ({key})"

  def get(feature):
    if feature not in feat or not feat[feature].bytes_list.value or not feat[feature].bytes_list.value[0]:
      raise BadFileError([name], f"record has no {feature!r} feature")
    return feat[feature].bytes_list.value[0]

  def size(feature):
    return feat[feature].int64_list.value[0] if feature in feat and feat[feature].int64_list.value else None

  enc = feat["flow_encoding"].bytes_list.value[0].decode() if "flow_encoding" in feat else "jpg"
  h, w = size("height"), size("width")
  if enc == "jpg":
    flow = (get("flow_x"), get("flow_y"))
  elif enc in ("float16", "float32"):
    if h is None or w is None:
      raise BadFileError([name], "record has no height/width for its raw flow")
    flow = (get("flow_raw"),)
  else:
    raise BadFileError([name], f"record has an unknown flow_encoding {enc!r}")
  return TFRecordExample(get("img1"), get("img2"), flow, enc, h, w, key, name)


def decode_raw_flow(data, encoding, height, width, name="<bytes>"):
  """H x W x 2 float32 from a record's flow_raw: little-endian 'float16' or 'float32' (u, v) values."""
  dtype = np.dtype("<f2" if encoding == "float16" else "<f4")
  need = height * width * 2 * dtype.itemsize
  if len(data) != need:
    raise BadFileError([name], f"flow_raw holds {len(data)} bytes, {width}x{height}x2 {encoding} needs {need}")
  return np.frombuffer(data, dtype).reshape(height, width, 2).astype(np.float32)


def decode_tfrecord_example(serialized, name="<record>"):
  """(img1, img2, flow, key) of one serialised record, decoded as `read_sample` decodes files (PIL)."""
  ex = parse_tfrecord_example(serialized, name)
  img1 = decode_image(ex.img1, f"{ex.name}:img1")
  img2 = decode_image(ex.img2, f"{ex.name}:img2")
  if ex.flow_encoding == "jpg":
    px = _decode_pil(ex.flow[0], f"{ex.name}:flow_x", "flow x image", "L")
    py = _decode_pil(ex.flow[1], f"{ex.name}:flow_y", "flow y image", "L")
    flow = decode_jpg_flow(px, py)
  else:
    flow = decode_raw_flow(ex.flow[0], ex.flow_encoding, ex.height, ex.width, f"{ex.name}:flow_raw")
  return img1, img2, flow, ex.key
