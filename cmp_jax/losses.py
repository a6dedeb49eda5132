"""The training loss (DiscreteLoss) and logits -> flow decoding (reference §2).

Layout: logits are [B, h, w, 2 * nbins]; channels [0, nbins) classify the u
(horizontal) flow bin, [nbins, 2 nbins) the v (vertical) bin. Flow is
[B, H, W, 2] = (u, v) in pixels.

* Training (`discrete_loss`): the logits are upsampled (bilinear,
  align_corners=True) to the target's H x W *before* the cross-entropy, which
  is then CE_u + CE_v, each a mean over all B*H*W pixels. Initial value with
  the original's init is ~2 ln 99 = 9.19.
* Inference (`predict_flow`): the soft-argmax (softmax expectation over bin
  centres) is taken at the decoder resolution, and the resulting 2-channel
  flow is then upsampled -- fuse, then upsample, as the original's eval().
"""

import functools
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from cmp_jax.models.layers import _align_corners_taps, resize_bilinear_align_corners

NBINS = 99
FMAX = 50.0


def _check_nbins(nbins: int):
  if nbins % 2 == 0 or nbins < 1:
    raise ValueError(f"nbins must be a positive odd number (so that zero flow has its own bin), got {nbins}")


def bin_centres(nbins: int = NBINS, fmax: float = FMAX) -> jax.Array:
  """Centres of the flow bins: -fmax + (k + 0.5) * 2 fmax / nbins, k = 0..nbins-1 (float32).

  For (99, 50): -49.4949, ..., 0 (k=49), ..., 49.4949. Computed as the original's
  `k * step - fmax + step / 2` in float32.
  """
  step = np.float32(2.0 * fmax / nbins)
  k = np.arange(nbins, dtype=np.float32)
  return jnp.asarray(k * step - np.float32(fmax) + step / np.float32(2.0))


def flow_to_bins(flow: jax.Array, nbins: int = NBINS, fmax: float = FMAX) -> jax.Array:
  """Quantises flow (any shape) into int32 bin indices in [0, nbins).

  bin = floor((clip(t, -fmax + 1e-3, fmax - 1e-3) + fmax) / step), step = 2 fmax / nbins,
  in float32 as the original. Bin k covers [-fmax + k step, -fmax + (k + 1) step).
  """
  _check_nbins(nbins)
  step = jnp.float32(2.0 * fmax / nbins)
  t = jnp.clip(flow.astype(jnp.float32), -fmax + 1e-3, fmax - 1e-3)
  return jnp.floor((t + jnp.float32(fmax)) / step).astype(jnp.int32)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-pixel CE: [..., K] float32 logits, [...] int labels -> [...] (logsumexp - target logit)."""
  target = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - target


# Elements of upsampled logits held at once by `discrete_loss_per_sample` (32 MB of float32); for small logits
# (`_dense_ce_sums_and_grad`) chunks of at most 4 MB (one output row at AlexNet's and ResNet's batch and
# crop), which measured 1.6-1.8x faster there than 32 MB ones, and 1.05-1.2x faster than 8 MB ones.
LOSS_CHUNK_ELEMENTS = 1 << 23
DENSE_LOSS_CHUNK_ELEMENTS = 1 << 20


# Inputs up to this size are upsampled by a matmul with the dense interpolation matrix in the loss: the loss
# is 2-2.3x faster for AlexNet / ResNet+Plain than gathering rows (same values to rounding; NOTES.md 4b).
DENSE_INTERP_MAX = 64


def _interp_matrix(n_in: int, n_out: int, dtype=np.float32) -> np.ndarray:
  """[n_out, n_in] matrix of align-corners linear interpolation (2 nonzeros a row at most), float32 or
  float64 (weights computed in that type, as `_align_corners_taps`)."""
  i0, i1, lam0, lam1 = _align_corners_taps(n_in, n_out, dtype)
  m = np.zeros((n_out, n_in), lam0.dtype)
  np.add.at(m, (np.arange(n_out), i0), lam0)
  np.add.at(m, (np.arange(n_out), i1), lam1)
  return m


def _rows_per_chunk(batch: int, height: int, row_elements: int, budget: Optional[int] = None) -> int:
  """The largest divisor of `height` whose chunk of rows holds at most `budget` elements (at least 1);
  `budget` defaults to LOSS_CHUNK_ELEMENTS as it is at the call."""
  budget = LOSS_CHUNK_ELEMENTS if budget is None else budget
  best = 1
  for r in range(1, height + 1):
    if height % r == 0 and batch * r * row_elements <= budget:
      best = r
  return best


def _row_windows(n_in: int, n_out: int, chunk: int, dtype):
  """Per chunk of `chunk` output rows, the window of input rows it interpolates from: ([chunks] start,
  [chunks, chunk, m] interpolation weights within the window); m, the window height, is the same for all."""
  full = _interp_matrix(n_in, n_out, dtype).reshape(n_out // chunk, chunk, n_in)
  nonzero = [np.flatnonzero(c.any(axis=0)) for c in full]
  m = max(int(nz[-1] - nz[0]) + 1 for nz in nonzero)
  starts = np.array([min(int(nz[0]), n_in - m) for nz in nonzero], np.int32)
  return starts, np.stack([c[:, s:s + m] for c, s in zip(full, starts)])


def _dense_ce_sums_and_grad(logits: jax.Array, bins: jax.Array, nbins: int, with_grad: bool):
  """[B] sums over H x W of CE_u + CE_v of small logits (both sides <= DENSE_INTERP_MAX) upsampled to the
  labels' H x W, and (`with_grad`) their gradient with respect to the logits, else None.

  The logits are laid out [h, 2, B, nbins, w] once (they are small). Each chunk of output rows reads the
  window of input rows it interpolates from, and upsamples it by two plain matmuls (rows, then columns by the
  [w, W] matrix) to [R, 2, B, nbins, W], W the minor axis; the CE reduces over the bins axis: nothing large
  is sliced or transposed. The target logit is gathered, one element a pixel (a one-hot select-and-sum over
  the bins was a further pass over the chunk: 1.1-1.2x this loss's time). The gradient is made in the same
  pass: softmax - one-hot, taken back to the window by the two transposed matmuls, so each upsampled logit is
  exponentiated once.
  """
  b, h, w, _ = logits.shape
  out_h, out_w = bins.shape[1:3]
  chunk = _rows_per_chunk(b, out_h, out_w * 2 * nbins, DENSE_LOSS_CHUNK_ELEMENTS)
  starts, rows = _row_windows(h, out_h, chunk, logits.dtype)
  m = rows.shape[-1]
  cols = jnp.asarray(_interp_matrix(w, out_w, logits.dtype).T)  # [w, W]
  lt = logits.reshape(b, h, w, 2, nbins).transpose(1, 3, 0, 4, 2)  # [h, 2, B, nbins, w]
  labels = bins.transpose(1, 3, 0, 2).reshape(-1, chunk, 2, b, out_w)  # [chunks, R, 2, B, W]
  k = jnp.arange(nbins, dtype=labels.dtype)[:, None]

  def body(carry, xs):
    total, grad = carry
    start, rows_c, lab = xs
    window = jax.lax.dynamic_slice_in_dim(lt, start, m, axis=0)
    up = jnp.einsum("wW,rsbkw->rsbkW", cols, jnp.einsum("rh,hsbkw->rsbkw", rows_c, window))
    top = jnp.max(up, axis=3, keepdims=True)
    e = jnp.exp(up - top)
    s = jnp.sum(e, axis=3, keepdims=True)
    target = jnp.take_along_axis(up, lab[:, :, :, None, :], axis=3)[:, :, :, 0]
    ce = (jnp.log(s) + top)[:, :, :, 0] - target
    total = total + jnp.sum(ce, axis=(0, 1, 3))
    if with_grad:
      onehot = k == lab[:, :, :, None, :]
      d_window = jnp.einsum("rh,rsbkw->hsbkw", rows_c, jnp.einsum("rsbkW,wW->rsbkw", e / s - onehot, cols))
      grad = jax.lax.dynamic_update_slice_in_dim(
          grad, jax.lax.dynamic_slice_in_dim(grad, start, m, axis=0) + d_window, start, axis=0)
    return (total, grad), None

  grad0 = jnp.zeros_like(lt) if with_grad else None
  xs = (jnp.asarray(starts), jnp.asarray(rows), labels)
  (total, grad), _ = jax.lax.scan(body, (jnp.zeros((b,), logits.dtype), grad0), xs)
  if with_grad:
    grad = grad.transpose(2, 0, 4, 1, 3).reshape(logits.shape)
  return total, grad


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_upsampled_ce_sums(logits: jax.Array, bins: jax.Array, nbins: int) -> jax.Array:
  """`_dense_ce_sums_and_grad`'s sums, with the gradient made in the forward pass (kept: logits-sized)."""
  return _dense_ce_sums_and_grad(logits, bins, nbins, with_grad=False)[0]


def _dense_upsampled_ce_sums_fwd(logits, bins, nbins):
  return _dense_ce_sums_and_grad(logits, bins, nbins, with_grad=True)  # (sums, gradient kept for the backward)


def _dense_upsampled_ce_sums_bwd(nbins, grad, g):
  return g[:, None, None, None] * grad, None


_dense_upsampled_ce_sums.defvjp(_dense_upsampled_ce_sums_fwd, _dense_upsampled_ce_sums_bwd)


def discrete_loss_per_sample(logits: jax.Array, flow: jax.Array, nbins: int = NBINS,
                             fmax: float = FMAX) -> jax.Array:
  """Per-sample DiscreteLoss [B]: mean over H*W of CE_u + CE_v.

  `discrete_loss` (no weights) is the mean of this over the batch.

  The logits are upsampled to the flow's size (bilinear, align_corners=True) a chunk of output rows at a
  time inside a rematerialised scan (small inputs by matmuls with the interpolation matrices), so the
  [B, H, W, 2 * nbins] upsampled logits (934 MB for the skip-layer decoder at batch 8, 384 x 384) are
  never held in memory, forward or backward. Same values as upsampling everything first, to rounding.

  Args:
    logits: [B, h, w, 2 * nbins] (any float dtype; computed in float32, or float64 for float64 logits).
    flow: [B, H, W, 2] dense target flow (u, v) in pixels.
  """
  _check_nbins(nbins)
  if logits.ndim != 4 or logits.shape[-1] != 2 * nbins:
    raise ValueError(f"logits must be [B, h, w, {2 * nbins}] (2 * nbins channels), got {logits.shape}")
  if flow.ndim != 4 or flow.shape[-1] != 2 or flow.shape[0] != logits.shape[0]:
    raise ValueError(f"flow must be [B, H, W, 2] with B = {logits.shape[0]}, got {flow.shape}")
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  bins = flow_to_bins(flow, nbins, fmax)
  b, h, w, c2 = logits.shape
  out_h, out_w = flow.shape[1:3]

  def ce_sums(up, lab):  # [B, R, W, 2 nbins], [B, R, W, 2] -> [B] sums of CE_u + CE_v over the rows
    ce = _cross_entropy(up[..., :nbins], lab[..., 0]) + _cross_entropy(up[..., nbins:], lab[..., 1])
    return jnp.sum(ce, axis=(1, 2))

  if (h, w) == (out_h, out_w):
    return ce_sums(logits, bins) / (out_h * out_w)
  if h <= DENSE_INTERP_MAX and w <= DENSE_INTERP_MAX:
    return _dense_upsampled_ce_sums(logits, bins, nbins) / (out_h * out_w)

  # Each axis is interpolated inside each chunk of output rows, either as a matmul with the dense
  # [n_out, n_in] interpolation matrix (small inputs: 2 * n_in flops per output, and a matmul's backward is
  # a matmul) or by gathering the two source rows/columns (large inputs; a gather's backward is a
  # scatter-add, slow on CPU).
  chunk = _rows_per_chunk(b, out_h, out_w * c2)
  n_chunks = out_h // chunk
  bins = bins.reshape(b, n_chunks, chunk, out_w, 2).swapaxes(0, 1)
  dense_h = h <= DENSE_INTERP_MAX
  if dense_h:
    row_taps = (jnp.asarray(_interp_matrix(h, out_h, logits.dtype).reshape(n_chunks, chunk, h)),)
  else:
    rows0, rows1, lam0, lam1 = _align_corners_taps(h, out_h, logits.dtype)
    row_taps = tuple(jnp.asarray(a.reshape(n_chunks, chunk)) for a in (rows0, rows1, lam0, lam1))
  if w <= DENSE_INTERP_MAX:
    mw = jnp.asarray(_interp_matrix(w, out_w, logits.dtype))
    up_w = lambda x: jnp.einsum("Ww,brwc->brWc", mw, x)
  else:
    up_w = lambda x: resize_bilinear_align_corners(x, (x.shape[1], out_w))

  @jax.checkpoint
  def chunk_sums(logits, taps, lab):
    if dense_h:
      up = up_w(jnp.einsum("rh,bhwc->brwc", taps[0], logits))
    else:
      r0, r1, l0, l1 = taps
      up = (l0[None, :, None, None] * up_w(jnp.take(logits, r0, axis=1))
            + l1[None, :, None, None] * up_w(jnp.take(logits, r1, axis=1)))
    return ce_sums(up, lab)

  def body(total, xs):
    taps, lab = xs
    return total + chunk_sums(logits, taps, lab), None

  total, _ = jax.lax.scan(body, jnp.zeros((b,), logits.dtype), (row_taps, bins))
  return total / (out_h * out_w)


def discrete_loss(logits: jax.Array, flow: jax.Array, nbins: int = NBINS, fmax: float = FMAX,
                  weights: Optional[jax.Array] = None) -> jax.Array:
  """The original's `DiscreteLoss(nbins, fmax)(logits, flow)`: a float32 scalar.

  Logits are upsampled (bilinear, align_corners=True) to the flow's H x W,
  then loss = CE(logits[..., :nbins], bin(u)) + CE(logits[..., nbins:], bin(v)),
  each CE a mean over all B*H*W pixels.

  Args:
    logits: [B, h, w, 2 * nbins].
    flow: [B, H, W, 2] dense target flow (u, v) in pixels.
    weights: optional [B] per-sample weights (e.g. 0 for padding samples in a
      last partial batch). The loss is then sum_b w_b L_b / sum_b w_b (0 if
      all weights are 0); with all weights equal it equals the unweighted loss.
  """
  per_sample = discrete_loss_per_sample(logits, flow, nbins, fmax)
  if weights is None:
    return jnp.mean(per_sample)
  weights = jnp.asarray(weights, jnp.float32)
  if weights.shape != per_sample.shape:
    raise ValueError(f"weights must have shape [B] = {per_sample.shape}, got {weights.shape}")
  total = jnp.sum(weights)
  return jnp.sum(weights * per_sample) / jnp.where(total > 0, total, 1.0)


def logits_to_flow(logits: jax.Array, nbins: int = NBINS, fmax: float = FMAX) -> jax.Array:
  """The original's `Fuser`: softmax expectation over bin centres (soft-argmax, not argmax).

  [B, h, w, 2 * nbins] logits -> [B, h, w, 2] float32 flow (u, v) at the same resolution.
  """
  _check_nbins(nbins)
  if logits.shape[-1] != 2 * nbins:
    raise ValueError(f"logits must have 2 * nbins = {2 * nbins} channels, got {logits.shape}")
  centres = bin_centres(nbins, fmax)
  logits = logits.astype(jnp.float32)
  u = jnp.sum(jax.nn.softmax(logits[..., :nbins], axis=-1) * centres, axis=-1)
  v = jnp.sum(jax.nn.softmax(logits[..., nbins:], axis=-1) * centres, axis=-1)
  return jnp.stack([u, v], axis=-1)


def predict_flow(logits: jax.Array, size: Optional[Tuple[int, int]] = None, nbins: int = NBINS,
                 fmax: float = FMAX) -> jax.Array:
  """Logits -> dense flow as the original's `CMP.eval()`: fuse at the decoder resolution, then upsample.

  Args:
    logits: [B, h, w, 2 * nbins].
    size: (H, W) to upsample the flow to (bilinear, align_corners=True),
      normally the input image size; None keeps the decoder resolution.
  Returns:
    [B, H, W, 2] float32 flow (u, v) in pixels. The flow values are *not*
    rescaled: the network predicts displacements in input-resolution pixels.
  """
  flow = logits_to_flow(logits, nbins, fmax)
  if size is not None:
    flow = resize_bilinear_align_corners(flow, size)
  return flow
