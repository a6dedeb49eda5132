"""cmp_jax.losses: binning at its edges, DiscreteLoss, soft-argmax decoding, fuse-then-upsample."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmp_jax import losses
from cmp_jax.models.layers import resize_bilinear_align_corners

LN99 = math.log(99)
# Jitted once per shape: on CPU that is much cheaper than running the ops one by one.
discrete_loss = jax.jit(losses.discrete_loss, static_argnames=("nbins", "fmax"))
discrete_loss_per_sample = jax.jit(losses.discrete_loss_per_sample, static_argnames=("nbins", "fmax"))
logits_to_flow = jax.jit(losses.logits_to_flow, static_argnames=("nbins", "fmax"))


def _jpeg_flow(level):
  """The original's JPEG flow decoding, float32 in its order: p / 255 * 100 - 50."""
  return np.float32(level) / np.float32(255) * np.float32(100) - np.float32(50)


# --------------------------------------------------------------------------------------------------
# Binning (reference §2.1, Appendix B)
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("level, expected_bin", [(0, 0), (1, 0), (127, 49), (128, 49), (254, 98), (255, 98),
                                                 (85, 33), (170, 66)])
def test_jpeg_levels_land_in_their_bins(level, expected_bin):
  flow = jnp.full((1, 2, 2, 2), _jpeg_flow(level))
  np.testing.assert_array_equal(losses.flow_to_bins(flow), expected_bin)


def test_bins_at_their_edges_and_clamp():
  step = 100.0 / 99
  t = jnp.array([-1e9, -50.0, -49.999, 0.0, 50.0, 1e9, -50 + step * 1.001, -50 + step * 0.999, 49.5])
  np.testing.assert_array_equal(losses.flow_to_bins(t), [0, 0, 0, 49, 98, 98, 1, 0, 98])
  assert losses.flow_to_bins(t).dtype == jnp.int32
  # Bin k covers [-50 + k step, -50 + (k + 1) step): every centre falls in its own bin.
  np.testing.assert_array_equal(losses.flow_to_bins(losses.bin_centres()), np.arange(99))


def test_bin_centres():
  c = np.asarray(losses.bin_centres())
  assert c.shape == (99,) and c.dtype == np.float32
  np.testing.assert_allclose(c[0], -49.4949, atol=1e-4)
  np.testing.assert_allclose(c[-1], 49.4949, atol=1e-4)
  assert abs(c[49]) < 1e-5
  np.testing.assert_allclose(np.diff(c), 100 / 99, rtol=1e-5)
  np.testing.assert_allclose(c, -50 + (np.arange(99) + 0.5) * 100 / 99, atol=1e-5)


def test_even_nbins_is_rejected():
  with pytest.raises(ValueError, match="odd"):
    losses.flow_to_bins(jnp.zeros((2,)), nbins=98)


# --------------------------------------------------------------------------------------------------
# DiscreteLoss
# --------------------------------------------------------------------------------------------------

def test_uniform_logits_give_2_ln_99():
  logits = jnp.zeros((2, 3, 4, 198))
  flow = jax.random.uniform(jax.random.PRNGKey(0), (2, 24, 32, 2), minval=-60, maxval=60)
  np.testing.assert_allclose(discrete_loss(logits, flow), 2 * LN99, rtol=2e-5)


def _torch_discrete_loss(logits_nhwc, flow_nhwc, nbins=99, fmax=50.0):
  """The original DiscreteLoss, written in PyTorch (reference §2.1)."""
  torch = pytest.importorskip("torch")
  x = torch.from_numpy(np.asarray(logits_nhwc).transpose(0, 3, 1, 2).copy())
  t = torch.from_numpy(np.asarray(flow_nhwc).transpose(0, 3, 1, 2).copy())
  if x.shape[2:] != t.shape[2:]:
    x = torch.nn.functional.interpolate(x, size=t.shape[2:], mode="bilinear", align_corners=True)
  step = 2 * fmax / nbins
  b = torch.floor((torch.clamp(t, -fmax + 1e-3, fmax - 1e-3) + fmax) / step).long()
  ce = torch.nn.CrossEntropyLoss()
  return float(ce(x[:, :nbins], b[:, 0]) + ce(x[:, nbins:], b[:, 1]))


@pytest.mark.parametrize("logit_size, flow_size", [((3, 4), (24, 32)), ((6, 6), (6, 6)), ((1, 1), (5, 3))])
def test_discrete_loss_matches_the_original(logit_size, flow_size):
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  logits = 3.0 * jax.random.normal(k1, (2, *logit_size, 198))
  flow = 20.0 * jax.random.normal(k2, (2, *flow_size, 2))
  expected = _torch_discrete_loss(logits, flow)
  np.testing.assert_allclose(float(discrete_loss(logits, flow)), expected, rtol=1e-5)


def test_discrete_loss_upsamples_logits_before_the_cross_entropy():
  # Logits that favour bin 40 on the left column and bin 60 on the right: upsampled first, the middle pixels
  # get mixed logits; CE at low resolution would give a different number.
  logits = np.zeros((1, 2, 2, 198), np.float32)
  logits[:, :, 0, 40] = logits[:, :, 0, 99 + 40] = 10.0
  logits[:, :, 1, 60] = logits[:, :, 1, 99 + 60] = 10.0
  flow = np.zeros((1, 8, 8, 2), np.float32)
  got = float(discrete_loss(jnp.asarray(logits), jnp.asarray(flow)))
  up = resize_bilinear_align_corners(jnp.asarray(logits), (8, 8))
  logp = jax.nn.log_softmax(up[..., :99], -1)
  manual = -2 * float(jnp.mean(logp[..., 49]))
  np.testing.assert_allclose(got, manual, rtol=1e-6)
  low = -2 * float(jnp.mean(jax.nn.log_softmax(jnp.asarray(logits)[..., :99], -1)[..., 49]))
  assert abs(got - low) > 0.1


def test_discrete_loss_sums_u_and_v_terms():
  logits = np.zeros((1, 4, 4, 198), np.float32)
  logits[..., 49] = 50.0  # u perfectly right (bin 49 = zero flow), v uniform
  flow = jnp.zeros((1, 4, 4, 2))
  np.testing.assert_allclose(discrete_loss(jnp.asarray(logits), flow), LN99, rtol=1e-5)


def test_per_sample_weights():
  k1, k2 = jax.random.split(jax.random.PRNGKey(2))
  logits = jax.random.normal(k1, (3, 2, 2, 198))
  flow = 10.0 * jax.random.normal(k2, (3, 8, 8, 2))
  per = discrete_loss_per_sample(logits, flow)
  assert per.shape == (3,)
  np.testing.assert_allclose(discrete_loss(logits, flow), per.mean(), rtol=1e-6)
  np.testing.assert_allclose(discrete_loss(logits, flow, weights=jnp.ones(3)), per.mean(), rtol=1e-6)
  np.testing.assert_allclose(discrete_loss(logits, flow, weights=jnp.array([1.0, 0.0, 1.0])),
                             (per[0] + per[2]) / 2, rtol=1e-6)
  np.testing.assert_allclose(discrete_loss(logits[:1], flow[:1]), per[0], rtol=1e-6)
  assert float(discrete_loss(logits, flow, weights=jnp.zeros(3))) == 0.0
  with pytest.raises(ValueError, match="weights"):
    discrete_loss(logits, flow, weights=jnp.ones(2))


def test_discrete_loss_accepts_bfloat16_logits_and_has_gradients():
  logits = jnp.zeros((1, 2, 2, 198), jnp.bfloat16)
  flow = jnp.zeros((1, 4, 4, 2))
  loss, grad = jax.jit(jax.value_and_grad(lambda l: losses.discrete_loss(l, flow)))(logits)
  assert loss.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
  np.testing.assert_allclose(loss, 2 * LN99, rtol=1e-6)
  # d loss / d logit of the target bin is negative (raise it to lower the loss).
  assert float(grad[0, 0, 0, 49]) < 0 and float(grad[0, 0, 0, 0]) > 0


def test_discrete_loss_shape_errors():
  with pytest.raises(ValueError, match="198"):
    discrete_loss(jnp.zeros((1, 2, 2, 99)), jnp.zeros((1, 4, 4, 2)))
  with pytest.raises(ValueError, match=r"\[B, H, W, 2\]"):
    discrete_loss(jnp.zeros((1, 2, 2, 198)), jnp.zeros((1, 4, 4, 3)))


# --------------------------------------------------------------------------------------------------
# Decoding (the original's Fuser) and fuse-then-upsample
# --------------------------------------------------------------------------------------------------

def test_uniform_logits_decode_to_zero_flow():
  flow = logits_to_flow(jnp.zeros((2, 3, 5, 198)))
  assert flow.shape == (2, 3, 5, 2) and flow.dtype == jnp.float32
  np.testing.assert_allclose(flow, 0.0, atol=1e-5)


@pytest.mark.parametrize("ku, kv", [(0, 98), (49, 49), (10, 73)])
def test_peaked_logits_decode_to_the_bin_centre(ku, kv):
  logits = np.zeros((1, 1, 1, 198), np.float32)
  logits[..., ku] = 100.0
  logits[..., 99 + kv] = 100.0
  flow = np.asarray(logits_to_flow(jnp.asarray(logits)))[0, 0, 0]
  centres = -50 + (np.arange(99) + 0.5) * 100 / 99
  np.testing.assert_allclose(flow, [centres[ku], centres[kv]], atol=1e-4)


def test_decoding_is_the_softmax_expectation_not_argmax():
  logits = np.zeros((1, 1, 1, 198), np.float32)
  logits[..., 60] = logits[..., 62] = 20.0  # two equal peaks: expectation = centre of bin 61
  logits[..., 99 + 49] = 20.0
  flow = np.asarray(logits_to_flow(jnp.asarray(logits)))[0, 0, 0]
  np.testing.assert_allclose(flow, [-50 + 61.5 * 100 / 99, 0.0], atol=1e-4)


def test_decoding_matches_the_original_fuser():
  torch = pytest.importorskip("torch")
  logits = 4.0 * jax.random.normal(jax.random.PRNGKey(3), (2, 3, 4, 198))
  x = torch.from_numpy(np.asarray(logits).transpose(0, 3, 1, 2).copy())
  step = 100.0 / 99
  mesh = (torch.arange(99, dtype=torch.float32) * step - 50 + step / 2).view(1, 99, 1, 1)
  u = (torch.softmax(x[:, :99], 1) * mesh).sum(1)
  v = (torch.softmax(x[:, 99:], 1) * mesh).sum(1)
  expected = torch.stack([u, v], -1).numpy()
  np.testing.assert_allclose(logits_to_flow(logits), expected, rtol=1e-5, atol=1e-5)


def test_predict_flow_fuses_then_upsamples():
  logits = 5.0 * jax.random.normal(jax.random.PRNGKey(4), (1, 3, 3, 198))
  flow = losses.predict_flow(logits, (9, 17))
  assert flow.shape == (1, 9, 17, 2)
  np.testing.assert_allclose(flow, resize_bilinear_align_corners(logits_to_flow(logits), (9, 17)),
                             rtol=1e-6, atol=1e-6)
  upsample_first = logits_to_flow(resize_bilinear_align_corners(logits, (9, 17)))
  assert np.abs(np.asarray(flow) - np.asarray(upsample_first)).max() > 0.1
  # Corners are the decoder-resolution predictions; no size keeps the decoder resolution.
  np.testing.assert_allclose(flow[0, 0, 0], logits_to_flow(logits)[0, 0, 0], rtol=1e-6)
  np.testing.assert_allclose(losses.predict_flow(logits), logits_to_flow(logits))
