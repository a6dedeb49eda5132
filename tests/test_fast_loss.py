"""The chunked DiscreteLoss (`losses.discrete_loss_per_sample`) against upsampling everything first."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from cmp_jax import losses
from cmp_jax.models.layers import resize_bilinear_align_corners


def _upsample_first(logits, flow, nbins=99, fmax=50.0):
  """The straightforward formulation: the whole [B, H, W, 2 nbins] upsampled logits, then the CE."""
  up = resize_bilinear_align_corners(logits.astype(jnp.float32), flow.shape[1:3])
  bins = losses.flow_to_bins(flow, nbins, fmax)
  ce = lambda l, t: jax.nn.logsumexp(l, -1) - jnp.take_along_axis(l, t[..., None], -1)[..., 0]
  return jnp.mean(ce(up[..., :nbins], bins[..., 0]), (1, 2)) + jnp.mean(ce(up[..., nbins:], bins[..., 1]), (1, 2))


@pytest.mark.parametrize("logit_size, flow_size", [((3, 4), (24, 32)), ((6, 6), (6, 6)), ((1, 1), (5, 3)),
                                                   ((8, 5), (8, 20)), ((5, 8), (20, 8)), ((12, 12), (96, 96)),
                                                   ((5, 70), (20, 140)), ((70, 5), (140, 20)), ((66, 66), (66, 66)),
                                                   ((70, 70), (70, 90))])
@pytest.mark.parametrize("budget", [None, 1 << 14])
@pytest.mark.parametrize("dense_max", [0, 64])
def test_chunked_loss_matches_upsampling_first(logit_size, flow_size, budget, dense_max, monkeypatch):
  monkeypatch.setattr(losses, "DENSE_INTERP_MAX", dense_max)
  if budget:
    monkeypatch.setattr(losses, "LOSS_CHUNK_ELEMENTS", budget)  # many chunks
    monkeypatch.setattr(losses, "DENSE_LOSS_CHUNK_ELEMENTS", budget)
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  logits = 3.0 * jax.random.normal(k1, (2, *logit_size, 198))
  flow = 20.0 * jax.random.normal(k2, (2, *flow_size, 2))
  weights = jnp.array([0.3, 1.7])
  f_new = lambda l: jnp.sum(weights * losses.discrete_loss_per_sample(l, flow))
  f_ref = lambda l: jnp.sum(weights * _upsample_first(l, flow))
  v_new, g_new = jax.jit(jax.value_and_grad(f_new))(logits)
  v_ref, g_ref = jax.jit(jax.value_and_grad(f_ref))(logits)
  np.testing.assert_allclose(v_new, v_ref, rtol=2e-6)
  np.testing.assert_allclose(g_new, g_ref, rtol=1e-5, atol=1e-5 * float(jnp.abs(g_ref).max()))


def test_interp_matrix_rows():
  m = losses._interp_matrix(12, 384)
  assert m.shape == (384, 12)
  np.testing.assert_allclose(m.sum(1), 1.0, rtol=1e-6)
  assert m[0, 0] == 1.0 and m[-1, -1] == 1.0
  assert (np.count_nonzero(m, axis=1) <= 2).all()


def test_row_windows_hold_every_weight():
  for n_in, n_out, chunk in [(12, 384, 1), (12, 384, 8), (40, 320, 2), (1, 5, 5), (3, 24, 4), (5, 5, 1)]:
    starts, rows = losses._row_windows(n_in, n_out, chunk, np.float32)
    full = np.zeros((n_out // chunk, chunk, n_in), np.float32)
    for c, s in enumerate(starts):
      full[c, :, s:s + rows.shape[-1]] = rows[c]
    np.testing.assert_array_equal(full.reshape(n_out, n_in), losses._interp_matrix(n_in, n_out))
  assert losses._row_windows(12, 384, 1, np.float32)[1].shape == (384, 1, 2)


def test_rows_per_chunk_divides_the_height():
  assert losses._rows_per_chunk(8, 384, 384 * 198) == 12  # 8 * 12 * 384 * 198 <= 2 ** 23 < 8 * 13 * ...
  assert 384 % losses._rows_per_chunk(8, 384, 384 * 198) == 0
  assert losses._rows_per_chunk(8, 7, 1 << 30) == 1
  assert losses._rows_per_chunk(8, 384, 384 * 198, budget=1 << 21) == 3
