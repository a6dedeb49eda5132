"""The demos: guided video generation (cmp_jax.demos.animate) and semi-automatic annotation
(cmp_jax.demos.annotate): their algorithms on hand-made numbers, their commands on real sample images with
the known-output quick-start checkpoint of tests/test_propagate.py, and their refusals of bad input."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from cmp_jax import inference
from cmp_jax.demos import animate, annotate

from test_propagate import QUICKSTART, ROOT, tiny  # noqa: F401 (a fixture)

COCKATOO = os.path.join(ROOT, "data", "sample", "frames", "cockatoo", "000000.jpg")  # 284x160
BIKES = os.path.join(ROOT, "data", "sample", "frames", "bikes", "000000.jpg")  # 376x160


# ---------------------------------------------------------------------------
# animate
# ---------------------------------------------------------------------------

def test_forward_warp_moves_pixels_and_larger_motion_wins():
  image = np.arange(1, 13, dtype=np.uint8).reshape(3, 4)[..., None].repeat(3, -1)
  flow = np.zeros((3, 4, 2), np.float32)
  flow[..., 0] = 1.0  # everything one pixel right: column 0 becomes a hole, column 3 leaves the image
  warped, holes = animate.forward_warp(image, flow)
  np.testing.assert_array_equal(warped[:, 1:], image[:, :-1])
  assert holes[:, 0].all() and not holes[:, 1:].any()
  # Two pixels land on (0, 2): (0, 1) moving by 1 and (0, 0) moving by 2.4 (rounded to 2): the larger wins.
  flow = np.zeros((3, 4, 2), np.float32)
  flow[0, 1, 0], flow[0, 0, 0] = 1.0, 2.4
  warped, holes = animate.forward_warp(image, flow)
  assert warped[0, 2, 0] == image[0, 0, 0] and holes[0, 0] and holes[0, 1]


def test_frames_have_no_black_holes_and_the_schedule_is_linear():
  image = inference.read_image(COCKATOO)
  h, w = image.shape[:2]
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  flow = np.stack([(xs - w / 2) * 0.1, (ys - h / 2) * 0.1], -1)  # a zoom: forward warping leaves holes
  _, holes = animate.forward_warp(image, flow)
  assert holes.sum() > 1000
  frames = animate.make_frames(image, flow, 5, loop=True)
  assert len(frames) == 8 and all(f.shape == image.shape and f.dtype == np.uint8 for f in frames)
  np.testing.assert_array_equal(frames[0], image)
  np.testing.assert_array_equal(frames[4], animate.warp_frame(image, flow))
  np.testing.assert_array_equal(frames[2], animate.warp_frame(image, flow * 0.5))
  np.testing.assert_array_equal(frames[5], frames[3])  # then back
  black = (image.max(-1) == 0).sum()
  assert all((f.max(-1) == 0).sum() <= black + 5 for f in frames)  # holes filled, not black


def test_write_gif_and_mp4(tmp_path):
  frames = [np.full((32, 48, 3), 40 * k, np.uint8) for k in range(4)]
  gif = animate.write_animation(str(tmp_path / "a.gif"), frames, fps=10)
  with Image.open(gif) as im:
    assert im.n_frames == 4 and im.size == (48, 32) and im.info["duration"] == 100
  mp4 = animate.write_animation(str(tmp_path / "a.mp4"), frames, fps=10)
  cap = cv2.VideoCapture(mp4)
  n = 0
  while cap.read()[0]:
    n += 1
  assert n == 4
  with pytest.raises(inference.InferenceError, match=".gif or .mp4"):
    animate.write_animation(str(tmp_path / "a.avi"), frames)


def test_animate_cli_on_a_sample_image(tiny, tmp_path, capsys):  # noqa: F811
  _, _, _, ckpt = tiny
  out = str(tmp_path / "bikes.gif")
  rc = animate.main(["animate", "--config", QUICKSTART, "--checkpoint", ckpt, "--image", BIKES,
                     "--guide", "300,100,10,0", "--guide", "20,20,0,0", "--frames", "4", "--loop", "--out", out,
                     "--out_flow", str(tmp_path / "flow.png")])
  captured = capsys.readouterr()
  assert rc == 0, captured.err
  with Image.open(out) as im:
    assert im.size == (376, 160) and im.n_frames == 6  # 4 frames, then 2 back
  assert np.asarray(Image.open(tmp_path / "flow.png")).shape == (160, 376, 3)


# ---------------------------------------------------------------------------
# annotate
# ---------------------------------------------------------------------------

def test_zoom_box_as_the_original():
  assert annotate.zoom_box([(50, 60)], 400, 300) is None  # one click: no zoom
  # bbox 20 x 10 around centre (60, 65): sz = 20 * 4 = 80.
  assert annotate.zoom_box([(50, 60), (70, 70)], 400, 300) == (20, 25, 80)
  assert annotate.zoom_box([(50, 60), (70, 70)], 400, 300, zoom_factor=-1) is None
  assert annotate.zoom_box([(0, 0), (100, 10)], 400, 300) is None  # 400 >= the short side 300
  assert annotate.zoom_box([(50, 60), (51, 60)], 400, 300)[2] == annotate.MIN_ZOOM


def test_probe_sparse_and_score():
  sparse = annotate.probe_sparse([(2.5, 1.2), (3, 3)], [(3.9, 3.1)], 5, 6, 30.0)
  assert sparse.shape == (4, 5, 6, 4)
  assert [tuple(sparse[k, 1, 2, :2]) for k in range(4)] == [(30, 0), (-30, 0), (0, 30), (0, -30)]
  assert (sparse[:, 3, 3] == [0, 0, 1, 1]).all()  # the negative click wins its shared pixel
  assert sparse[..., 2].sum() == 8
  flows = np.zeros((4, 2, 2, 2), np.float32)
  flows[:, 0, 0] = 4.0
  flows[0, 1, 1, 0] = 8.0
  np.testing.assert_allclose(annotate.score_map(flows), [[1.0, 0], [0, 0.25]])
  assert (annotate.score_map(np.zeros((4, 2, 2, 2))) == 0).all()


class _FakePredictor:
  """Flow of magnitude 10 inside a disc of radius 20 around the pushed point, 0 elsewhere (network frame)."""
  frame = "image"

  def __init__(self, config):
    self.config = config
    self.inputs = []

  def prepare(self, image):
    return inference.prepare_image(image, self.config.data.short_size, None, 8)

  def normalise(self, x):
    return x.astype(np.float32)

  def run(self, images, sparse):
    self.inputs.append((images.shape, sparse))
    ys, xs = np.nonzero(np.abs(sparse[0, ..., 0]) > 0)
    h, w = sparse.shape[1:3]
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - ys[0]) ** 2 + (xx - xs[0]) ** 2 < 20 ** 2
    return np.repeat((disc[None, ..., None] * 10.0).astype(np.float32), 4, 0).repeat(2, -1)


def test_annotate_maps_the_mask_to_the_image(tiny):  # noqa: F811
  config = tiny[0]
  pred = _FakePredictor(config)
  image = inference.read_image(COCKATOO)  # 284x160: the network sees it whole at 288x160
  mask, score, picture = annotate.annotate(pred, image, [(100, 80)])
  assert mask.shape == (160, 284) and picture is image
  assert mask[80, 100] and mask[80, 115] and not mask[80, 125] and not mask[10, 10]
  # Zoomed: two clicks 20 px apart -> an 80 px square at (60, 40), resized to the 128 px crop (x1.6).
  mask, _, _ = annotate.annotate(pred, image, [(90, 80)], [(110, 80)])
  shape, sparse = pred.inputs[-1]
  assert shape == (4, 128, 128, 3)
  assert sparse[0, 64, 48, 0] == 30 and (sparse[:, 64, 80] == [0, 0, 1, 1]).all()
  # The disc of radius 20 network px is 12.5 image px around (90, 80); nothing outside the zoom square.
  assert mask[80, 90] and mask[80, 101] and not mask[80, 104] and not mask[:, :60].any()


def test_annotate_cli_on_a_sample_image(tiny, tmp_path, capsys):  # noqa: F811
  _, _, _, ckpt = tiny
  rc = annotate.main(["annotate", "--config", QUICKSTART, "--checkpoint", ckpt, "--image", COCKATOO,
                      "--positive", "140,60", "--negative", "10,10", "--out", str(tmp_path / "m.png"),
                      "--overlay", str(tmp_path / "o.png")])
  captured = capsys.readouterr()
  assert rc == 0, captured.err
  mask = np.asarray(Image.open(tmp_path / "m.png"))
  assert mask.shape == (160, 284) and set(np.unique(mask)) <= {0, 255}
  assert np.asarray(Image.open(tmp_path / "o.png")).shape == (160, 284, 3)


# ---------------------------------------------------------------------------
# Bad input: one line `error: ...`, exit code 2, nothing written
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def other_arch(tiny, tmp_path_factory):  # noqa: F811
  """A checkpoint folder whose config.json names another architecture."""
  from cmp_jax import checkpoint
  config, _, _, ckpt = tiny
  other = config.copy_and_resolve_references()
  other.model.image_encoder = "resnet34"
  d = str(tmp_path_factory.mktemp("other"))
  checkpoint.save_variables(d, tiny[2])
  checkpoint.write_run_config(d, other)
  return d


@pytest.mark.parametrize("tool, args, words", [
    ("animate", ["--image", COCKATOO], ("no arrows",)),
    ("animate", ["--image", COCKATOO, "--guide", "1,2,3"], ("--guide '1,2,3'", "four")),
    ("animate", ["--image", COCKATOO, "--guide", "284,5,1,1"], ("outside the 284x160 image",)),
    ("animate", ["--image", "BROKEN", "--guide", "5,5,1,1"], ("broken.jpg", "not a readable image")),
    ("animate", ["--image", COCKATOO, "--guide", "5,5,1,1", "--checkpoint", "OTHER"], ("model.image_encoder",)),
    ("annotate", ["--image", COCKATOO, "--positive", "5,5", "--negative", "5.5,5.2"],
     ("pixel (x=5, y=5)", "positive and negative")),
    ("annotate", ["--image", COCKATOO], ("no positive click",)),
    ("annotate", ["--image", COCKATOO, "--positive", "5,500"], ("outside the 284x160 image",)),
])
def test_bad_input_in_process(tiny, other_arch, tmp_path, capsys, tool, args, words):  # noqa: F811
  (tmp_path / "broken.jpg").write_bytes(b"not an image")
  subst = {"BROKEN": str(tmp_path / "broken.jpg"), "OTHER": other_arch}
  args = [subst.get(a, a) for a in args]
  out = str(tmp_path / ("out.gif" if tool == "animate" else "out.png"))
  module = animate if tool == "animate" else annotate
  base = ["--config", QUICKSTART, "--checkpoint", tiny[3], "--out", out]
  rc = module.main([tool, *base, *args])
  err = capsys.readouterr().err
  lines = [x for x in err.splitlines() if x.strip() and not x.startswith("WARNING")]
  assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
  assert all(w in lines[0] for w in words), lines[0]
  assert not os.path.exists(out)


@pytest.mark.parametrize("module, args", [
    ("cmp_jax.demos.animate", ["--guide", "5;5;1;1", "--out", "x.gif"]),
    ("cmp_jax.demos.annotate", ["--positive", "5,5", "--negative", "5,5", "--out", "x.png"]),
])
def test_bad_input_as_a_user_runs_it(subprocess_env, tmp_path, module, args):
  r = subprocess.run([sys.executable, "-m", module, "--config", QUICKSTART, "--image", COCKATOO, *args],
                     cwd=str(tmp_path), env=subprocess_env(1), capture_output=True, text=True, timeout=300)
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
  lines = [x for x in r.stderr.splitlines() if x.strip()]
  assert lines[-1].startswith("error:") and sum(x.startswith("error:") for x in lines) == 1, r.stderr
  assert not os.listdir(tmp_path)
