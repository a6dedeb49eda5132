"""cmp_jax.data.synthetic: layered motion on real photos with exact flow, in prepare's on-disk format."""

import glob
import json
import os

import cv2
import numpy as np
import pytest

from cmp_jax.data import formats, synthetic

PHOTOS = tuple(sorted(glob.glob("data/sample/frames/*/*.jpg"))[:12])


def _options(tmp_path, **kw):
  return synthetic.SynthOptions(photos=PHOTOS, out=str(tmp_path), **{"pairs": 6, "size": (64, 96), **kw})


class _Photos:
  def __call__(self, rng):
    return formats.read_image(PHOTOS[int(rng.integers(len(PHOTOS)))])


def test_displacement_of_a_similarity():
  m = synthetic.similarity((10, 20), (3.0, -2.0), 0.0, 1.0)
  np.testing.assert_allclose(synthetic.displacement(m, 4, 5), np.broadcast_to([3.0, -2.0], (4, 5, 2)), atol=1e-6)
  m = synthetic.similarity((2, 1), (0.0, 0.0), 0.0, 2.0)  # zoom x2 about (2, 1): pixel (x, y) -> 2(x-2,y-1) + (2,1)
  d = synthetic.displacement(m, 3, 4)
  np.testing.assert_allclose(d[1, 2], [0, 0], atol=1e-6)
  np.testing.assert_allclose(d[0, 3], [1, -1], atol=1e-6)


def test_flow_is_exact_where_nothing_is_hidden():
  """Warping frame 2 back by the flow gives frame 1, except where a layer moved over or off a pixel."""
  o = synthetic.SynthOptions(photos=PHOTOS, out="", size=(96, 128), still_background=0.0)
  h, w = o.size
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  for seed in range(4):
    frame1, frame2, flow = synthetic.make_pair(_Photos(), o, np.random.default_rng(seed))
    assert frame1.shape == frame2.shape == (h, w, 3) and flow.shape == (h, w, 2)
    assert np.abs(flow).max() < synthetic.FLOW_LIMIT and np.linalg.norm(flow, axis=-1).mean() > 0.1
    back = cv2.remap(frame2, x + flow[..., 0], y + flow[..., 1], cv2.INTER_LINEAR).astype(np.float32)
    inside = ((x + flow[..., 0] > 1) & (x + flow[..., 0] < w - 2) & (y + flow[..., 1] > 1) & (y + flow[..., 1] < h - 2))
    err = np.abs(back - frame1).max(-1)[inside]
    # A wrong flow (off by 3 px) warps back far worse.
    off = cv2.remap(frame2, x + flow[..., 0] + 3, y + flow[..., 1], cv2.INTER_LINEAR).astype(np.float32)
    assert np.median(err) <= 2 and err.mean() < 0.5 * np.abs(off - frame1).max(-1)[inside].mean(), seed


def test_still_background_moves_only_objects():
  o = synthetic.SynthOptions(photos=PHOTOS, out="", size=(64, 96), still_background=1.0, max_objects=0)
  _, _, flow = synthetic.make_pair(_Photos(), o, np.random.default_rng(0))
  assert not flow.any()


def test_generate_writes_a_dataset_the_pipeline_reads(tmp_path):
  o = _options(tmp_path)
  stats = synthetic.generate(o)
  entries = formats.read_list_files([str(tmp_path / "lists" / "synth.txt")], str(tmp_path))
  assert len(entries) == 6 and stats["pairs"] == 6
  image1, image2, flow = formats.read_sample(entries[0])
  assert image1.shape == image2.shape == (64, 96, 3) and flow.shape == (64, 96, 2)
  _, _, exact = synthetic.make_pair(synthetic._Photos(PHOTOS), o, np.random.default_rng([o.seed, 0]))
  # JPEG flow planes: 100/255 px steps, quality 100 (ringing at the objects' edges)
  assert np.abs(flow - exact).max() < 1.0 and np.abs(flow - exact).mean() < 0.2
  record = json.loads((tmp_path / "synth.json").read_text())
  assert record["options"]["pairs"] == 6 and len(record["photo_files"]) == len(PHOTOS)
  # Same seed, same bytes.
  again = tmp_path / "again"
  synthetic.generate(_options(again))
  for rel in ("frames/synth/000003_1.jpg", "flows/synth/000003_x.jpg"):
    assert (tmp_path / rel).read_bytes() == (again / rel).read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["--photos", "no/such/*.jpg"], "--photos: no/such/*.jpg matches no file"),
    (["--photos", *PHOTOS[:1], "--pairs", "0"], "--pairs 0: must be at least 1"),
    (["--photos", *PHOTOS[:1], "--max-shift", "30"], "--max-shift 30.0: need 0 < min <= max < 24"),
])
def test_bad_options_are_one_line(tmp_path, capsys, argv, message):
  assert synthetic.main(argv + ["--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and message in err, err
  assert not os.path.exists(tmp_path / "out" / "lists")
