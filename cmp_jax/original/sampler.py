"""The original's guidance sampler (`utils/data_utils.py` of CMP), transcribed slowly from reference §3.4.

A reference, not for use (see `cmp_jax.original`): the yardstick for `cmp_jax.sampling`
(tests/test_sampling.py compares points and RNG state) and the sampler of `cmp_jax.original.loader`.
`np.random` calls go to the RandomState passed in, in the original's order; `np.int` is `np.int64`.
Neighbour elimination keeps the original's N x N distance matrices.
"""

import numpy as np
from scipy import ndimage, signal


def get_edge(data):
  sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]]).astype(np.float32)
  ch_edges = []
  for k in range(data.shape[2]):
    ex = signal.convolve2d(data[:, :, k], sobel, boundary="symm", mode="same")
    ey = signal.convolve2d(data[:, :, k], sobel.T, boundary="symm", mode="same")
    ch_edges.append(np.sqrt(ex ** 2 + ey ** 2))
  return sum(ch_edges)


def nms(score, ks):
  ret = score.copy()
  ret[score < ndimage.maximum_filter(score, footprint=np.ones((ks, ks)))] = 0.
  return ret


def neighbor_elim(ph, pw, d, rng):
  valid = np.ones(len(ph), dtype=np.int64)
  h_dist = np.fabs(np.tile(ph[:, None], [1, len(ph)]) - np.tile(ph.T[None, :], [len(ph), 1]))
  w_dist = np.fabs(np.tile(pw[:, None], [1, len(pw)]) - np.tile(pw.T[None, :], [len(pw), 1]))
  idx1, idx2 = np.where((h_dist < d) & (w_dist < d))
  for i, j in zip(idx1, idx2):
    if valid[i] and valid[j] and i != j:
      if rng.rand() > 0.5:
        valid[i] = 0
      else:
        valid[j] = 0
  keep = np.where(valid == 1)
  return ph[keep], pw[keep]


def flow_sampler_points(flow, strategy, bg_ratio, nms_ks, max_num_guide, rng):
  h, w = flow.shape[:2]
  ds = max(1, max(h, w) // 400)
  pts_h, pts_w = [], []
  if "grid" in strategy:
    stride = int(np.sqrt(1. / bg_ratio))
    sh = int((h - h // stride * stride) / 2)
    sw = int((w - w // stride * stride) / 2)
    mesh = np.meshgrid(np.arange(sh, h, stride), np.arange(sw, w, stride))
    pts_h.append(np.array(mesh[0].flat))
    pts_w.append(np.array(mesh[1].flat))
  if "uniform" in strategy:
    pts_h.append(rng.randint(0, h, int(bg_ratio * h * w)))
    pts_w.append(rng.randint(0, w, int(bg_ratio * h * w)))
  if "gradnms" in strategy:
    ks = w // ds // 20
    edge = get_edge(flow[::ds, ::ds, :])
    kernel = np.ones((ks, ks), dtype=np.float32) / (ks * ks)
    subkernel = np.ones((ks // 2, ks // 2), dtype=np.float32) / (ks // 2 * ks // 2)
    score = signal.convolve2d(edge, kernel, boundary="symm", mode="same")
    subscore = signal.convolve2d(edge, subkernel, boundary="symm", mode="same")
    score = score / score.max() - subscore / subscore.max()
    pth, ptw = np.where(nms(score, nms_ks) > 0.1)
    pts_h.append(pth * ds)
    pts_w.append(ptw * ds)
  if "watershed" in strategy:
    edge = get_edge(flow[::ds, ::ds, :])
    edge /= max(edge.max(), 0.01)
    edge = (edge > 0.1).astype(np.float32)
    ws = ndimage.distance_transform_edt(1 - edge)
    r = nms(ws, nms_ks)
    r[0, :] = 0
    r[:, 0] = 0
    r[r.shape[0] - 1, :] = 0
    r[:, r.shape[1] - 1] = 0
    pth, ptw = np.where(r > 0)
    pth, ptw = neighbor_elim(pth, ptw, (nms_ks - 1) / 2, rng)
    pts_h.append(pth * ds)
    pts_w.append(ptw * ds)
  if "single" in strategy:
    pth, ptw = np.where((flow[:, :, 0] != 0) | (flow[:, :, 1] != 0))
    ri = rng.randint(len(pth))
    pts_h.append(pth[ri:ri + 1])
    pts_w.append(ptw[ri:ri + 1])
  pts_h = np.concatenate(pts_h)
  pts_w = np.concatenate(pts_w)
  if max_num_guide == -1:
    max_num_guide = np.inf
  randsel = rng.permutation(len(pts_h))[:len(pts_h)]
  selidx = randsel[np.arange(min(max_num_guide, len(randsel)))]
  return pts_h[selidx], pts_w[selidx]


def flow_sampler(flow, strategy, bg_ratio, nms_ks, max_num_guide, rng):
  """The original's `flow_sampler`: (sparse, mask), both H x W x 2, mask as int64 like the original's."""
  pts_h, pts_w = flow_sampler_points(flow, strategy, bg_ratio, nms_ks, max_num_guide, rng)
  sparse = np.zeros(flow.shape, dtype=flow.dtype)
  mask = np.zeros(flow.shape, dtype=np.int64)
  for k in range(2):
    sparse[:, :, k][(pts_h, pts_w)] = flow[:, :, k][(pts_h, pts_w)]
    mask[:, :, k][(pts_h, pts_w)] = 1
  return sparse, mask
