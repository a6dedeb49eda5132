"""Where samples come from: list files or TFRecords, N samples addressed by an index.

  source = make_source(config, "train")   # ListSource (config.data.train_source) or RecordSource (train_records)
  len(source)                             # N
  source.read(i)                          # -> EncodedSample: the sample's files, not decoded
  source.where(i)                         # 'list.txt:12' or 'train-00000-of-00004.tfrecord#34', for messages

Nothing is decoded here: `cmp_jax.data.transforms` decodes an EncodedSample. A file of a sample is named
by a ref, a path (list files; read only when the sample is decoded) or (bytes, label) (record features).
Problems with the lists or record files themselves raise BadSampleError when the source is made.
"""

import dataclasses
import os
import struct
import threading

import numpy as np
import tensorflow as tf

from cmp_jax.data import formats


class BadSampleError(formats.DataError):
  """A sample cannot be used: a file is missing or corrupt, or sizes disagree. The message names the files."""


@dataclasses.dataclass
class EncodedSample:
  """The encoded files of one sample, as refs: a path (str) or (bytes, label) for record features."""
  image1: object
  image2: object
  flow: tuple          # 'jpg': (x_ref, y_ref); 'flo': (flo_ref,); 'raw': ((bytes, label), encoding, h, w)
  flow_kind: str       # 'jpg', 'flo' or 'raw' (a record's float16 / float32 flow)
  where: str           # 'list.txt:12' or 'train-00000-of-00004.tfrecord#34 (key)', for messages


def ref_label(ref):
  """The name of a ref in messages: its path, or a record feature's label."""
  return ref if isinstance(ref, str) else ref[1]


def read_ref(ref):
  """The bytes of a ref (reads the file of a path); BadFileError naming it if it cannot be read."""
  if not isinstance(ref, str):
    return ref[0]
  try:
    with open(ref, "rb") as f:
      return f.read()
  except FileNotFoundError:
    raise formats.BadFileError([ref], "file not found") from None
  except OSError as e:
    raise formats.BadFileError([ref], f"cannot read file ({e.strerror or e})") from None


class ListSource:
  """Samples from original-format list files (reference §3.1), paths relative to data_root.

  jpg: `img1 img2 flow_x flow_y` per line; flo: `img1 img2 flow.flo`; read by `formats.read_list_files`
  (compactly: 1.26M YFCC lines do not become Python objects).
  """

  def __init__(self, list_files, data_root, flow_file_type, skip_malformed=False):
    if not list_files:
      raise BadSampleError("no list files given (config.data.train_source / val_source is empty)")
    try:
      self.entries = formats.read_list_files(list_files, data_root, flow_file_type, skip_malformed)
    except formats.DataError as e:
      raise BadSampleError(str(e)) from None
    self.malformed_lines = self.entries.malformed_lines  # skipped with skip_malformed

  def __len__(self):
    return len(self.entries)

  def where(self, i):
    return self.entries.where(i)

  def missing_files(self):
    """[(where, path)] of every file the lists name that does not exist (a stat each: cheap for val lists)."""
    return [(e.where, f) for e in (self.entries[i] for i in range(len(self.entries)))
            for f in (e.img1, e.img2, *e.flow) if not os.path.isfile(f)]

  def read(self, i):
    e = self.entries[i]
    return EncodedSample(image1=e.img1, image2=e.img2, flow=e.flow, flow_kind=self.entries.flow_file_type,
                         where=e.where)


class RecordSource:
  """Samples from sharded TFRecord files of tf.train.Example (`formats.TFRECORD_FEATURES`, by prepare).

  Random access: the record offsets of every shard are read once (a scan of the 12-byte record headers,
  no data read), then a record is fetched with one os.pread. The record CRCs are not checked; a damaged
  record shows up as an unparsable Example or an undecodable image and is reported with its file and
  record number.
  """

  def __init__(self, pattern):
    files = sorted(tf.io.gfile.glob(pattern)) if isinstance(pattern, str) else sorted(pattern)
    if not files:
      raise BadSampleError(f"record files {pattern!r}: no file matches")
    self.files = files
    self._fds = {}
    offsets, lengths, shard = [], [], []
    for si, path in enumerate(files):
      o, l = _scan_tfrecord(path)
      offsets.append(o)
      lengths.append(l)
      shard.append(np.full(len(o), si, np.int32))
    self._offset = np.concatenate(offsets)
    self._length = np.concatenate(lengths)
    self._shard = np.concatenate(shard)
    self._rank = np.concatenate([np.arange(len(o), dtype=np.int64) for o in offsets])
    if len(self._offset) == 0:
      raise BadSampleError(f"record files {pattern!r}: no records in {len(files)} file(s)")
    self._lock = threading.Lock()
    self.malformed_lines = 0

  def __len__(self):
    return len(self._offset)

  def where(self, i):
    return f"{self.files[self._shard[i]]}#{self._rank[i]}"

  def _fd(self, shard):
    fd = self._fds.get(shard)
    if fd is None:
      with self._lock:
        fd = self._fds.get(shard)
        if fd is None:
          fd = os.open(self.files[shard], os.O_RDONLY)
          self._fds[shard] = fd
    return fd

  def read(self, i):
    where = self.where(i)
    data = os.pread(self._fd(self._shard[i]), int(self._length[i]), int(self._offset[i]))
    if len(data) != self._length[i]:
      raise formats.BadFileError([where], "record is truncated")
    ex = formats.parse_tfrecord_example(data, where)

    def ref(feature, value):
      return (value, f"{ex.name}:{feature}")

    if ex.flow_encoding == "jpg":
      flow, kind = (ref("flow_x", ex.flow[0]), ref("flow_y", ex.flow[1])), "jpg"
    else:
      flow, kind = (ref("flow_raw", ex.flow[0]), ex.flow_encoding, int(ex.height), int(ex.width)), "raw"
    return EncodedSample(image1=ref("img1", ex.img1), image2=ref("img2", ex.img2), flow=flow, flow_kind=kind,
                         where=ex.name)


def _scan_tfrecord(path):
  """(offsets, lengths) of the records' data in a TFRecord file (uint64 len, uint32 crc, data, uint32 crc)."""
  offsets, lengths = [], []
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    pos = 0
    while pos < size:
      head = f.read(12)
      if len(head) < 12:
        raise BadSampleError(f"record file {path}: truncated record header at byte {pos}")
      (n,) = struct.unpack("<Q", head[:8])
      if pos + 12 + n + 4 > size:
        raise BadSampleError(f"record file {path}: record at byte {pos} runs past the end of the file")
      offsets.append(pos + 12)
      lengths.append(n)
      pos += 12 + n + 4
      f.seek(pos)
  return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)


def make_source(config, split, skip_malformed=False):
  """The train or val source named by config.data: `{split}_records` when set, else `{split}_source`.

  skip_malformed: skip list lines with the wrong number of fields (counted in `source.malformed_lines`).
  """
  d = config.data
  records = d.get(f"{split}_records", "")
  if records:
    return RecordSource(records)
  return ListSource(tuple(d[f"{split}_source"]), d.data_root, d.flow_file_type, skip_malformed)
