"""The fast conv formulation (`layers.conv2d`) against one XLA convolution (`layers.conv2d_reference`).

Outputs, input gradients and kernel gradients must agree to float rounding for every kernel size,
stride, padding and dilation the CMP networks use (and a few they do not), in float32 and float64.
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from cmp_jax.models import layers

# (batch, size, cin, cout, kernel, stride, padding, dilation)
CASES = [
    (2, 9, 5, 7, 1, 1, 0, 1),    # 1x1 (bottleneck conv1/conv3, heads)
    (2, 10, 6, 4, 1, 2, 0, 1),   # 1x1 stride 2 (layer2 downsample)
    (2, 9, 3, 8, 1, 3, 0, 1),    # 1x1 stride 3, odd size
    (2, 8, 4, 6, 3, 1, 1, 1),    # 3x3
    (2, 9, 4, 6, 3, 2, 1, 1),    # 3x3 stride 2, odd size (layer2 conv2)
    (1, 12, 3, 5, 3, 1, 2, 2),   # dilated (layer3)
    (2, 14, 3, 4, 3, 1, 4, 4),   # dilated (layer4)
    (2, 16, 3, 8, 7, 2, 3, 1),   # ResNet stem
    (2, 20, 3, 5, 11, 4, 5, 1),  # AlexNet conv1
    (2, 10, 4, 6, 5, 1, 2, 1),   # AlexNet conv2, ShallowNet
    (2, 10, 4, 5, 5, 2, 2, 1),   # ShallowNet features_0
    (1, 7, 2, 3, 3, 1, 0, 1),    # no padding
]


@pytest.fixture(params=["per-sample", "grouped", "xla-narrow"])
def formulation(request, monkeypatch):
  """The im2col loops one sample at a time (the default at these sizes) and over groups of samples, both also
  for narrow convs; and the default, where convs with < 32 output channels (all of CASES) keep XLA's kernel
  gradient."""
  if request.param != "xla-narrow":
    monkeypatch.setattr(layers, "KERNEL_GRAD_MIN_COUT", 0)
  if request.param == "grouped":
    _one_group(monkeypatch)
  return request.param


@pytest.fixture(params=["per-sample", "grouped"])
def grouping(request, monkeypatch):
  """The im2col loops one sample at a time (the default at these sizes) and over the whole batch."""
  if request.param == "grouped":
    _one_group(monkeypatch)
  return request.param


def _one_group(monkeypatch):
  monkeypatch.setattr(layers, "_samples_per_group", lambda batch, rows, cout: batch)


def _run(case, dtype):
  b, n, cin, cout, k, s, p, d = case
  rng = np.random.default_rng(sum(case))
  x = jnp.asarray(rng.normal(size=(b, n, n, cin)), dtype)
  w = jnp.asarray(rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin), dtype)
  out = {}
  for name, f in (("fast", layers.conv2d), ("ref", layers.conv2d_reference)):
    y, vjp = jax.vjp(lambda x_, w_: f(x_, w_, s, p, d), x, w)
    dy = jnp.asarray(np.random.default_rng(1).normal(size=y.shape), dtype)
    out[name] = (y,) + vjp(dy)
  return out


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}n{}c{}-{}k{}s{}p{}d{}".format(*c))
def test_fast_conv_matches_xla_conv_float32(case, formulation):
  out = _run(case, jnp.float32)
  for name, a, b in zip(("y", "dx", "dkernel"), out["fast"], out["ref"]):
    assert a.shape == b.shape and a.dtype == b.dtype, name
    assert _rel(a, b) <= 2e-6, f"{name}: {_rel(a, b):.1e}"


@pytest.mark.parametrize("case", CASES[:8], ids=lambda c: "b{}n{}c{}-{}k{}s{}p{}d{}".format(*c))
def test_fast_conv_matches_xla_conv_float64(case, formulation):
  with jax.enable_x64(True):
    out = _run(case, jnp.float64)
    for name, a, b in zip(("y", "dx", "dkernel"), out["fast"], out["ref"]):
      assert a.dtype == jnp.float64, name
      assert _rel(a, b) <= 1e-12, f"{name}: {_rel(a, b):.1e}"


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[6], (2, 9, 32, 8, 3, 2, 1, 1), (2, 12, 64, 8, 3, 1, 4, 4)],
                         ids=["1x1", "3x3s2", "3x3d4", "3x3s2-matmul", "3x3d4-matmul"])
def test_fast_conv_bfloat16_is_close(case, formulation):
  out = _run(case, jnp.bfloat16)
  ref = _run(case, jnp.float32)["ref"]
  for name, a, b in zip(("y", "dx", "dkernel"), out["fast"], ref):
    assert a.dtype == jnp.bfloat16, name
    assert _rel(a, b) <= 3e-2, f"{name}: {_rel(a, b):.1e}"


def test_fast_conv_under_jit_and_second_order_shapes():
  x = jnp.ones((2, 8, 8, 3))
  w = jnp.ones((3, 3, 3, 4)) * 0.1
  g = jax.jit(jax.grad(lambda w_: jnp.sum(layers.conv2d(x, w_, 1, 1, 1) ** 2)))(w)
  g_ref = jax.grad(lambda w_: jnp.sum(layers.conv2d_reference(x, w_, 1, 1, 1) ** 2))(w)
  np.testing.assert_allclose(g, g_ref, rtol=1e-5)


@pytest.mark.parametrize("case", [(2, 8, 32, 6, 3, 1, 1, 1), (2, 9, 32, 6, 3, 2, 1, 1), (1, 12, 30, 5, 3, 1, 2, 2),
                                  (2, 14, 29, 4, 3, 1, 4, 4), (2, 10, 12, 6, 5, 1, 2, 1), (2, 20, 3, 5, 11, 4, 5, 1),
                                  (1, 7, 32, 3, 3, 1, 0, 1), (3, 8, 32, 6, 3, 1, 1, 1)],
                         ids=["3x3", "3x3s2", "d2", "d4", "5x5", "11x11s4", "nopad", "b3"])
def test_matmul_formulation_matches_xla_conv(case, grouping):
  """The bf16 path's matmul formulation (forward, input and kernel gradients), checked in float32."""
  b, n, cin, cout, k, s, p, d = case
  rng = np.random.default_rng(sum(case))
  x = jnp.asarray(rng.normal(size=(b, n, n, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin), jnp.float32)
  y, vjp = jax.vjp(lambda x_, w_: layers.conv2d_reference(x_, w_, s, p, d), x, w)
  dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  dx, dw = vjp(dy)
  assert _rel(layers._matmul_conv(x, w, s, p, d), y) <= 2e-6
  assert _rel(layers._matmul_input_grad(dy, w, x.shape, s, p, d), dx) <= 2e-6
  assert _rel(layers._matmul_kernel_grad(x, dy, k, s, p, d), dw) <= 2e-6


def test_bfloat16_uses_the_matmul_path_above_the_depth_threshold():
  x = jnp.zeros((1, 8, 8, 32), jnp.bfloat16)
  assert layers._use_matmul_conv(x, jnp.zeros((3, 3, 32, 4), jnp.bfloat16))
  assert not layers._use_matmul_conv(x.astype(jnp.float32), jnp.zeros((3, 3, 32, 4)))
  assert not layers._use_matmul_conv(x[..., :3], jnp.zeros((7, 7, 3, 4), jnp.bfloat16))  # the stem: 147


def test_im2col_groups_are_the_fewest_samples_with_as_many_rows_as_output_channels():
  assert layers._samples_per_group(12, 144, 4096) == 12  # AlexNet fc6: the whole batch
  assert layers._samples_per_group(12, 144, 384) == 3
  assert layers._samples_per_group(10, 144, 384) == 5
  assert layers._samples_per_group(12, 576, 384) == 1


@pytest.mark.parametrize("channels", [1, 5, 8])
def test_channels_first_copy_is_the_transpose(channels):
  x = jnp.arange(6 * channels, dtype=jnp.bfloat16).reshape(6, channels)
  np.testing.assert_array_equal(jax.jit(layers._channels_first)(x), x.T)


def test_bfloat16_concatenate_moves_the_same_values():
  parts = [jnp.asarray(np.random.default_rng(i).normal(size=(2, 3, i + 1)), jnp.bfloat16) for i in range(3)]
  got = jax.jit(lambda ps: layers._concat(ps, axis=-1))(parts)
  assert got.dtype == jnp.bfloat16
  want = np.concatenate([np.asarray(p, np.float32) for p in parts], -1)
  np.testing.assert_array_equal(np.asarray(got, np.float32), want)
