"""The tf.data input pipeline (cmp_jax.data.pipeline) on tiny synthetic frames and on the shipped sample.

Expected values come from the original's recipe (reference §3.3): the transcription of the original's
loader in cmp_jax.original.loader (PIL full-frame bicubic resize, cv2 flow resize, crop, the original's
sampler) run with the same RandomState, hand-computed sizes, ratios and paddings, and the stream layout
(positions s * G + h * b + j) written out by hand.
"""

import os

import numpy as np
import pytest
from PIL import Image

from cmp_jax import config_lib
from cmp_jax.data import formats, pipeline, transforms
from cmp_jax.original import loader as original

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "sample")
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


# ----------------------------------------------------------------------------------------------------------
# Tiny datasets on disk.
# ----------------------------------------------------------------------------------------------------------

def _frame(rng, h, w):
  """A textured RGB frame (smooth noise, so JPEG and resizing have something to do)."""
  small = rng.randint(0, 256, (h // 4 + 2, w // 4 + 2, 3)).astype(np.uint8)
  return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def _flow(rng, h, w):
  """Two moving regions with a sharp motion boundary (so the watershed sampler finds points)."""
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  cut = w * rng.uniform(0.3, 0.7)
  u = np.where(x < cut, 4.0 + 0.1 * y, -3.0)
  v = np.where(x < cut, -2.0, 1.5 + 0.05 * x)
  return np.stack([u, v], -1).astype(np.float32)


def make_dataset(root, n=6, size=(40, 56), flow_ext="png", name="train", sizes=None, seed=0):
  """n pairs in the original layout under root; returns the list file. Flow planes as png (exact) or jpg."""
  rng = np.random.RandomState(seed)
  os.makedirs(os.path.join(root, "frames"), exist_ok=True)
  os.makedirs(os.path.join(root, "flows"), exist_ok=True)
  os.makedirs(os.path.join(root, "lists"), exist_ok=True)
  lines = []
  for i in range(n):
    h, w = sizes[i] if sizes else size
    stem = f"{name}{i:03d}"
    for k in (1, 2):
      Image.fromarray(_frame(rng, h, w)).save(os.path.join(root, "frames", f"{stem}_{k}.jpg"), quality=90)
    px, py = formats.encode_jpg_flow(_flow(rng, h, w))
    for plane, axis in ((px, "x"), (py, "y")):
      Image.fromarray(plane).save(os.path.join(root, "flows", f"{stem}_{axis}.{flow_ext}"), quality=100)
    lines.append(f"frames/{stem}_1.jpg frames/{stem}_2.jpg flows/{stem}_x.{flow_ext} flows/{stem}_y.{flow_ext}")
  path = os.path.join(root, "lists", f"{name}.txt")
  formats.write_list_file(path, lines)
  return path


def make_config(root, train_list=None, val_list=None, **data):
  c = config_lib.base()
  c.seed = 3
  c.batch_size = 2
  c.val_batch_size = 2
  c.data.data_root = str(root)
  c.data.train_source = (train_list or os.path.join(root, "lists", "train.txt"),)
  c.data.val_source = (val_list or os.path.join(root, "lists", "train.txt"),)
  c.data.short_size = 36          # 40x56 frames -> 36x50
  c.data.crop_size = (32, 32)
  c.data.sample_strategy = ("grid", "watershed")
  c.data.sample_bg_ratio = 1 / 256.  # grid stride 16
  c.data.nms_ks = 7
  c.data.max_num_guide = 20
  c.data.num_threads = 1
  c.data.prefetch = 1
  for k, v in data.items():
    c.data[k] = v
  return c


def train_iter(c, **kw):
  kw.setdefault("process_index", 0)
  kw.setdefault("process_count", 1)
  kw.setdefault("local_devices", 1)
  return pipeline.make_train_iterator(c, **kw)


def val_iter(c, **kw):
  kw.setdefault("process_index", 0)
  kw.setdefault("process_count", 1)
  kw.setdefault("local_devices", 1)
  return pipeline.make_val_iterator(c, **kw)


def take(it, n):
  out = [next(it) for _ in range(n)]
  it.close()
  return out


def assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  make_dataset(str(root), n=6)
  return str(root)


def _reference(c, root, index, position, train, list_file=None):
  """The original's loader on list entry `index`, with the RandomState the pipeline uses at `position`."""
  entries = formats.read_list_files(list_file or c.data.train_source[0], root)
  stream = pipeline._TRAIN if train else pipeline._VAL
  rs, _ = pipeline.sample_rngs(c.seed, stream, position)
  return original.load_sample(entries[index], rs, train=train, short_size=c.data.short_size,
                                crop_size=tuple(c.data.crop_size), strategy=tuple(c.data.sample_strategy),
                                bg_ratio=c.data.sample_bg_ratio, nms_ks=c.data.nms_ks,
                                max_num_guide=c.data.max_num_guide)


def _assert_matches_reference(batch, i, ref):
  img1, sparse, mask, flow, _ = ref
  # Frames: the pipeline resizes only the crop window (PIL box); equal to the full resize + crop but for
  # rare 1-2 level differences from the box's float rounding.
  levels = np.abs(batch["image"][i] * STD - img1 * STD)
  assert levels.max() <= 2.01
  assert (levels > 0.01).mean() < 0.01
  np.testing.assert_allclose(batch["flow"][i], flow, rtol=0, atol=1e-5)
  np.testing.assert_array_equal(batch["sparse"][i, :, :, 2], mask[:, :, 0])
  np.testing.assert_array_equal(batch["sparse"][i, :, :, 3], mask[:, :, 1])
  np.testing.assert_allclose(batch["sparse"][i, :, :, :2], sparse, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# What a batch holds.
# ----------------------------------------------------------------------------------------------------------

def test_train_batch_shapes_dtypes_normalisation(data):
  c = make_config(data)
  c.batch_size = 3
  (b,) = take(train_iter(c, local_devices=2), 1)
  assert set(b) == {"image", "flow", "sparse", "index"}
  assert b["image"].shape == (6, 32, 32, 3) and b["image"].dtype == np.float32
  assert b["flow"].shape == (6, 32, 32, 2) and b["flow"].dtype == np.float32
  assert b["sparse"].shape == (6, 32, 32, 4) and b["sparse"].dtype == np.float32
  assert b["index"].shape == (6,) and b["index"].dtype == np.int32
  # (x - mean) / std of 0..255 integers
  raw = b["image"] * STD + MEAN
  np.testing.assert_allclose(raw, np.round(raw), atol=2e-3)
  assert raw.min() > -0.01 and raw.max() < 255.01
  # sparse = [u, v, mask, mask]: the flow at the mask, 0 elsewhere; at most max_num_guide points
  mask = b["sparse"][..., 2]
  np.testing.assert_array_equal(mask, b["sparse"][..., 3])
  assert set(np.unique(mask)) <= {0.0, 1.0}
  np.testing.assert_array_equal(b["sparse"][..., :2], b["flow"] * mask[..., None])
  npts = mask.sum((1, 2))
  assert (npts >= 4).all() and (npts <= 20).all()  # 4 grid points at 32x32 with stride 16, plus watershed


def test_val_and_train_match_the_original_recipe(data):
  """Same crop (int(rand * (H - ch)), h first), same flow (cv2, x new_h/h), same guidance as the reference."""
  c = make_config(data)
  for b in val_iter(c):
    for i in np.flatnonzero(b["valid"]):
      _assert_matches_reference(b, i, _reference(c, data, b["index"][i], b["index"][i], train=False))
  batches = take(train_iter(c, start_step=1), 2)
  for s, b in enumerate(batches, 1):
    for i in range(2):
      _assert_matches_reference(b, i, _reference(c, data, b["index"][i], s * 2 + i, train=True))


def test_flow_resize_scales_both_components_by_new_h_over_h(tmp_path):
  # 30 x 50 frames, short side 20: new size 33 x 20 (int(20 / 30 * 50) = 33); ratio new_h / h = 2/3 for
  # u too, not new_w / w = 0.66.
  root = str(tmp_path)
  lst = make_dataset(root, n=1, size=(30, 50))
  px, py = np.full((30, 50), 200, np.uint8), np.full((30, 50), 40, np.uint8)
  Image.fromarray(px).save(os.path.join(root, "flows", "train000_x.png"))
  Image.fromarray(py).save(os.path.join(root, "flows", "train000_y.png"))
  c = make_config(root, lst, lst, short_size=20, crop_size=(16, 16))
  (b,) = list(val_iter(c, local_devices=1))[:1]
  u = np.float32(200) / 255 * 100 - 50
  v = np.float32(40) / 255 * 100 - 50
  ratio = 20 / 30
  np.testing.assert_allclose(b["flow"][0, :, :, 0], u * ratio, rtol=1e-6)
  np.testing.assert_allclose(b["flow"][0, :, :, 1], v * ratio, rtol=1e-6)
  assert transforms.resized_size(50, 30, 20) == (33, 20)
  assert transforms.resized_size(30, 50, 20) == (20, 33)


def test_padding_when_the_frame_is_smaller_than_the_crop(tmp_path):
  # 20 x 30 frames, short side 20 (no resize), crop 32 x 32: pad 12 rows (6 top, 6 bottom) and 2 columns
  # (1 left, 1 right); frames black before normalisation, flow 0. Train offsets are then 0.
  root = str(tmp_path)
  lst = make_dataset(root, n=1, size=(20, 30))
  c = make_config(root, lst, lst, short_size=20, crop_size=(32, 32))
  frame = np.asarray(Image.open(os.path.join(root, "frames", "train000_1.jpg")).convert("RGB"))
  flow = formats.read_jpg_flow(os.path.join(root, "flows", "train000_x.png"),
                               os.path.join(root, "flows", "train000_y.png"))
  for b in [next(iter(val_iter(c))), take(train_iter(c), 1)[0]]:
    img = b["image"][0] * STD + MEAN
    inside = np.zeros((32, 32), bool)
    inside[6:26, 1:31] = True
    np.testing.assert_allclose(img[~inside], 0, atol=2e-3)
    np.testing.assert_allclose(img[6:26, 1:31], frame, atol=2e-3)
    np.testing.assert_array_equal(b["flow"][0][~inside], 0)
    np.testing.assert_array_equal(b["flow"][0, 6:26, 1:31], flow)


# ----------------------------------------------------------------------------------------------------------
# The stream: shuffling, determinism, resuming, hosts.
# ----------------------------------------------------------------------------------------------------------

def test_same_seed_same_batches_and_start_step_resumes(data):
  c = make_config(data)
  a = take(train_iter(c), 4)
  b = take(train_iter(c), 4)
  for x, y in zip(a, b):
    assert_batches_equal(x, y)
  resumed = take(train_iter(c, start_step=2), 2)
  for x, y in zip(a[2:], resumed):
    assert_batches_equal(x, y)
  c.seed = 4
  other = take(train_iter(c), 4)
  assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, other))


def test_each_pass_visits_every_entry_once(data):
  c = make_config(data)
  batches = take(train_iter(c), 6)  # 12 positions = 2 passes over 6 entries
  idx = np.concatenate([b["index"] for b in batches])
  assert sorted(idx[:6]) == list(range(6)) and sorted(idx[6:]) == list(range(6))
  assert list(idx[:6]) != list(idx[6:])  # a new permutation per pass


def test_two_hosts_make_the_same_global_batches_as_one(data):
  c = make_config(data)
  one = take(train_iter(c, local_devices=2, start_step=1), 3)                  # 4 samples per step
  h0 = take(train_iter(c, process_index=0, process_count=2, start_step=1), 3)  # 2 + 2
  h1 = take(train_iter(c, process_index=1, process_count=2, start_step=1), 3)
  for g, a, b in zip(one, h0, h1):
    for k in g:
      np.testing.assert_array_equal(g[k], np.concatenate([a[k], b[k]]), err_msg=k)


def test_thread_count_does_not_change_the_batches(data):
  c = make_config(data)
  a = take(train_iter(c), 3)
  c.data.num_threads = 2
  b = take(train_iter(c), 3)
  for x, y in zip(a, b):
    assert_batches_equal(x, y)


def test_val_covers_every_entry_once_with_valid(tmp_path):
  root = str(tmp_path)
  lst = make_dataset(root, n=5)
  c = make_config(root, lst, lst)
  # 2 hosts x 2 per host: G = 4 -> 2 steps, the second with 1 real sample and 3 padding.
  hosts = [val_iter(c, process_index=h, process_count=2) for h in (0, 1)]
  assert [len(v) for v in hosts] == [2, 2]
  seen = []
  for v in hosts:
    batches = list(v)
    assert len(batches) == 2
    for b in batches:
      assert set(b) == {"image", "flow", "sparse", "index", "valid"}
      seen += list(b["index"][b["valid"]])
      assert not b["image"][~b["valid"]].any() and not b["sparse"][~b["valid"]].any()
  assert sorted(seen) == [0, 1, 2, 3, 4]
  # host 0 holds positions 0, 1 and 4, 5; host 1 holds 2, 3 and 6, 7 (6 and 7 are padding)
  b0 = list(hosts[0])
  assert list(b0[1]["valid"]) == [True, False]
  again = list(hosts[0])  # re-iterable, identical (seeded guidance)
  for x, y in zip(b0, again):
    assert_batches_equal(x, y)
  assert len(val_iter(c, local_devices=2, max_batches=1)) == 1


# ----------------------------------------------------------------------------------------------------------
# Augmentations.
# ----------------------------------------------------------------------------------------------------------

def test_flip_and_reverse_follow_the_per_sample_draws(data):
  c = make_config(data)
  plain = take(train_iter(c), 3)
  c.data.aug_flip = True
  flipped = take(train_iter(c), 3)
  n_flip = 0
  for s, (p, f) in enumerate(zip(plain, flipped)):
    for i in range(2):
      _, pyrng = pipeline.sample_rngs(c.seed, pipeline._TRAIN, 2 * s + i)
      if pyrng.random() < 0.5:  # the original's image_flow_aug: random.random() < 0.5 flips
        n_flip += 1
        np.testing.assert_array_equal(f["image"][i], p["image"][i][:, ::-1])
        np.testing.assert_array_equal(f["flow"][i, :, :, 0], -p["flow"][i, :, ::-1, 0])
        np.testing.assert_array_equal(f["flow"][i, :, :, 1], p["flow"][i, :, ::-1, 1])
      else:
        assert_batches_equal({k: v[i] for k, v in f.items()}, {k: v[i] for k, v in p.items()})
  assert 0 < n_flip < 6
  c.data.aug_flip = False
  c.data.aug_reverse = True
  rev = take(train_iter(c), 3)
  for s, (p, r) in enumerate(zip(plain, rev)):
    for i in range(2):
      _, pyrng = pipeline.sample_rngs(c.seed, pipeline._TRAIN, 2 * s + i)
      sign = -1 if pyrng.random() < 0.5 else 1
      np.testing.assert_array_equal(r["flow"][i], sign * p["flow"][i])


def test_scale_and_rotate_augmentations():
  import random
  s = transforms.Settings(aug_scale=True, aug_rotate=True)
  flow = np.zeros((4, 5, 2), np.float32)
  flow[1, 2] = (3.0, 4.0)
  flow[2, 3] = (0.0, 2.0)  # u = 0: arctan(+inf) = pi/2
  img = np.zeros((4, 5, 3), np.uint8)
  for seed in range(20):
    _, _, out = transforms.augment(img, None, flow, s, random.Random(seed))
    r = random.Random(seed)
    scale = r.uniform(0.5, 2.0)
    assert np.isfinite(out).all()  # the original's 0/0 -> NaN at zero flow is kept at 0
    np.testing.assert_allclose(np.hypot(out[..., 0], out[..., 1]), scale * np.hypot(flow[..., 0], flow[..., 1]),
                               rtol=1e-5, atol=1e-6)
    if r.random() < 0.5:  # rotated by theta: alpha = arctan(v / u) + theta
      theta = r.uniform(0, 2 * np.pi)
      alpha = np.arctan(4.0 / 3.0) + theta
      np.testing.assert_allclose(out[1, 2], scale * 5 * np.array([np.cos(alpha), np.sin(alpha)]), rtol=1e-5)
    else:
      np.testing.assert_allclose(out, flow * np.float32(scale), rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Input formats: jpg and .flo lists, TFRecords.
# ----------------------------------------------------------------------------------------------------------

def test_flo_list_gives_the_same_batches_as_jpg_planes(data, tmp_path):
  lines = []
  for e in formats.read_list_files(os.path.join(data, "lists", "train.txt"), data):
    flo = os.path.join(str(tmp_path), os.path.basename(e.flow[0]).replace("_x.png", ".flo"))
    formats.write_flo(flo, formats.read_jpg_flow(*e.flow))
    lines.append(f"{e.img1} {e.img2} {flo}")  # absolute paths: os.path.join(data_root, path) keeps them
  lst = os.path.join(str(tmp_path), "flo.txt")
  formats.write_list_file(lst, lines)
  c = make_config(data)
  a = take(train_iter(c), 3)
  c = make_config(data, lst, lst, flow_file_type="flo")
  b = take(train_iter(c), 3)
  for x, y in zip(a, b):
    assert_batches_equal(x, y)


def _write_records(data, out, flow_encoding):
  import tensorflow as tf
  entries = list(formats.read_list_files(os.path.join(data, "lists", "train.txt"), data))
  for shard, part in enumerate((entries[:4], entries[4:])):
    with tf.io.TFRecordWriter(os.path.join(out, f"train-{shard:05d}-of-00002.tfrecord")) as w:
      for e in part:
        raw = {k: open(p, "rb").read() for k, p in zip(("img1", "img2", "x", "y"), (e.img1, e.img2, *e.flow))}
        h, w_ = np.asarray(Image.open(e.img1)).shape[:2]
        key = os.path.relpath(e.img1, data)
        if flow_encoding == "jpg":
          ex = formats.make_tfrecord_example(raw["img1"], raw["img2"], h, w_, key, "jpg", raw["x"], raw["y"])
        else:
          flow = formats.read_jpg_flow(*e.flow)
          ex = formats.make_tfrecord_example(raw["img1"], raw["img2"], h, w_, key, "float32",
                                             flow_raw=flow.astype("<f4").tobytes())
        w.write(ex)
  return os.path.join(out, "train-*-of-00002.tfrecord")


@pytest.mark.parametrize("flow_encoding", ["jpg", "float32"])
def test_tfrecords_give_the_same_batches_as_the_list(data, tmp_path, flow_encoding):
  c = make_config(data)
  a = take(train_iter(c), 3)
  c.data.train_records = _write_records(data, str(tmp_path), flow_encoding)
  it = train_iter(c)
  assert it.num_samples == 6
  b = take(it, 3)
  for x, y in zip(a, b):
    assert_batches_equal(x, y)


def test_bad_record_names_its_file_and_number(data, tmp_path):
  import tensorflow as tf
  pattern = _write_records(data, str(tmp_path), "jpg")
  with tf.io.TFRecordWriter(os.path.join(str(tmp_path), "train-00001-of-00002.tfrecord")) as w:
    w.write(b"not an Example")
  c = make_config(data)
  c.data.val_records = pattern
  with pytest.raises(pipeline.BadSampleError, match=r"train-00001-of-00002\.tfrecord#0: record is not a tf.train"):
    list(val_iter(c))


def test_shipped_sample_records_equal_its_lists():
  if not os.path.isdir(os.path.join(SAMPLE, "records")):
    pytest.skip("data/sample not present")
  import importlib.util
  spec = importlib.util.spec_from_file_location("quickstart", os.path.join(ROOT, "configs", "quickstart.py"))
  qs = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(qs)
  c = qs.get_config()
  c.data.data_root = SAMPLE
  c.data.train_source = (os.path.join(SAMPLE, "lists", "train.txt"),)
  c.batch_size = 4
  c.data.num_threads = 1
  a = take(train_iter(c, start_step=7), 2)
  c.data.train_records = os.path.join(SAMPLE, "records", "train-*.tfrecord")
  b = take(train_iter(c, start_step=7), 2)
  for x, y in zip(a, b):
    assert_batches_equal(x, y)
  assert (a[0]["sparse"][..., 2].sum((1, 2)) > 0).all()


# ----------------------------------------------------------------------------------------------------------
# Bad data: a clear error naming the file, or skip and count.
# ----------------------------------------------------------------------------------------------------------

def _broken(tmp_path, how):
  """A 6-entry dataset whose entry 2 is broken in the given way; returns (config, the offending path)."""
  root = str(tmp_path)
  lst = make_dataset(root, n=6, flow_ext="jpg")
  stem = os.path.join(root, "frames", "train002_1.jpg")
  flow_x = os.path.join(root, "flows", "train002_x.jpg")
  if how == "missing":
    os.remove(stem)
    bad = stem
  elif how == "garbage":
    with open(stem, "wb") as f:
      f.write(b"this is not an image at all" * 10)
    bad = stem
  elif how == "truncated":
    data = open(stem, "rb").read()
    with open(stem, "wb") as f:
      f.write(data[:len(data) // 2])
    bad = stem
  elif how == "flow_corrupt":
    data = open(flow_x, "rb").read()
    with open(flow_x, "wb") as f:
      f.write(data[:40])
    bad = flow_x
  elif how == "size_mismatch":
    Image.fromarray(np.zeros((20, 28), np.uint8)).save(flow_x, quality=100)
    bad = flow_x
  c = make_config(root, lst, lst)
  return c, bad


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how,reason", [
    ("missing", "file not found"),
    ("garbage", "is not a readable image"),
    ("truncated", "cannot be decoded"),
    ("flow_corrupt", "flow_x"),
    ("size_mismatch", "image1 is 56x40 but flow_x is 28x20"),
])
def test_bad_file_raises_an_error_naming_it(tmp_path, how, reason):
  c, bad = _broken(tmp_path, how)
  with pytest.raises(pipeline.BadSampleError) as e:
    for b in val_iter(c):
      pass
  msg = str(e.value)
  assert bad in msg and reason in msg and "lists/train.txt:3" in msg, msg
  assert isinstance(e.value, formats.DataError)
  with pytest.raises(pipeline.BadSampleError, match=reason):
    take(train_iter(c), 4)  # 8 positions of a 6-entry list: entry 2 comes up


@pytest.mark.timeout(60)
def test_skip_bad_samples_counts_and_replaces_them(tmp_path):
  c, bad = _broken(tmp_path, "truncated")
  c.data.skip_bad_samples = True
  it = train_iter(c)
  batches = take(it, 6)  # two passes: entry 2 comes up twice
  idx = np.concatenate([b["index"] for b in batches])
  assert 2 not in idx and len(idx) == 12
  # counted when loaded: at least the 2 slots above (prefetching and a substitute drawing entry 2 add more)
  assert it.bad_samples.count >= 2
  assert list(it.bad_samples.files) == [bad]
  assert it.bad_samples.summary().startswith(f"bad samples skipped: {it.bad_samples.count} (1 files; first: {bad}")
  # deterministic: the same substitutes again, and resuming mid-way gives the same batches
  again = take(train_iter(c, start_step=3), 3)
  for x, y in zip(batches[3:], again):
    assert_batches_equal(x, y)
  v = val_iter(c)
  val = list(v)
  valid = np.concatenate([b["valid"] for b in val])
  assert list(np.flatnonzero(~valid)) == [2]
  assert v.bad_samples.count == 1


def test_bad_flo_header_names_the_file(tmp_path):
  root = str(tmp_path)
  lst = make_dataset(root, n=1)
  flo = os.path.join(root, "bad.flo")
  with open(flo, "wb") as f:
    f.write(b"HEIP" + b"\0" * 40)
  formats.write_list_file(lst, ["frames/train000_1.jpg frames/train000_2.jpg bad.flo"])
  c = make_config(root, lst, lst, flow_file_type="flo")
  with pytest.raises(pipeline.BadSampleError, match=r"bad\.flo.*magic"):
    take(train_iter(c), 1)


def test_empty_missing_and_malformed_lists_fail_when_made(tmp_path):
  root = str(tmp_path)
  lst = make_dataset(root, n=2)
  empty = os.path.join(root, "empty.txt")
  open(empty, "w").close()
  c = make_config(root, empty, empty)
  with pytest.raises(pipeline.BadSampleError, match=r"empty\.txt holds no samples"):
    train_iter(c)
  c = make_config(root, os.path.join(root, "nothere.txt"))
  with pytest.raises(pipeline.BadSampleError, match=r"list file not found: .*nothere\.txt"):
    train_iter(c)
  with open(lst, "a") as f:
    f.write("frames/a.jpg frames/b.jpg\n")
  c = make_config(root, lst, lst)
  with pytest.raises(pipeline.BadSampleError, match=r"train\.txt:3: expected 4 columns"):
    train_iter(c)
  c.data.skip_bad_samples = True
  it = train_iter(c)
  assert it.num_samples == 2 and it.bad_samples.malformed_lines == 1
  it.close()
