"""Image + arrows -> flow (cmp_jax.propagate): preprocessing geometry, sparse input, the CLI end to end.

The model is configs/quickstart.py's (ResNet-18 + Plain, 128 x 128 crop). Its checkpoint holds
variables with the structure of model.init (from jax.eval_shape) filled with small random numbers,
except the decoder head's bias, which puts the u logits' mass on bin 60 and the v logits' on bin 49,
so the predicted flow is known: u = centre of bin 60 = -50 + 60.5 * 100/99 = 11.11 px, v = 0.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from cmp_jax import checkpoint, flowviz, inference, losses, models, propagate
from cmp_jax.config_lib import load_config
from cmp_jax.data import formats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.py")
U_BIN, V_BIN = 60, 49
U_EXPECTED = -50 + (U_BIN + 0.5) * 100 / 99  # 11.1111 px


def _photo(w, h, seed=0):
  """A smooth, photo-like RGB test image (gradients plus a few blobs)."""
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  rng = np.random.default_rng(seed)
  img = np.stack([255 * x / w, 255 * y / h, 128 + 60 * np.sin(x / 9.0) * np.cos(y / 13.0)], -1)
  for _ in range(4):
    cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(5, 30)
    img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
  return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """(config, model, variables, checkpoint dir) for the quickstart model with a known output."""
  config = load_config(QUICKSTART)
  model = models.build_model(config.model)
  ch, cw = config.data.crop_size
  shapes = jax.eval_shape(
      lambda i, s: model.init(jax.random.key(0), i, s, train=False),
      jax.ShapeDtypeStruct((1, ch, cw, 3), np.float32), jax.ShapeDtypeStruct((1, ch, cw, 4), np.float32))
  rng = np.random.default_rng(0)

  def fill(path, s):
    name = path[-1].key
    if name in ("scale", "var"):
      return np.ones(s.shape, s.dtype)
    if name in ("bias", "mean"):
      return np.zeros(s.shape, s.dtype)
    return (0.02 * rng.standard_normal(s.shape)).astype(s.dtype)

  variables = jax.tree_util.tree_map_with_path(fill, shapes)
  head_bias = variables["params"]["flow_decoder"]["head"]["bias"]
  head_bias[U_BIN] = 40.0
  head_bias[99 + V_BIN] = 40.0
  ckpt = str(tmp_path_factory.mktemp("ckpt"))
  checkpoint.save_variables(ckpt, variables)
  return config, model, variables, ckpt


# ---------------------------------------------------------------------------
# Preprocessing geometry
# ---------------------------------------------------------------------------

def test_landscape_resize_and_centre_crop():
  img = _photo(640, 480)
  crop, frame = propagate.prepare_image(img, 416, (384, 384))
  # w >= h: new_h = 416, new_w = int(416 / 480 * 640) = int(554.67) = 554.
  assert frame.resized_size == (554, 416)
  # Centre crop: hoff = (416 - 384) // 2 = 16, woff = (554 - 384) // 2 = 85.
  assert (frame.top, frame.left) == (16, 85)
  resized = np.asarray(Image.fromarray(img).resize((554, 416), Image.BICUBIC))
  np.testing.assert_array_equal(crop, resized[16:400, 85:469])
  assert crop.dtype == np.uint8 and crop.shape == (384, 384, 3)


def test_portrait_resize_and_centre_crop():
  img = _photo(300, 500)
  crop, frame = propagate.prepare_image(img, 416, (384, 384))
  # w < h: new_w = 416, new_h = int(416 / 300 * 500) = int(693.33) = 693; hoff = 154, woff = 16.
  assert frame.resized_size == (416, 693) and (frame.top, frame.left) == (154, 16)
  resized = np.asarray(Image.fromarray(img).resize((416, 693), Image.BICUBIC))
  np.testing.assert_array_equal(crop, resized[154:538, 16:400])
  # Original-image coordinates map into the crop: the image centre lands at the crop centre (+-1 px).
  cx, cy = frame.to_crop(150, 250)
  assert abs(cx - 192) <= 1 and abs(cy - 192) <= 1


def test_small_image_is_padded_black():
  img = _photo(120, 80)
  # Short side 80 -> 40: resized 60 x 40, smaller than the 96 x 65 crop on both sides.
  crop, frame = propagate.prepare_image(img, 40, (65, 96))
  resized = np.asarray(Image.fromarray(img).resize((60, 40), Image.BICUBIC))
  # pad_h = 25: 12 on top, 13 below; pad_w = 36: 18 left and right.
  assert (frame.top, frame.left) == (-12, -18)
  np.testing.assert_array_equal(crop[12:52, 18:78], resized)
  inside = np.zeros(crop.shape[:2], bool)
  inside[12:52, 18:78] = True
  assert (crop[~inside] == 0).all()
  # Padded on one side, cropped on the other: 40 rows -> centre crop 32 (top 4); 60 cols padded to 96.
  crop, frame = propagate.prepare_image(img, 40, (32, 96))
  assert (frame.top, frame.left) == (4, -18)
  np.testing.assert_array_equal(crop[:, 18:78], resized[4:36])


def test_normalise_uses_mean_and_std():
  x = np.array([[[124, 116, 104], [0, 0, 0]]], np.uint8)
  out = propagate.normalise(x, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
  assert out.dtype == np.float32
  np.testing.assert_allclose(out[0, 0], [0.325 / 58.395, -0.28 / 57.12, 0.47 / 57.375], rtol=1e-4)
  np.testing.assert_allclose(out[0, 1], [-123.675 / 58.395, -116.28 / 57.12, -103.53 / 57.375], rtol=1e-6)


# ---------------------------------------------------------------------------
# Guidance
# ---------------------------------------------------------------------------

def test_sparse_input_truncates_later_wins_and_static_points():
  sparse = propagate.sparse_input([(10.9, 20.7, 3.0, -2.0),   # truncated to column 10, row 20
                                   (5.2, 5.9, 1.0, 1.0),
                                   (5.8, 5.1, 2.0, 0.0),     # same pixel (5, 5): this one wins
                                   (7.0, 8.0, 0.0, 0.0),     # a static point: mask 1, flow 0
                                   (31.99, 0.0, -4.0, 6.0)],  # the last column
                                  height=24, width=32)
  assert sparse.shape == (24, 32, 4) and sparse.dtype == np.float32
  np.testing.assert_array_equal(sparse[20, 10], [3, -2, 1, 1])
  np.testing.assert_array_equal(sparse[5, 5], [2, 0, 1, 1])
  np.testing.assert_array_equal(sparse[8, 7], [0, 0, 1, 1])
  np.testing.assert_array_equal(sparse[0, 31], [-4, 6, 1, 1])
  assert sparse[..., 2].sum() == 4 and (sparse[..., 2] == sparse[..., 3]).all()
  assert sparse[20, 11].sum() == 0 and sparse[21, 10].sum() == 0


@pytest.mark.parametrize("guide", [(32, 0, 1, 1), (0, 24, 1, 1), (-0.5, 3, 1, 1), (3, -1, 0, 0)])
def test_sparse_input_rejects_points_outside_the_crop(guide):
  with pytest.raises(propagate.PropagateError, match="outside the 32x24 crop"):
    propagate.sparse_input([guide], height=24, width=32)


def test_parse_guide():
  assert propagate.parse_guide(" 1.5, 2,-3 ,4e0") == (1.5, 2.0, -3.0, 4.0)
  for bad, msg in (("1,2,3", "four comma-separated"), ("1,2,3,4,5", "four"), ("a,2,3,4", "numbers"),
                   ("1,2,3,nan", "finite"), ("", "four")):
    with pytest.raises(propagate.PropagateError, match=msg):
      propagate.parse_guide(bad)


# ---------------------------------------------------------------------------
# Model, library call and command line
# ---------------------------------------------------------------------------

def test_propagate_gives_the_known_flow(tiny):
  config, model, variables, _ = tiny
  # The original demo's frame: the 128 x 128 centre crop, flow in its pixels.
  flow = propagate.propagate(model, variables, _photo(200, 150), [(10, 20, 5, -3)], config, frame="crop")
  assert flow.shape == (128, 128, 2) and flow.dtype == np.float32
  np.testing.assert_allclose(flow[..., 0], U_EXPECTED, atol=0.05)
  np.testing.assert_allclose(flow[..., 1], 0.0, atol=0.05)
  # The default: the image's frame. 200x150 -> 213x160 (sx = 213 / 200): the flow is at the image's size
  # and in its pixels, so the network's u is divided by sx.
  flow = propagate.propagate(model, variables, _photo(200, 150), [(190, 140, 5, -3)], config)
  assert flow.shape == (150, 200, 2) and flow.dtype == np.float32
  np.testing.assert_allclose(flow[..., 0], U_EXPECTED * 200 / 213, atol=0.05)
  np.testing.assert_allclose(flow[..., 1], 0.0, atol=0.05)


def test_propagator_matches_the_model_and_decoding(tiny):
  config, model, variables, _ = tiny
  # Without the head bias the logits depend on the inputs, so the guidance visibly matters.
  variables = jax.tree.map(np.array, variables)
  variables["params"]["flow_decoder"]["head"]["bias"][:] = 0
  prop = inference.Predictor(model, variables, config, frame="crop")
  crop, _ = propagate.prepare_image(_photo(200, 150), config.data.short_size, config.data.crop_size)
  guides = [(10, 20, 5, -3), (100, 64, 0, 0)]
  result = prop.flow(_photo(200, 150), guides)
  flow = result.flow
  np.testing.assert_array_equal(result.image, crop)
  # The same by hand: normalise, sparse input, apply in eval mode, fuse then upsample.
  image = propagate.normalise(crop, config.data.image_mean, config.data.image_std)[None]
  sparse = propagate.sparse_input(guides, 128, 128)[None]
  logits = jax.jit(lambda v, i, s: model.apply(v, i, s, train=False))(variables, image, sparse)
  assert logits.shape == (1, 16, 16, 198)  # dilated ResNet + Plain: 1/8 of the crop
  np.testing.assert_allclose(flow, losses.predict_flow(logits, size=(128, 128))[0], atol=1e-5)
  # The guidance reaches the network: without it the flow differs (a little, with these weights; the
  # computation is deterministic, so ignoring the guidance would give identical numbers).
  assert np.abs(prop.flow(_photo(200, 150), []).flow - flow).max() > 1e-6


def test_cli_end_to_end(tiny, tmp_path):
  _, _, _, ckpt = tiny
  image = tmp_path / "photo.jpg"
  Image.fromarray(_photo(320, 240)).save(image, quality=90)
  out = {k: str(tmp_path / "out" / f"{k}") for k in ("flow.flo", "flow.png", "crop.png")}
  cmd = [sys.executable, "-m", "cmp_jax.propagate", "--config", QUICKSTART, "--checkpoint", ckpt,
         "--image", str(image), "--guide", "10.5,20.2,6,0", "--guide", "64,64,0,0", "--frame=crop",
         "--out_flo", out["flow.flo"], "--out_png", out["flow.png"], "--out_crop", out["crop.png"]]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr
  # 320x240 -> short side 160: 213x160, centre crop 128 at x = (213 - 128) // 2 = 42, y = 16.
  assert "resized 213x160 -> centre crop 128x128 at x=42, y=16" in res.stdout
  for path in out.values():
    assert f"wrote {path}" in res.stdout
  assert "RANDOM" not in res.stderr
  flow = formats.read_flo(out["flow.flo"])
  assert flow.shape == (128, 128, 2)
  np.testing.assert_allclose(flow[..., 0], U_EXPECTED, atol=0.05)
  np.testing.assert_allclose(flow[..., 1], 0.0, atol=0.05)
  png = np.asarray(Image.open(out["flow.png"]))
  assert png.shape == (128, 128, 3) and png.dtype == np.uint8
  np.testing.assert_array_equal(png, flowviz.flow_to_image(flow))
  # Uniform +u flow at maxrad is red: wheel entry 0 (255, 0, 0) or, for a tiny negative v, entry 54
  # (255, 0, 43) across the wheel's seam. Pixels that tie the float32 maximum can exceed it by float64
  # rounding and come out x0.75 (R 191), as in the original.
  assert np.isin(png[..., 0], [254, 255, 191]).all() and (png[..., 1] <= 2).all() and (png[..., 2] <= 43).all()
  crop = np.asarray(Image.open(out["crop.png"]))
  assert crop.shape == (128, 128, 3)
  assert (crop[20, 10] == [255, 0, 0]).all() and (crop[64, 64] == [255, 0, 0]).all()  # guides marked


def test_cli_random_weights_warns_and_still_runs(tiny, tmp_path, capsys, monkeypatch):
  # No --checkpoint: the command takes models.init_variables' random weights, says so, and still writes.
  # (init_variables is replaced by the fixture's variables to save its ~15 s compile on 2 CPU cores;
  # tests/test_models.py covers it, and the real call is the same one line.)
  _, _, variables, _ = tiny
  calls = []

  def fake_init(model, rng, height, width, batch=1):
    calls.append((height, width))
    return variables

  monkeypatch.setattr(models, "init_variables", fake_init)
  image = tmp_path / "photo.png"
  Image.fromarray(_photo(160, 200)).save(image)
  out = str(tmp_path / "f.flo")
  # With an override as train.py takes them: short side 140 -> 200x160 is resized to 140x175.
  rc = propagate.main(["propagate", "--config", QUICKSTART, "--image", str(image), "--guide", "5,5,1,1", "--out_flo", out,
                       "--config.data.short_size=140", "--frame=crop"])
  captured = capsys.readouterr()
  assert rc == 0, captured.err
  assert "resized 140x175 -> centre crop 128x128 at x=6, y=23" in captured.out
  assert calls == [(128, 128)]
  assert "WARNING" in captured.err and "RANDOM weights" in captured.err
  assert formats.read_flo(out).shape == (128, 128, 2)


def _run_main(argv, capsys):
  rc = propagate.main(["propagate", *argv])
  err = capsys.readouterr().err
  return rc, err


def test_cli_input_errors(tiny, tmp_path, capsys):
  _, _, _, ckpt = tiny
  image = tmp_path / "photo.png"
  Image.fromarray(_photo(160, 160)).save(image)
  base = ["--config", QUICKSTART, "--checkpoint", ckpt, "--out_png", str(tmp_path / "f.png")]

  rc, err = _run_main(base + ["--image", str(image), "--guide", "128,5,1,1", "--frame=crop"], capsys)
  assert rc == 2 and "outside the 128x128 crop" in err
  rc, err = _run_main(base + ["--image", str(image), "--guide", "160,5,1,1"], capsys)
  assert rc == 2 and "outside the 160x160 image" in err
  rc, err = _run_main(base + ["--image", str(image), "--guide", "5;5;1;1"], capsys)
  assert rc == 2 and "--guide '5;5;1;1'" in err and "four comma-separated" in err
  rc, err = _run_main(base + ["--image", str(tmp_path / "missing.jpg"), "--guide", "5,5,1,1"], capsys)
  assert rc == 2 and "missing.jpg" in err
  broken = tmp_path / "broken.jpg"
  broken.write_bytes(b"this is not a JPEG")
  rc, err = _run_main(base + ["--image", str(broken), "--guide", "5,5,1,1"], capsys)
  assert rc == 2 and "broken.jpg" in err and "not a readable image" in err
  rc, err = _run_main(["--config", QUICKSTART, "--image", str(image)], capsys)
  assert rc == 2 and "nothing to write" in err
  rc, err = _run_main(["--config", str(tmp_path / "nope.py"), "--image", str(image), "--out_png", "x.png"],
                      capsys)
  assert rc == 2 and "nope.py" in err
  rc, err = _run_main(base + ["--image", str(image), "--config.data.crop_sise=(64,64)"], capsys)
  assert rc == 2 and "config.data.crop_sise: no such key" in err
  rc, err = _run_main(base + ["--image", str(image), "--config.data.crop_size=(100,100)"], capsys)
  assert rc == 2 and "config.data.crop_size" in err and "multiples of 8" in err
  assert not (tmp_path / "f.png").exists()


def test_cli_checkpoint_not_matching_the_config(tiny, tmp_path, capsys):
  _, _, variables, _ = tiny
  params = jax.tree.map(lambda x: x, variables["params"])  # new dicts, shared arrays
  params["flow_decoder"]["head"] = {"kernel": np.zeros((1, 1, 384, 20), np.float32),
                                    "bias": np.zeros((20,), np.float32)}  # a 10-bin model's head
  del params["flow_encoder"]["features_0"]
  params["extra_module"] = {"kernel": np.zeros((3,), np.float32)}
  bad = str(tmp_path / "bad")
  checkpoint.save_variables(bad, {"params": params, "batch_stats": variables["batch_stats"]}, step=7)
  image = tmp_path / "photo.png"
  Image.fromarray(_photo(160, 160)).save(image)
  rc, err = _run_main(["--config", QUICKSTART, "--checkpoint", bad, "--image", str(image),
                       "--out_png", str(tmp_path / "f.png")], capsys)
  assert rc == 2
  assert "does not match" in err and "(step 7)" in err
  assert "params/flow_decoder/head/kernel: (1, 1, 384, 20) -> (1, 1, 384, 198)" in err
  assert "params/flow_decoder/head/bias" in err
  assert "2 missing keys: params/flow_encoder/features_0/bias, params/flow_encoder/features_0/kernel" in err
  assert "1 unexpected keys: params/extra_module/kernel" in err
  rc, err = _run_main(["--config", QUICKSTART, "--checkpoint", str(tmp_path / "nothing"), "--image",
                       str(image), "--out_png", str(tmp_path / "f.png")], capsys)
  assert rc == 2 and "nothing" in err and "does not exist" in err


def test_arrow_check_script(tiny, tmp_path, capsys):
  """scripts/arrow_check.py on the known-flow model: every arrow gets the same constant flow back, the table
  says so, the picture has a row per checkpoint; bad points are refused in one line."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("arrow_check", os.path.join(ROOT, "scripts", "arrow_check.py"))
  arrow_check = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(arrow_check)
  _, _, _, ckpt = tiny
  image = tmp_path / "photo.png"
  Image.fromarray(_photo(200, 150)).save(image)
  base = ["arrow_check", "--config", QUICKSTART, "--image", str(image), "--still=20,20"]
  out = tmp_path / "arrows.png"
  argv = base + ["--point=100,70", "--checkpoint", ckpt, "--checkpoint", ckpt, "--arrows=-8,0 0,16", "--out", str(out)]
  assert arrow_check.main(argv) == 0
  rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {ckpt}")]
  assert [r[2].strip() for r in rows] == ["(-8, +0)", "(+0, +16)"] * 2
  u = U_EXPECTED * 200 / 213  # the network's crop is 213 px wide for this 200 px image (propagate's frame)
  for r in rows:
    got = [float(v) for v in r[3].strip(" ()").split(",")]
    np.testing.assert_allclose(got, [u, 0.0], atol=0.05)
    assert abs(float(r[4]) - u) < 0.05  # the median |flow| of a constant field
  assert np.asarray(Image.open(out)).shape == (2 * 150, 3 * 200, 3)  # image + 2 arrows, 2 checkpoints

  for bad, message in (("--point=300,70", "--point 0 at (x=300, y=70) is outside the 200x150 image"),
                       ("--point=1,2,3", "--point '1,2,3': expected two comma-separated numbers"),
                       ("--arrows=", "--arrows: no arrow given")):
    assert arrow_check.main(base + ["--point=100,70", bad, "--checkpoint", ckpt]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
