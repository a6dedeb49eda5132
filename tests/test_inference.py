"""cmp_jax.inference: the network frame of a user's image, arrows mapped in, flow mapped back, model loading.

Geometry is checked on numbers; the model is the quick-start architecture with the known-output weights of
tests/test_propagate.py (u = centre of bin 60 = 11.11 px everywhere, v = 0, in the network's pixels).
"""

import numpy as np
import pytest
from PIL import Image

from cmp_jax import inference
from cmp_jax.data import transforms

from test_propagate import U_EXPECTED, _photo, tiny  # noqa: F401 (a fixture)


def test_image_frame_covers_the_whole_image_padded_to_the_stride():
  img = _photo(300, 200)
  net, frame = inference.prepare_image(img, 160, None, multiple=8)
  # short side 200 -> 160: 240x160, already multiples of 8: no padding.
  assert net.shape == (160, 240, 3) and frame.kind == "image" and (frame.top, frame.left) == (0, 0)
  np.testing.assert_array_equal(net, np.asarray(Image.fromarray(img).resize((240, 160), Image.BICUBIC)))
  img = _photo(203, 150)
  net, frame = inference.prepare_image(img, 100, None, multiple=8)
  # 203x150 -> int(100 / 150 * 203) = 135 x 100, padded to 136 x 104: 2 rows on top, 0 columns left.
  assert frame.resized_size == (135, 100) and frame.input_size == (104, 136)
  assert (frame.top, frame.left) == (-2, 0)
  resized = np.asarray(Image.fromarray(img).resize((135, 100), Image.BICUBIC))
  np.testing.assert_array_equal(net[2:102, :135], resized)
  assert (net[:2] == 0).all() and (net[102:] == 0).all() and (net[:, 135:] == 0).all()


def test_arrows_map_in_and_flow_maps_back():
  frame = inference.Frame(image_size=(200, 100), resized_size=(100, 50), input_size=(56, 104), top=-3, left=-2)
  assert frame.scale == (0.5, 0.5)
  assert frame.arrows_to_input([(10, 20, 8, -4)]) == [(7.0, 13.0, 4.0, -2.0)]
  # A flow that is uniform in the network frame comes back uniform, times 1 / scale, at the image's size.
  flow = np.zeros((56, 104, 2), np.float32)
  flow[..., 0], flow[..., 1] = 3.0, -1.0
  back = frame.flow_to_image(flow)
  assert back.shape == (100, 200, 2)
  np.testing.assert_allclose(back[..., 0], 6.0)
  np.testing.assert_allclose(back[..., 1], -2.0)
  # A ramp along x in the network frame is sampled at the image's pixel centres: x_in = (X + 0.5) / 2 - 0.5 + 2.
  ramp = np.tile(np.arange(104, dtype=np.float32), (56, 1))
  np.testing.assert_allclose(frame.map_to_image(ramp)[0, :4], [1.75, 2.25, 2.75, 3.25], atol=1e-4)
  # Outside the input: replicated border, or a constant.
  zoom = inference.Frame(image_size=(40, 40), resized_size=(80, 80), input_size=(16, 16), top=8, left=8)
  out = zoom.map_to_image(np.ones((16, 16), np.float32), outside=0.0)
  assert out[0, 0] == 0 and out[8, 8] == 1


def test_one_normalisation_and_one_sparse_input():
  table = transforms.normalise_table((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
  x = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
  np.testing.assert_allclose(transforms.normalise(x, table),
                             (x.astype(np.float32) - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375],
                             rtol=1e-5, atol=1e-6)
  sparse = inference.sparse_input([(1.9, 2.2, 5, 6), (1.1, 2.9, -1, 0)], 4, 5)
  assert sparse[2, 1].tolist() == [-1, 0, 1, 1] and sparse[..., 2].sum() == 1  # truncated, later wins


def test_parse_arrow_and_point():
  assert inference.parse_arrow("1,2,3,4") == (1, 2, 3, 4)
  assert inference.parse_point(" 5 , 6.5") == (5, 6.5)
  for bad, msg in (("1,2,3", "two comma-separated"), ("x,2", "numbers"), ("1,inf", "finite")):
    with pytest.raises(inference.InferenceError, match=msg):
      inference.parse_point(bad)


def test_predictor_in_the_image_frame(tiny):  # noqa: F811
  config, model, variables, _ = tiny
  pred = inference.Predictor(model, variables, config)
  img = _photo(150, 120)  # -> 200x160, network input 200x160 (multiples of 8)
  res = pred.flow(img, [(149.9, 119.9, 4, 4), (0, 0, 0, 0)])
  assert res.flow.shape == (120, 150, 2) and res.input_flow.shape == (160, 200, 2)
  np.testing.assert_allclose(res.flow[..., 0], U_EXPECTED * 150 / 200, atol=0.05)
  np.testing.assert_array_equal(res.image, img)
  with pytest.raises(inference.InferenceError, match=r"outside the 150x120 image"):
    pred.flow(img, [(150, 3, 1, 1)])


def test_load_model_by_path_and_short_name(tiny, tmp_path, monkeypatch):  # noqa: F811
  config, _, _, ckpt = tiny
  _, variables, step = inference.load_model(config, ckpt)
  assert step == 0 and "flow_decoder" in variables["params"]
  monkeypatch.setitem(inference.MODELS, "tinymodel", ("configs/quickstart.py", ckpt))
  assert inference.resolve_checkpoint("tinymodel") == ckpt
  monkeypatch.setitem(inference.MODELS, "absent", ("configs/quickstart.py", str(tmp_path / "none")))
  with pytest.raises(inference.InferenceError, match="not there yet"):
    inference.resolve_checkpoint("absent")


def test_read_image_refuses_bad_and_huge_files(tmp_path):
  (tmp_path / "x.png").write_bytes(b"not a png")
  with pytest.raises(inference.InferenceError, match="not a readable image"):
    inference.read_image(str(tmp_path / "x.png"))
  Image.new("RGB", (300, 20)).save(tmp_path / "wide.png")
  with pytest.raises(inference.InferenceError, match="larger than 200 px"):
    inference.read_image(str(tmp_path / "wide.png"), max_side=200)
  with pytest.raises(inference.InferenceError, match="no such file"):
    inference.read_image(str(tmp_path / "none.png"))
