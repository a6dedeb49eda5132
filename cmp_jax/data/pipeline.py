"""The input pipeline: list files or TFRecords -> per-host batches (tf.data).

Samples come from `cmp_jax.data.sources` (list files or records) and are made by
`cmp_jax.data.transforms` (decode, resize, crop, augment, guidance); this module assembles them into the
stream of batches: order, hosts, seeds, threads, bad data.

  it = make_train_iterator(config, start_step=step)     # endless; next(it) -> dict of numpy arrays
  val = make_val_iterator(config)                         # re-iterable; one pass over the val list
  print(it.bad_samples.summary())                         # skipped samples (skip_bad_samples=True)

A batch is a dict of numpy arrays for THIS host (B = per-host batch):

  image   [B, H, W, 3] float32  first frame, RGB, (x - mean) / std  (the network input)
  flow    [B, H, W, 2] float32  dense target flow (u, v) in pixels of the crop
  sparse  [B, H, W, 4] float32  guidance [u, v, mask, mask]: flow at the guidance pixels, 0 elsewhere
  index   [B] int32             row of the sample in the concatenated list (or record number)
  image2  [B, H, W, 3] float32  second frame, only with with_image2=True (CMP does not use it)
  valid   [B] bool              val only: False for the padding of the last batch and skipped bad samples

H x W is config.data.crop_size. Per sample the steps are the original's (reference §3.3), in its order
(`cmp_jax.data.transforms`): resize the short side to config.data.short_size (frames: PIL bicubic,
antialiased; flow: cv2 INTER_LINEAR, half-pixel, both components times new_h / h), pad to the crop where
smaller (frames black, flow 0, pad // 2 on top/left), crop (train: hoff = int(rand * (H - ch)) then woff
likewise; val: centre), train-only augmentations (config.data.aug_flip / aug_reverse / aug_scale /
aug_rotate), normalise, then the guidance sampler `cmp_jax.sampling` on the cropped flow.

The stream (train). Sample position p = 0, 1, 2, ... is the p-th sample of the GLOBAL stream; step s uses
positions [s * G, (s + 1) * G), G = config.batch_size * local_devices * process_count, and host h takes
the h-th contiguous slice of b = config.batch_size * local_devices of them (so local device d gets the d-th
slice of config.batch_size, as the original's per-GPU batches). Position p reads list entry
perm_e[p mod N], e = p // N, perm_e a permutation of the N entries drawn from (config.seed, e) with
numpy's RandomState (a stream numpy keeps fixed across versions). So the global stream does not depend on
the number of hosts (2 hosts x 2 devices == 1 host x 4 devices), and `start_step=k` gives exactly the
batches k, k+1, ... of a run started at 0: a resumed run sees the same data. All randomness of a sample
(crop offsets, augmentations, guidance) comes from generators seeded with (config.seed, position), so a
position always gives the same arrays, whatever the thread count.

Val: every entry of the val list once, in list order, centre crop, no augmentation, guidance seeded from
(config.seed, position) (so every evaluation shows the same points). The last batch is padded with
zero samples marked valid=False; every host runs the same number of batches.

Bad data. A missing, unreadable or corrupt frame or flow file, frames and flow of different sizes, a .flo
with a bad header, a flow that is not finite, a list line with the wrong number of fields, or an empty list
makes the pipeline raise `BadSampleError` naming the file(s), the list file and line, and the problem.
Empty or missing list files fail when the iterator is made; file problems when the batch holding the sample
is fetched (never a hang: the error travels through tf.data to `next()`). With
config.data.skip_bad_samples=True a bad sample is skipped and counted instead: in training its slot takes
the sample of a randomly drawn list entry (seeded from the position, like the original's memcached loader,
which retried a random index), so batch shapes and the positions of all other samples are unchanged; in
val it is marked valid=False. `iterator.bad_samples` (a `BadSampleStats`) holds the count and the files;
`summary()` gives a line to print. Counts include samples loaded ahead by prefetching.

Threads. One `tf.numpy_function` call fills one batch (per-sample numpy/PIL/OpenCV work, written in
place, frames normalised with a lookup table); tf.data runs config.data.num_threads such calls at once in
a private thread pool of that size (intra-op parallelism 1, autotune CPU budget num_threads) and keeps
config.data.prefetch batches ready, so the input pipeline stays off the cores XLA uses. PIL decoding and
resizing and OpenCV release the GIL. OpenCV is set to one thread (`cv2.setNumThreads(1)`, process-wide),
since the parallelism is across batches. Iterators still running at exit are closed by an atexit hook
(a tf.data thread inside numpy_function during interpreter shutdown would otherwise hang the exit);
`close()` stops one early.

Where this deliberately differs from the original:
  * Randomness is seeded per sample from (seed, position) instead of the DataLoader workers' unseeded
    numpy/Python RNGs; the calls are the same and in the same order (one RandomState per sample for the
    crop and the sampler, one random.Random for the augmentations), but the original is not reproducible.
  * The shuffle is one permutation per pass over the list (every entry once per pass) instead of the
    original's tiled-then-shuffled index list (DistributedGivenIterationSampler, duplicates anywhere, tied
    to total_iter and the world size).
  * Frames are resized only over the crop window (PIL resize with a source box) instead of resizing the
    whole frame and cropping: 99.9% of values are identical, the rest differ by 1-2 levels (float rounding
    of the box coordinates in PIL's filter weights). The flow is resized whole with cv2, as the original.
  * image2 (the original loads it; CMP never uses it) is decoded only with with_image2=True; without it
    only its header is read (its size is still checked).
  * JPEG decoding is PIL's as the original, so values match given the same libjpeg; other PIL builds may
    differ by +-1 level.
  * Blank lines and lines starting with '#' in list files are ignored (the original fails on them), as
    in `formats.read_list_files`.
  * aug_rotate keeps the original's arctan(v / u) (not arctan2), but pixels with u = v = 0, which the
    original turns into NaN, stay 0.
  * Skipped bad samples are replaced by a seeded random entry and counted (the original's file-system
    loader fails; its memcached loader retried an unseeded random index and printed a line).
"""

import atexit
import functools
import random
import struct
import threading
import weakref

import cv2
import numpy as np
import tensorflow as tf

from cmp_jax.data import formats, sources, transforms
from cmp_jax.data.sources import BadSampleError

# Streams of per-sample randomness (mixed into the seeds so that train, val and substitutes differ).
_TRAIN, _VAL, _SUBSTITUTE, _SHUFFLE = 1, 2, 3, 4
# In skip mode, the number of random substitutes tried for one bad slot before giving up.
MAX_SUBSTITUTE_TRIES = 100


class BadSampleStats:
  """Counts of skipped bad samples (skip_bad_samples=True). Thread-safe.

  Attributes:
    count: bad samples met so far (a sample met again in a later pass counts again).
    malformed_lines: list-file lines with the wrong number of fields, skipped when the lists were read.
    files: {file: reason} for the first `max_files` distinct bad files.
  """

  def __init__(self, max_files=1000):
    self._lock = threading.Lock()
    self.count = 0
    self.malformed_lines = 0
    self.files = {}
    self._max_files = max_files

  def record(self, bad):
    with self._lock:
      self.count += 1
      for f in bad.files:
        if f not in self.files and len(self.files) < self._max_files:
          self.files[f] = bad.reason

  def first(self, n=3):
    """(count, ['FILE: REASON', ...] for the first `n` bad files) for logs and metrics."""
    with self._lock:
      return self.count, [f"{f}: {why}" for f, why in list(self.files.items())[:n]]

  def summary(self):
    """One line for the log, e.g. 'bad samples skipped: 3 (2 files; first: a.jpg: file not found)'."""
    with self._lock:
      if not self.count and not self.malformed_lines:
        return "bad samples skipped: 0"
      first = next(iter(self.files.items()), None)
      first = f"; first: {first[0]}: {first[1]}" if first else ""
      lines = f", malformed list lines: {self.malformed_lines}" if self.malformed_lines else ""
      return f"bad samples skipped: {self.count} ({len(self.files)} files{first}){lines}"


def sample_rngs(seed, stream, position, attempt=0):
  """(np.random.RandomState, random.Random) for one sample, seeded from (seed, stream, position, attempt)."""
  seed, stream, position, attempt = int(seed), int(stream), int(position), int(attempt)
  words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, stream, position & 0xFFFFFFFF, position >> 32, attempt]
  rs = np.random.RandomState(words)
  pyrng = random.Random(int.from_bytes(struct.pack("<6I", *words), "little"))
  return rs, pyrng


# --------------------------------------------------------------------------------------------------
# The tf.data pipeline.
# --------------------------------------------------------------------------------------------------

class _Loader:
  """The function run by tf.data: step -> this host's batch of that step, with bad-data handling.

  Sample positions of step s on host h: s * G + h * b + [0, b) (G global, b per-host batch). One call
  fills one batch (written in place into preallocated arrays; tf.data runs num_threads calls at once).
  """

  def __init__(self, source, settings, seed, train, skip_bad, stats, per_host, global_batch, host, mean, std):
    self.source = source
    self.settings = settings
    self.seed = int(seed)
    self.train = train
    self.skip_bad = skip_bad
    self.stats = stats
    self.n = len(source)
    self.per_host, self.global_batch, self.host = per_host, global_batch, host
    self._norm = transforms.normalise_table(mean, std)
    self._errors = {}
    self._lock = threading.Lock()

  @functools.lru_cache(maxsize=4)
  def permutation(self, epoch):
    """The order of the list entries in pass `epoch` over the list."""
    return np.random.RandomState([self.seed & 0xFFFFFFFF, _SHUFFLE, epoch]).permutation(self.n)

  def index(self, position):
    """The list entry read at a position of the stream."""
    if not self.train:
      return position
    return int(self.permutation(position // self.n)[position % self.n])

  def positions(self, step):
    return step * self.global_batch + self.host * self.per_host + np.arange(self.per_host)

  def _error(self, index, bad):
    files = ", ".join(bad.files)
    return BadSampleError(f"bad sample (entry {index}, {self.source.where(index)}): {files}: {bad.reason}. "
                          f"Fix or remove the entry, or set config.data.skip_bad_samples=True to skip such "
                          f"samples (they are then counted in iterator.bad_samples).")

  def _fail(self, position, err):
    """Records `err` for the iterator (which re-raises it cleanly) and raises it."""
    with self._lock:
      self._errors[position] = err
    raise err

  def sample(self, position):
    """(index, image u8, image2 u8 | None, flow, points) for one position, or None (skipped, val only)."""
    stream = _TRAIN if self.train else _VAL
    index = self.index(position)
    attempt = 0
    while True:
      rs, pyrng = sample_rngs(self.seed, stream, position)
      try:
        return (index, *transforms.process(self.source.read(index), self.settings, self.train, rs, pyrng))
      except formats.BadFileError as bad:
        if not self.skip_bad:
          self._fail(position, self._error(index, bad))
        self.stats.record(bad)
        if not self.train:
          return None
        attempt += 1
        if attempt > MAX_SUBSTITUTE_TRIES:
          self._fail(position, BadSampleError(
              f"skip_bad_samples: {MAX_SUBSTITUTE_TRIES} random entries in a row are bad (last: "
              f"{', '.join(bad.files)}: {bad.reason}); the data is unusable"))
        index = int(sample_rngs(self.seed, _SUBSTITUTE, position, attempt)[0].randint(self.n))
      except Exception as e:  # noqa: BLE001 - anything else: say which sample it was, do not skip
        err = RuntimeError(f"error while loading entry {index} ({self.source.where(index)}): "
                           f"{type(e).__name__}: {e}")
        err.__cause__ = e
        self._fail(position, err)

  def __call__(self, step):
    b = self.per_host
    ch, cw = self.settings.crop_size
    image = np.zeros((b, ch, cw, 3), np.float32)
    image2 = np.zeros((b, ch, cw, 3) if self.settings.with_image2 else (b, 0, 0, 3), np.float32)
    flow = np.zeros((b, ch, cw, 2), np.float32)
    sparse = np.zeros((b, ch, cw, 4), np.float32)
    index = np.zeros((b,), np.int32)
    valid = np.zeros((b,), np.bool_)
    for i, position in enumerate(self.positions(int(step)).tolist()):
      if not self.train and position >= self.n:
        continue  # val padding: zeros, valid False
      out = self.sample(position)
      if out is None:
        continue  # skipped bad val sample
      index[i], im, im2, fl, points = out
      valid[i] = True
      transforms.normalise(im, self._norm, out=image[i])
      if im2 is not None:
        transforms.normalise(im2, self._norm, out=image2[i])
      flow[i] = fl
      if points is None:  # 'full'
        transforms.fill_sparse(sparse[i], slice(None), slice(None), fl)
      else:
        rows, cols = points
        transforms.fill_sparse(sparse[i], rows, cols, fl[rows, cols])
    return image, image2, flow, sparse, index, valid

  def pop_error(self):
    """The recorded error of the earliest failed position (the one tf.data delivers first), or None."""
    with self._lock:
      if not self._errors:
        return None
      first = min(self._errors)
      err = self._errors.pop(first)
      self._errors.clear()
      return err


def _options(num_threads):
  opts = tf.data.Options()
  opts.deterministic = True
  opts.threading.private_threadpool_size = max(1, int(num_threads))
  opts.threading.max_intra_op_parallelism = 1
  opts.autotune.cpu_budget = max(1, int(num_threads))
  # Exactly `prefetch` batches ahead (a batch of 96 crops of 384^2 is ~0.5 GB): no injected, autotuned
  # prefetch buffer.
  opts.experimental_optimization.inject_prefetch = False
  return opts


def _dataset(loader, steps, num_threads, prefetch, train):
  """steps (a tf.data of step numbers) -> batches (dicts of tensors)."""
  b = loader.per_host
  ch, cw = loader.settings.crop_size
  with_image2 = loader.settings.with_image2
  tout = (tf.float32, tf.float32, tf.float32, tf.float32, tf.int32, tf.bool)
  shapes = ((b, ch, cw, 3), (b, ch, cw, 3) if with_image2 else (b, 0, 0, 3), (b, ch, cw, 2), (b, ch, cw, 4),
            (b,), (b,))
  keys = ("image", "image2", "flow", "sparse", "index", "valid")

  def load(step):
    out = tf.numpy_function(loader, [step], tout, stateful=False, name="load_batch")
    batch = {}
    for key, t, shape in zip(keys, out, shapes):
      t.set_shape(shape)
      if key == "image2" and not with_image2 or key == "valid" and train:
        continue
      batch[key] = t
    return batch

  ds = steps.map(load, num_parallel_calls=max(1, int(num_threads)), deterministic=True)
  ds = ds.prefetch(max(1, int(prefetch)))
  return ds.with_options(_options(num_threads))


def _hosts(per_device, process_index, process_count, local_devices, what):
  """(per-host batch, global batch, host); jax is asked only for what the caller leaves None."""
  if process_index is None or process_count is None or local_devices is None:
    import jax  # noqa: PLC0415 - only when the caller does not say
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    local_devices = jax.local_device_count() if local_devices is None else local_devices
  process_index, process_count, local_devices = int(process_index), int(process_count), int(local_devices)
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"{what}: process_index {process_index} is not in [0, process_count={process_count})")
  if local_devices < 1:
    raise ValueError(f"{what}: local_devices must be positive, got {local_devices}")
  per_host = int(per_device) * local_devices
  return per_host, per_host * process_count, process_index


# Live tf.data iterators, closed at exit: a tf.data thread still inside tf.numpy_function while Python
# finalises would wait for the GIL forever and hang the exit.
_LIVE = weakref.WeakSet()


@atexit.register
def _close_live_iterators():
  for it in list(_LIVE):
    it.close()


class _Stream:
  """A tf.data iterator yielding dicts of numpy arrays; sample errors become BadSampleError."""

  def __init__(self, dataset, loader):
    self._it = iter(dataset)
    self._loader = loader
    _LIVE.add(self)

  def __iter__(self):
    return self

  def __next__(self):
    if self._it is None:
      raise StopIteration
    try:
      batch = next(self._it)
    except StopIteration:
      self.close()
      raise
    except tf.errors.OpError:
      err = self._loader.pop_error()
      self.close()
      if err is not None:
        raise err from None
      raise
    return {k: v.numpy() for k, v in batch.items()}

  def close(self):
    """Stops the background work (prefetching) of this stream."""
    self._it = None


class _Batches:
  def __init__(self, dataset, loader):
    self.dataset = dataset
    self.bad_samples = loader.stats
    self.batch_size = loader.per_host
    self.global_batch_size = loader.global_batch
    self.num_samples = loader.n
    self._loader = loader

  def check_files(self):
    """Checks that every file of the list exists (records hold their bytes: nothing to check).

    Raises BadSampleError naming the first missing file and how many there are; with skip_bad_samples only
    when every sample is missing. Returns the number of samples with a missing file.
    """
    missing = getattr(self._loader.source, "missing_files", lambda: [])()
    if not missing:
      return 0
    entries = len({where for where, _ in missing})
    where, path = missing[0]
    msg = f"{entries} of {self.num_samples} entries name missing files; the first: {where}: {path}"
    if not self._loader.skip_bad:
      raise BadSampleError(msg + ". Fix the list (or set config.data.skip_bad_samples=True to skip such entries)")
    if entries == self.num_samples:
      raise BadSampleError(msg + ": every entry, so nothing is left")
    return entries


class TrainIterator(_Batches):
  """Endless iterator over this host's training batches from `start_step` on.

  Attributes: bad_samples (BadSampleStats), batch_size (per host), global_batch_size, num_samples (N),
  start_step, dataset (the tf.data.Dataset). close() stops its background work.
  """

  def __init__(self, dataset, loader, start_step):
    super().__init__(dataset, loader)
    self.start_step = start_step
    self._stream = _Stream(self.dataset, self._loader)

  def __iter__(self):
    return self

  def __next__(self):
    return next(self._stream)

  def close(self):
    self._stream.close()


class ValIterator(_Batches):
  """One pass over the val list per `iter()`; `len()` is the number of batches (the same on every host).

  Attributes as TrainIterator (num_samples: entries in the val list), and num_batches.
  """

  def __init__(self, dataset, loader, num_batches):
    super().__init__(dataset, loader)
    self.num_batches = num_batches

  def __iter__(self):
    return _Stream(self.dataset, self._loader)

  def __len__(self):
    return self.num_batches


def _make_loader(config, split, per_device_batch, process_index, process_count, local_devices, with_image2,
                 caller):
  """The per-sample loader of one split for this host (its source, settings, batch geometry, bad-sample stats)."""
  cv2.setNumThreads(1)  # the parallelism is across batches
  per_host, gbs, host = _hosts(per_device_batch, process_index, process_count, local_devices, caller)
  d = config.data
  skip = bool(d.skip_bad_samples)
  stats = BadSampleStats()
  source = sources.make_source(config, split, skip_malformed=skip)
  stats.malformed_lines = source.malformed_lines
  settings = transforms.Settings.from_config(config, with_image2)
  return _Loader(source, settings, config.seed, split == "train", skip, stats, per_host, gbs, host, d.image_mean,
                 d.image_std)


def make_train_iterator(config, *, start_step=0, process_index=None, process_count=None, local_devices=None,
                        with_image2=False):
  """This host's training batches, step start_step onwards (see the module docstring).

  Args:
    config: the experiment config (uses config.seed, config.batch_size, config.data.*).
    start_step: the first step to produce: the same batches as steps start_step, ... of a run from 0.
    process_index, process_count: this host and the host count (default jax.process_index()/count()).
    local_devices: devices on this host (default jax.local_device_count()); the per-host batch is
      config.batch_size * local_devices and the global batch G that times process_count.
    with_image2: also decode and return the second frame ('image2').

  Returns:
    TrainIterator: next() -> {'image', 'flow', 'sparse', 'index'[, 'image2']} numpy arrays of
    config.batch_size * local_devices samples; `.bad_samples` counts skipped samples.
  """
  loader = _make_loader(config, "train", config.batch_size, process_index, process_count, local_devices,
                        with_image2, "make_train_iterator")
  ds = _dataset(loader, tf.data.Dataset.range(int(start_step), 2 ** 62), config.data.num_threads,
                config.data.prefetch, train=True)
  return TrainIterator(ds, loader, int(start_step))


def make_val_iterator(config, *, process_index=None, process_count=None, local_devices=None,
                      with_image2=False, max_batches=None):
  """This host's validation batches: each iter() is one pass over the whole val list (module docstring).

  Args as make_train_iterator; the per-host batch is config.val_batch_size * local_devices.
  max_batches: stop after this many batches (config.val_iter); None or -1: the whole list.

  Returns:
    ValIterator: iterating gives {'image', 'flow', 'sparse', 'index', 'valid'[, 'image2']}; the last
    batch is padded (valid=False). len() = ceil(N / global batch), or max_batches if smaller.
  """
  loader = _make_loader(config, "val", config.val_batch_size, process_index, process_count, local_devices,
                        with_image2, "make_val_iterator")
  steps = -(-loader.n // loader.global_batch)
  if max_batches is not None and max_batches >= 0:
    steps = min(steps, int(max_batches))
  ds = _dataset(loader, tf.data.Dataset.range(steps), config.data.num_threads, config.data.prefetch,
                train=False)
  return ValIterator(ds, loader, steps)
