"""Middlebury colour code, guidance crosses and PNG writing (cmp_jax.flowviz).

Expected colours are worked out by hand from reference §4.6: the wheel is 55
entries, a = atan2(-v, -u) / pi, fk = (a + 1) / 2 * 54 + 1 (1-based), and
inside the unit disc col = 1 - rad * (1 - wheel / 255).
"""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from cmp_jax import flowviz


def _px(flow_pixels, **kw):
  """Colours of a 1 x N flow given as a list of (u, v)."""
  flow = np.asarray(flow_pixels, dtype=np.float64)[None]
  return [tuple(int(c) for c in p) for p in flowviz.flow_to_image(flow, **kw)[0]]


def test_color_wheel_segments():
  w = flowviz.COLOR_WHEEL
  assert w.shape == (55, 3)
  # Segment starts: red, yellow, green, cyan, blue, magenta (RY=15, YG=6, GC=4, CB=11, BM=13, MR=6).
  starts = {0: (255, 0, 0), 15: (255, 255, 0), 21: (0, 255, 0), 25: (0, 255, 255), 36: (0, 0, 255),
            49: (255, 0, 255)}
  for i, rgb in starts.items():
    assert tuple(w[i]) == rgb, i
  # Ramps are floor(255 * i / n): RY i=13 -> floor(221.0) = 221; CB i=2 -> 255 - floor(46.36) = 209;
  # MR i=5 -> 255 - floor(212.5) = 43.
  assert tuple(w[13]) == (255, 221, 0)
  assert tuple(w[27]) == (0, 209, 255)
  assert tuple(w[54]) == (255, 0, 43)


def test_zero_flow_is_white():
  img = flowviz.flow_to_image(np.zeros((3, 4, 2), np.float32))
  assert img.dtype == np.uint8 and img.shape == (3, 4, 3)
  assert (img == 255).all()


def test_directions_at_maxrad():
  # One pixel per direction, each 5 px long, so every one is at maxrad (rad = 1):
  #  +u: atan2(-0.0, -1) = -pi -> a = -1 -> fk = 1 -> wheel[0] = red.
  #  -u: atan2(-0.0, +1) = -0  -> a = 0  -> fk = 28 -> wheel[27] = (0, 209, 255).
  #  +v (down): a = -1/2 -> fk = 14.5 -> half of wheel[13] and wheel[14]: G = (221 + 238) / 2 = 229.5 -> 229.
  assert _px([(5, 0), (-5, 0), (0, 5)]) == [(255, 0, 0), (0, 209, 255), (255, 229, 0)]


def test_outside_unit_disc_is_darkened():
  # With a fixed maxrad of 5, a 10 px flow has rad = 2 > 1: col * 0.75 -> floor(191.25) = 191.
  assert _px([(10, 0)], maxrad=5) == [(191, 0, 0)]


def test_maxrad_floor_of_5_keeps_small_flow_pale():
  # A uniform 1 px flow is normalised by 5, not by 1: rad = 0.2 -> (1, 0.8, 0.8) -> (255, 204, 204).
  img = flowviz.flow_to_image(np.tile([1.0, 0.0], (4, 4, 1)))
  assert (img == np.array([255, 204, 204], np.uint8)).all()
  # Above 5 px the largest flow sets the scale: 10 px is saturated red, 5 px half-way to white.
  assert _px([(10, 0), (5, 0)]) == [(255, 0, 0), (255, 127, 127)]


def test_unknown_flow_is_black_and_ignored_for_the_scale():
  # |u| or |v| > 1e7 is unknown: black, and left out of maxrad (the 1 px pixel stays pale).
  assert _px([(2e7, 0), (0, -2e7), (1, 0)]) == [(0, 0, 0), (0, 0, 0), (255, 204, 204)]
  # Exactly 1e7 is not unknown (the test is strict '>'); it becomes the scale.
  assert _px([(1e7, 0), (1, 0)])[0] == (255, 0, 0)


def test_nan_is_black_and_does_not_change_the_scale():
  # The 10 px pixel is still normalised by 10 (the original's max(5, nan) would have used 5).
  assert _px([(np.nan, 0), (0, np.nan), (10, 0)]) == [(0, 0, 0), (0, 0, 0), (255, 0, 0)]


def test_input_not_modified():
  rng = np.random.default_rng(0)
  flow = rng.normal(size=(8, 8, 2)).astype(np.float32) * 7
  flow[0, 0] = [3e7, 1]
  flow[1, 1] = [np.nan, 2]
  before = flow.copy()
  flowviz.flow_to_image(flow)
  np.testing.assert_array_equal(flow, before)  # NaNs compare equal here


def test_dtypes_agree_and_shape_checked():
  rng = np.random.default_rng(1)
  flow = rng.normal(size=(16, 16, 2)) * 4
  a = flowviz.flow_to_image(flow.astype(np.float32))
  b = flowviz.flow_to_image(flow.astype(np.float32).astype(np.float64))
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="H x W x 2"):
    flowviz.flow_to_image(np.zeros((4, 4, 3)))


def test_draw_guidance_cross_shape():
  img = np.full((100, 400, 3), 50, np.uint8)
  before = img.copy()
  out = flowviz.draw_guidance(img, [(200.9, 40.2, 3.0, -1.0)])  # (x, y, dx, dy), truncated to (200, 40)
  np.testing.assert_array_equal(img, before)
  red = (out == [255, 0, 0]).all(-1)
  r, t = 400 // 50, 2
  # Two bars, (2t+1) x (2r+1) and (2r+1) x (2t+1), sharing a (2t+1)^2 square.
  assert red.sum() == 2 * (2 * r + 1) * (2 * t + 1) - (2 * t + 1) ** 2
  assert red[40, 200 + r] and not red[40, 200 + r + 1]
  assert red[40 + r, 200] and not red[40 + r + 1, 200]
  assert red[40 + t, 200 + r] and not red[40 + t + 1, 200 + r]
  assert not red[40 + t + 1, 200 + t + 1]
  assert ((out == before) | red[..., None]).all()


def test_draw_guidance_mask_sparse_and_points_agree():
  h, w = 60, 120
  pts = [(10, 12), (100, 50), (119, 59)]  # the last one sits on the corner: clipped, not wrapped
  mask = np.zeros((h, w), np.float32)
  sparse = np.zeros((h, w, 4), np.float32)
  for x, y in pts:
    mask[y, x] = 1
    sparse[y, x] = [0.0, 0.0, 1.0, 1.0]  # a static point: zero flow, mask 1
  img = np.zeros((h, w, 3), np.uint8)
  a = flowviz.draw_guidance(img, pts)
  np.testing.assert_array_equal(a, flowviz.draw_guidance(img, mask))
  np.testing.assert_array_equal(a, flowviz.draw_guidance(img, sparse))
  np.testing.assert_array_equal(a, flowviz.draw_guidance(img, jax.numpy.asarray(sparse)))
  np.testing.assert_array_equal(a, flowviz.draw_guidance(img, np.array(pts, np.float32)))  # N x 2 points
  assert (a[59, 119] == [255, 0, 0]).all() and (a[0, 0] == 0).all()
  # Points outside the image are skipped.
  np.testing.assert_array_equal(flowviz.draw_guidance(img, [(-5, 3), (w, 0)]), img)


def test_save_png_roundtrip_and_atomic(tmp_path):
  rgb = np.random.default_rng(2).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
  path = tmp_path / "sub" / "x.png"
  flowviz.save_png(str(path), rgb)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
  assert os.listdir(path.parent) == ["x.png"]  # no temporary file left behind
  with pytest.raises(ValueError, match="uint8"):
    flowviz.save_png(str(path), rgb.astype(np.float32))
