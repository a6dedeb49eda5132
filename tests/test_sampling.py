"""Guidance sampler (cmp_jax.sampling) against hand-checkable cases and a slow transcription of the original.

`cmp_jax.original.sampler` is the original's `utils/data_utils.py` sampler written out from reference
§3.4 (scipy convolve2d, scipy EDT, the O(N^2) neighbor_elim, np.meshgrid grid), with the global numpy RNG
replaced by a RandomState argument. The fast implementation must give the same points in the same order
AND leave the RNG in the same state, for the same seed.
"""

import os

import cv2
import numpy as np
import pytest
from scipy import ndimage

from cmp_jax import sampling
from cmp_jax.data import formats
from cmp_jax.original import sampler as original

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "sample")


# ----------------------------------------------------------------------------
# Real flows

def _sample_flows():
  """Flows of the shipped sample (JPEG-decoded, as training reads them), one per clip and a few more."""
  entries = formats.read_list_files([os.path.join(SAMPLE, "lists", "train.txt"),
                                     os.path.join(SAMPLE, "lists", "val.txt")], SAMPLE)
  picked = entries[::16]
  return [formats.read_flow(e.flow) for e in picked]


def _resize_crop(flow, short=416, crop=384):
  """The pipeline's geometry (§3.3): short-side resize, values x new_h/h, centre crop."""
  h, w = flow.shape[:2]
  if w < h:
    nw, nh = short, int(short / w * h)
  else:
    nh, nw = short, int(short / h * w)
  f = cv2.resize(flow, (nw, nh), interpolation=cv2.INTER_LINEAR) * (nh / h)
  y, x = (nh - crop) // 2, (nw - crop) // 2
  return np.ascontiguousarray(f[y:y + crop, x:x + crop]).astype(np.float32)


@pytest.fixture(scope="module")
def real_flows():
  flows = _sample_flows()
  assert len(flows) >= 6
  return flows


def _same(flow, strategy, bg, ks, mx, seed):
  r1, r2 = np.random.RandomState(seed), np.random.RandomState(seed)
  a = original.flow_sampler_points(flow, strategy, bg, ks, mx, r1)
  b = sampling.guidance_points(flow, strategy, bg, ks, mx, r2)
  np.testing.assert_array_equal(b[0], a[0])
  np.testing.assert_array_equal(b[1], a[1])
  # Same number of draws: the next numbers agree.
  assert r1.rand() == r2.rand()
  return len(a[0])


# The configs' settings (§5) plus everything the sampler offers.
CASES = [
    (("grid", "watershed"), 1.5625e-4, 41, 150),    # AlexNet YFCC
    (("grid", "watershed"), 2.5e-5, 81, 150),       # paper K=81, G=200
    (("watershed", "grid"), 3.629e-5, 67, -1),      # ResNet VOC (order of strategy must not matter)
    (("grid", "watershed"), 1.5625e-4, 15, -1),     # many points: the most neighbor_elim draws
    (("uniform", "gradnms", "watershed", "single"), 1e-3, 15, 60),
]


def test_same_points_and_rng_as_original_on_real_flows(real_flows):
  total = 0
  for i, flow in enumerate(real_flows):
    for strategy, bg, ks, mx in CASES:
      total += _same(flow, strategy, bg, ks, mx, seed=i)
  assert total > 500  # the comparison saw real work


def test_same_points_at_crop_384_as_the_pipeline_makes_them(real_flows):
  for i, flow in enumerate(real_flows[:4]):
    f = _resize_crop(flow)
    assert f.shape == (384, 384, 2)
    for strategy, bg, ks, mx in CASES[:4]:
      _same(f, strategy, bg, ks, mx, seed=100 + i)


def test_same_points_on_unquantised_flow_and_large_frames(real_flows):
  # Float flow that is not on the JPEG grid, and a frame > 800 px so ds = 2 (edges on a subsampled flow).
  rs = np.random.RandomState(0)
  f = cv2.resize(real_flows[0], (850, 420), interpolation=cv2.INTER_CUBIC) + rs.randn(420, 850, 2).astype(np.float32) * 0.01
  for strategy, bg, ks, mx in CASES:
    _same(f.astype(np.float32), strategy, bg, ks, mx, seed=7)


def test_edges_and_distances_are_bit_identical_to_scipy(real_flows):
  for flow in real_flows[:3]:
    np.testing.assert_array_equal(sampling.get_edge(flow), original.get_edge(flow))
    e = original.get_edge(flow)
    e /= e.max()
    e = e > 0.1
    np.testing.assert_array_equal(sampling.distance_to_edges(e), ndimage.distance_transform_edt(1 - e.astype(np.float32)))


@pytest.mark.parametrize("n,d,seed", [(300, 20.0, 0), (900, 7.0, 1), (50, 40.0, 2)])
def test_neighbor_elim_matches_the_n_squared_original(n, d, seed):
  rs = np.random.RandomState(seed)
  flat = np.sort(rs.choice(200 * 200, n, replace=False))
  ph, pw = flat // 200, flat % 200  # row-major, as np.where gives them
  r1, r2 = np.random.RandomState(seed), np.random.RandomState(seed)
  a = original.neighbor_elim(ph, pw, d, r1)
  b = sampling.neighbor_elim(ph, pw, d, r2)
  np.testing.assert_array_equal(b[0], a[0])
  np.testing.assert_array_equal(b[1], a[1])
  assert r1.rand() == r2.rand()
  assert len(b[0]) < n  # some were eliminated
  # Survivors are at least d apart in one axis.
  dh = np.abs(b[0][:, None] - b[0][None, :])
  dw = np.abs(b[1][:, None] - b[1][None, :])
  close = (dh < d) & (dw < d)
  np.fill_diagonal(close, False)
  assert not close.any()


def test_neighbor_elim_unsorted_input_matches_original():
  rs = np.random.RandomState(3)
  ph, pw = rs.randint(0, 100, 200), rs.randint(0, 100, 200)
  r1, r2 = np.random.RandomState(5), np.random.RandomState(5)
  a = original.neighbor_elim(ph, pw, 10.0, r1)
  b = sampling.neighbor_elim(ph, pw, 10.0, r2)
  np.testing.assert_array_equal(b[0], a[0])
  np.testing.assert_array_equal(b[1], a[1])
  assert r1.rand() == r2.rand()


def test_neighbor_elim_needs_no_n_squared_memory():
  # 40,000 candidates: the original's N x N float matrices would need ~13 GB each.
  side = 200
  ph, pw = np.divmod(np.arange(side * side), side)
  rng = np.random.RandomState(0)
  kh, kw = sampling.neighbor_elim(ph, pw, 2.0, rng)
  assert 0 < len(kh) < side * side
  grid = np.zeros((side, side), bool)
  grid[kh, kw] = True
  # d = 2: no two survivors are 8-neighbours.
  assert not (grid[1:, :] & grid[:-1, :]).any() and not (grid[:, 1:] & grid[:, :-1]).any()


# ----------------------------------------------------------------------------
# Hand-checkable cases

# reference §3.4 table: bg_ratio -> {crop: rows (= cols for a square crop)}
GRID_TABLE = {
    1.5625e-4: {256: [8, 88, 168, 248], 320: [0, 80, 160, 240], 384: [32, 112, 192, 272, 352]},
    2.5e-5: {256: [28, 228], 320: [60, 260], 384: [92, 292]},
    3.629e-5: {256: [45, 210], 320: [77, 242], 384: [27, 192, 357]},
    5.632e-5: {256: [61, 194], 320: [27, 160, 293], 384: [59, 192, 325]},
    5.74e-5: {256: [62, 193], 320: [29, 160, 291], 384: [61, 192, 323]},
}


@pytest.mark.parametrize("bg_ratio", sorted(GRID_TABLE))
@pytest.mark.parametrize("crop", [256, 320, 384])
def test_grid_table(bg_ratio, crop):
  rows = GRID_TABLE[bg_ratio][crop]
  ph, pw = sampling.grid_points(crop, crop, bg_ratio)
  assert sorted(set(ph.tolist())) == rows and sorted(set(pw.tolist())) == rows
  assert len(ph) == len(rows) ** 2
  # np.meshgrid(rows, cols).flat order: all rows of column 0 first.
  assert ph[:len(rows)].tolist() == rows and set(pw[:len(rows)].tolist()) == {rows[0]}


def test_grid_stride_truncates_sqrt():
  assert int(np.sqrt(1 / 3.629e-5)) == 165 and int(np.sqrt(1 / 5.74e-5)) == 131


@pytest.mark.parametrize("crop", [256, 320, 384])
def test_zero_flow_gives_only_grid_points(crop):
  flow = np.zeros((crop, crop, 2), np.float32)
  rng = np.random.RandomState(0)
  sparse, mask = sampling.sample_guidance(flow, ("grid", "watershed"), 1.5625e-4, 41, 150, rng)
  rows = GRID_TABLE[1.5625e-4][crop]
  expect = np.zeros((crop, crop), np.float32)
  expect[np.ix_(rows, rows)] = 1
  np.testing.assert_array_equal(mask[:, :, 0], expect)
  assert not sparse.any()


def _square_flow(size=128, top=40, left=50, side=36, u=3.0, v=-2.0):
  flow = np.zeros((size, size, 2), np.float32)
  flow[top:top + side, left:left + side] = (u, v)
  return flow


def test_translating_square_gives_watershed_points_inside_it():
  top, left, side = 40, 50, 36
  flow = _square_flow(top=top, left=left, side=side)
  for ks in (5, 9, 15):
    ph, pw = sampling.guidance_points(flow, ("watershed",), 1.5625e-4, ks, -1, np.random.RandomState(ks))
    assert len(ph) >= 1
    assert ((ph > top) & (ph < top + side - 1) & (pw > left) & (pw < left + side - 1)).all(), (ks, ph, pw)
  # The centre of the square is the distance maximum; with a big window it is the only point.
  ph, pw = sampling.guidance_points(flow, ("watershed",), 1.5625e-4, 41, -1, np.random.RandomState(0))
  assert len(ph) >= 1 and all(abs(h - (top + side / 2 - 0.5)) <= 1 and abs(w - (left + side / 2 - 0.5)) <= 1
                              for h, w in zip(ph, pw))


def test_sparse_is_flow_at_the_points_and_mask_is_duplicated(real_flows):
  flow = real_flows[1]
  sparse, mask = sampling.sample_guidance(flow, ("grid", "watershed"), 1.5625e-4, 15, -1, np.random.RandomState(1))
  assert sparse.dtype == np.float32 and mask.dtype == np.float32
  assert sparse.shape == mask.shape == flow.shape
  np.testing.assert_array_equal(mask[:, :, 0], mask[:, :, 1])
  assert set(np.unique(mask).tolist()) == {0.0, 1.0}
  np.testing.assert_array_equal(sparse, flow * mask)
  ph, pw = sampling.guidance_points(flow, ("grid", "watershed"), 1.5625e-4, 15, -1, np.random.RandomState(1))
  assert mask[:, :, 0].sum() == len(set(zip(ph.tolist(), pw.tolist())))


def test_max_num_guide_is_honoured(real_flows):
  flow = real_flows[2]
  n_all = len(sampling.guidance_points(flow, ("grid", "watershed"), 1.5625e-4, 15, -1, np.random.RandomState(0))[0])
  assert n_all > 20
  for mx in (1, 7, 20):
    ph, _ = sampling.guidance_points(flow, ("grid", "watershed"), 1.5625e-4, 15, mx, np.random.RandomState(0))
    assert len(ph) == mx
    _, mask = sampling.sample_guidance(flow, ("grid", "watershed"), 1.5625e-4, 15, mx, np.random.RandomState(0))
    assert mask[:, :, 0].sum() <= mx
  ph, _ = sampling.guidance_points(flow, ("grid", "watershed"), 1.5625e-4, 15, 10 * n_all, np.random.RandomState(0))
  assert len(ph) == n_all


def test_permutation_is_drawn_even_without_a_limit():
  flow = np.zeros((64, 64, 2), np.float32)
  r1, r2 = np.random.RandomState(0), np.random.RandomState(0)
  sampling.guidance_points(flow, ("grid",), 1 / 400., 15, -1, r1)
  r2.permutation(len(sampling.grid_points(64, 64, 1 / 400.)[0]))
  assert r1.rand() == r2.rand()


def test_full_returns_the_flow_and_draws_nothing():
  flow = _square_flow()
  rng = np.random.RandomState(0)
  sparse, mask = sampling.sample_guidance(flow, ("grid", "full"), 1.5625e-4, 15, 5, rng)
  np.testing.assert_array_equal(sparse, flow)
  assert mask.dtype == np.float32 and (mask == 1).all()
  assert rng.rand() == np.random.RandomState(0).rand()


def test_uniform_draws_bg_ratio_h_w_points():
  rng = np.random.RandomState(0)
  ph, pw = sampling.guidance_points(np.zeros((100, 80, 2), np.float32), "uniform", 0.01, 15, -1, rng)
  assert len(ph) == 80 and ph.max() < 100 and pw.max() < 80


def test_single_picks_a_moving_pixel_and_fails_clearly_on_zero_flow():
  flow = np.zeros((32, 32, 2), np.float32)
  flow[5, 7] = (1, 0)
  ph, pw = sampling.guidance_points(flow, "single", 0.01, 3, -1, np.random.RandomState(0))
  assert (ph.tolist(), pw.tolist()) == ([5], [7])
  with pytest.raises(ValueError, match="nonzero flow"):
    sampling.sample_guidance(np.zeros((32, 32, 2), np.float32), "single", 0.01, 3, -1, np.random.RandomState(0))


def test_bad_arguments_are_named():
  flow = np.zeros((32, 32, 2), np.float32)
  with pytest.raises(ValueError, match="unknown sampling strategy 'grd'"):
    sampling.sample_guidance(flow, ("grd",), 0.01, 3, -1, np.random.RandomState(0))
  with pytest.raises(ValueError, match="H x W x 2"):
    sampling.sample_guidance(np.zeros((32, 32)), ("grid",), 0.01, 3, -1, np.random.RandomState(0))
  with pytest.raises(ValueError, match="odd"):
    sampling.nms(np.zeros((8, 8)), 4)
  with pytest.raises(ValueError, match="guidepoint"):
    sampling.sample_guidance(flow, ("specified",), 0.01, 3, -1, np.random.RandomState(0))


def test_specified_points_are_x_y():
  flow = _square_flow()
  _, mask = sampling.sample_guidance(flow, ("specified",), 0.01, 3, -1, np.random.RandomState(0),
                                     guidepoint=np.array([[10, 3], [60, 50]]))
  assert mask[3, 10, 0] == 1 and mask[50, 60, 1] == 1 and mask.sum() == 4


def test_flow_sampler_is_the_original_name():
  assert sampling.flow_sampler is sampling.sample_guidance
