"""The guidance sampler: which pixels of the target flow the network is shown.

`sample_guidance(flow, strategy, bg_ratio, nms_ks, max_num_guide, rng)` (alias
`flow_sampler`) is the original's `utils/data_utils.flow_sampler` (reference
§3.4) with the same parameters, the same points and the same calls on the
numpy RNG (§3.5), so a `np.random.RandomState` seeded alike gives the same
guidance:

  * points are collected in the order grid, uniform, gradnms, watershed,
    single, specified, whatever the order of `strategy`;
  * RNG calls: uniform's randint(rows) then randint(cols); one rand() per
    conflicting pair in `neighbor_elim`; single's randint; then one
    permutation, always (even with max_num_guide = -1).

What differs is speed and memory only (same numbers, bit for bit):
  * Sobel edges as shifted-view sums in convolve2d's own summation order;
  * the distance transform with OpenCV's exact L2 transform, rounded back
    to scipy's float64 values;
  * `neighbor_elim` finds the conflicting pairs with a sorted range search
    and visits them in the original's order ((i, j) row-major over the N x N
    matrix) without building that matrix (the original needs O(N^2) memory).
About 2x faster than the original for ('grid', 'watershed') at 384 x 384
(~6 ms), and it never allocates N x N.

Two things the original does that this module keeps on purpose: an all-zero
edge map in 'gradnms' gives NaN scores (no points), and 'single' on an
all-zero flow fails (here with a clear ValueError instead of numpy's).

Flow layout: H x W x 2, channel 0 = u (x), 1 = v (y), in pixels.
"""

import cv2
import numpy as np
from scipy import ndimage, signal

STRATEGIES = ("grid", "uniform", "gradnms", "watershed", "single", "full", "specified")

# Sobel x kernel as the original writes it (true convolution, as convolve2d).
_SOBEL = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float32)


def _convolve_3x3_symm(x, kernel):
  """scipy.signal.convolve2d(x, kernel, mode='same', boundary='symm'), bit for bit.

  convolve2d accumulates in the input dtype, visiting the kernel in row-major
  order: out[r, c] = sum_{m,n} K[m, n] * x[r + 1 - m, c + 1 - n]. The same
  sum over shifted views, in the same order, rounds the same way (zero taps
  skipped: adding 0 changes no finite sum), so edge maps and therefore the
  watershed points equal the original's exactly. About 10x faster than
  convolve2d on a 384 x 384 flow.
  """
  h, w = x.shape
  p = np.pad(x, 1, mode="symmetric")
  out, term = None, None
  for m in range(3):
    for n in range(3):
      k = kernel[m, n]
      if k == 0:
        continue
      view = p[2 - m:2 - m + h, 2 - n:2 - n + w]
      if out is None:
        out = k * view
        term = np.empty_like(out)
      else:  # out + k * view, in place (same rounding, no temporaries)
        np.add(out, np.multiply(view, k, out=term), out=out)
  return out


def get_edge(flow):
  """Sum over the u and v channels of the Sobel gradient magnitude (float32 for float32 flow)."""
  edge = 0
  for k in range(flow.shape[2]):
    ch = flow[:, :, k]
    ex = _convolve_3x3_symm(ch, _SOBEL)
    ey = _convolve_3x3_symm(ch, _SOBEL.T)
    magnitude = np.sqrt(np.add(np.square(ex, out=ex), np.square(ey, out=ey), out=ex), out=ex)
    edge = edge + magnitude
  return edge


def nms(score, ks):
  """Keep `score` where it equals the max over a ks x ks window (ties kept), else 0."""
  if ks % 2 != 1:
    raise ValueError(f"nms kernel size must be odd, got {ks}")
  out = score.copy()
  local_max = ndimage.maximum_filter(score, size=(ks, ks))  # mode 'reflect' as the original
  out[score < local_max] = 0
  return out


def remove_border(a):
  """Zeroes the first and last row and column, in place."""
  a[0, :] = 0
  a[:, 0] = 0
  a[-1, :] = 0
  a[:, -1] = 0
  return a


def neighbor_elim(ph, pw, d, rng):
  """Random elimination of points closer than d in both axes (Chebyshev box).

  Same result and same rng.rand() calls as the original, which visits every
  (i, j) with |ph_i - ph_j| < d and |pw_i - pw_j| < d in row-major order of
  the N x N matrix and, where i != j and both are still valid, draws one
  rand(): > 0.5 drops i, otherwise j. Survivors keep their order.

  Here the pairs of row i are found by a range search on ph (which is sorted,
  as np.where returns it) and row i stops once i is dropped, because no later
  pair of that row can draw. Memory O(N).
  """
  ph = np.asarray(ph)
  pw = np.asarray(pw)
  n = len(ph)
  if n == 0:
    return ph, pw
  order = None
  if np.any(np.diff(ph) < 0):  # not from np.where: search on a sorted copy
    order = np.argsort(ph, kind="stable")
  keys = ph if order is None else ph[order]
  lo = np.searchsorted(keys, ph - d, side="right")
  hi = np.searchsorted(keys, ph + d, side="left")
  valid = np.ones(n, dtype=bool)
  rand = rng.rand
  for i in np.flatnonzero(hi - lo > 1):
    if not valid[i]:
      continue
    cand = np.arange(lo[i], hi[i]) if order is None else np.sort(order[lo[i]:hi[i]])
    cand = cand[(np.abs(pw[cand] - pw[i]) < d) & (np.abs(ph[cand] - ph[i]) < d)]
    for j in cand.tolist():
      if j == i or not valid[j]:
        continue
      if rand() > 0.5:
        valid[i] = False
        break
      valid[j] = False
  return ph[valid], pw[valid]


def grid_points(h, w, bg_ratio):
  """The original's centred grid: stride int(sqrt(1/bg_ratio)); order of np.meshgrid(rows, cols).flat."""
  stride = int(np.sqrt(1.0 / bg_ratio))
  start_h = int((h - h // stride * stride) / 2)
  start_w = int((w - w // stride * stride) / 2)
  mesh = np.meshgrid(np.arange(start_h, h, stride), np.arange(start_w, w, stride))
  return np.asarray(mesh[0].flat), np.asarray(mesh[1].flat)


def distance_to_edges(edge):
  """scipy.ndimage.distance_transform_edt(1 - edge), bit for bit, about 4x faster.

  OpenCV's precise L2 transform is exact (Felzenszwalb) but float32; its
  squared value rounds back to the integer squared distance, whose float64
  sqrt is what scipy returns. `edge` must have at least one True pixel.
  """
  return np.sqrt(squared_distance_to_edges(edge).astype(np.float64))


def squared_distance_to_edges(edge):
  """The squared EDT of `distance_to_edges` as exact integers in float32 (< 2**24 for any crop)."""
  d = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
  return np.round(d * d)


def watershed_points(flow, nms_ks, rng):
  """Local maxima of the distance to the nearest motion edge, thinned by neighbor_elim."""
  h, w = flow.shape[:2]
  ds = max(1, max(h, w) // 400)
  edge = get_edge(flow[::ds, ::ds, :])
  edge /= max(edge.max(), 0.01)
  edge = edge > 0.1
  if not edge.any():
    # scipy's EDT then measures to a phantom point and the only maximum is a
    # corner, which remove_border drops: the original gets no points here.
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  # nms(distance_to_edges(edge), nms_ks) > 0 on the squared distances: sqrt is strictly increasing on
  # integers, so the same pixels survive. cv2.dilate with a box kernel is the max filter, BORDER_REFLECT is
  # scipy's 'reflect'. About 1.5x faster than the scipy route, with identical points (tests/test_sampling.py).
  d2 = squared_distance_to_edges(edge)
  local_max = cv2.dilate(d2, np.ones((nms_ks, nms_ks), np.uint8), borderType=cv2.BORDER_REFLECT)
  keep = remove_border((d2 >= local_max) & (d2 > 0))
  pth, ptw = np.where(keep)
  pth, ptw = neighbor_elim(pth, ptw, (nms_ks - 1) / 2, rng)
  return pth * ds, ptw * ds


def gradnms_points(flow, nms_ks):
  """Peaks of (box(edge, ks) - box(edge, ks//2)), ks = w // ds // 20, each box normalised by its max."""
  h, w = flow.shape[:2]
  ds = max(1, max(h, w) // 400)
  ks = w // ds // 20
  if ks // 2 < 1:
    raise ValueError(f"'gradnms' needs a flow at least {40 * ds} px wide (box size w//ds//20 = {ks})")
  edge = get_edge(flow[::ds, ::ds, :])
  # scipy's convolve2d itself: NMS keeps exact ties, so any other rounding
  # of these box sums would change which plateau pixels survive.
  kernel = np.ones((ks, ks), dtype=np.float32) / (ks * ks)
  subkernel = np.ones((ks // 2, ks // 2), dtype=np.float32) / (ks // 2 * ks // 2)
  score = signal.convolve2d(edge, kernel, boundary="symm", mode="same")
  subscore = signal.convolve2d(edge, subkernel, boundary="symm", mode="same")
  with np.errstate(invalid="ignore", divide="ignore"):
    score = score / score.max() - subscore / subscore.max()
  nms_res = nms(score, nms_ks)
  pth, ptw = np.where(nms_res > 0.1)
  return pth * ds, ptw * ds


def guidance_points(flow, strategy=("grid",), bg_ratio=1.0 / 6400, nms_ks=15, max_num_guide=-1,
                    rng=None, guidepoint=None):
  """The (rows, cols) of the guidance pixels, in the original's final (permuted) order.

  Args and RNG use as `sample_guidance`. Duplicates are kept (a pixel drawn by
  two strategies appears twice and counts twice in max_num_guide).
  """
  rng = np.random.mtrand._rand if rng is None else rng
  if not 0 <= bg_ratio <= 1:
    raise ValueError(f"bg_ratio must be in (0, 1], got {bg_ratio}")
  strategy = (strategy,) if isinstance(strategy, str) else tuple(strategy)
  for s in strategy:
    if s not in STRATEGIES:
      raise ValueError(f"unknown sampling strategy {s!r}; known: {STRATEGIES}")
  flow = np.asarray(flow)
  if flow.ndim != 3 or flow.shape[2] != 2:
    raise ValueError(f"flow must be H x W x 2, got shape {flow.shape}")
  h, w = flow.shape[:2]

  pts_h, pts_w = [], []
  if "grid" in strategy:
    ph, pw = grid_points(h, w, bg_ratio)
    pts_h.append(ph)
    pts_w.append(pw)
  if "uniform" in strategy:
    n = int(bg_ratio * h * w)
    pts_h.append(rng.randint(0, h, n))
    pts_w.append(rng.randint(0, w, n))
  if "gradnms" in strategy:
    ph, pw = gradnms_points(flow, nms_ks)
    pts_h.append(ph)
    pts_w.append(pw)
  if "watershed" in strategy:
    ph, pw = watershed_points(flow, nms_ks, rng)
    pts_h.append(ph)
    pts_w.append(pw)
  if "single" in strategy:
    ph, pw = np.where((flow[:, :, 0] != 0) | (flow[:, :, 1] != 0))
    if len(ph) == 0:
      raise ValueError("'single' sampling needs a pixel with nonzero flow; the flow is all zero")
    idx = rng.randint(len(ph))
    pts_h.append(ph[idx:idx + 1])
    pts_w.append(pw[idx:idx + 1])
  if "specified" in strategy:
    if guidepoint is None:
      raise ValueError("'specified' sampling needs guidepoint (N x 2, columns x, y)")
    guidepoint = np.asarray(guidepoint)
    pts_h.append(guidepoint[:, 1])
    pts_w.append(guidepoint[:, 0])

  pts_h = np.concatenate(pts_h).astype(np.int64) if pts_h else np.zeros(0, np.int64)
  pts_w = np.concatenate(pts_w).astype(np.int64) if pts_w else np.zeros(0, np.int64)
  n = len(pts_h)
  keep = n if max_num_guide == -1 else min(max_num_guide, n)
  sel = rng.permutation(n)[:keep]
  return pts_h[sel], pts_w[sel]


def sample_guidance(flow, strategy=("grid",), bg_ratio=1.0 / 6400, nms_ks=15, max_num_guide=-1,
                    rng=None, guidepoint=None):
  """Sparse guidance from a dense flow, as the original's `flow_sampler`.

  Args:
    flow: H x W x 2 float array (u, v) in pixels, after resize/crop/aug.
    strategy: any of 'grid', 'uniform', 'gradnms', 'watershed', 'single',
      'full', 'specified' (a name or a sequence; its order does not matter).
    bg_ratio: grid stride int(sqrt(1/bg_ratio)); uniform draws bg_ratio*H*W.
    nms_ks: odd NMS window; neighbor_elim distance is (nms_ks - 1) / 2.
    max_num_guide: keep at most this many points after the permutation; -1: all.
    rng: np.random.RandomState (default: numpy's global one, as the original).
    guidepoint: N x 2 (x, y) points for 'specified'.

  Returns:
    (sparse, mask), both H x W x 2 float32: sparse holds the flow at the
    guidance pixels and 0 elsewhere; mask is 1 there (both channels), else 0.
    'full' returns (copy of flow, ones) and draws nothing.
  """
  flow = np.asarray(flow)
  strat = (strategy,) if isinstance(strategy, str) else tuple(strategy)
  if "full" in strat:
    if flow.ndim != 3 or flow.shape[2] != 2:
      raise ValueError(f"flow must be H x W x 2, got shape {flow.shape}")
    return flow.astype(np.float32, copy=True), np.ones(flow.shape, np.float32)
  ph, pw = guidance_points(flow, strat, bg_ratio, nms_ks, max_num_guide, rng, guidepoint)
  sparse = np.zeros(flow.shape, np.float32)
  mask = np.zeros(flow.shape, np.float32)
  sparse[ph, pw, :] = flow[ph, pw, :]
  mask[ph, pw, :] = 1.0
  return sparse, mask


# The original's name (utils/data_utils.py).
flow_sampler = sample_guidance
