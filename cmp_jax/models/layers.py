"""Building blocks shared by every CMP network (NHWC, explicit symmetric padding).

Everything here reproduces a PyTorch op exactly as the original uses it:

* `resize_bilinear_align_corners`: `F.interpolate(mode='bilinear', align_corners=True)`
  (`jax.image.resize` uses half-pixel centres and cannot do this).
* `BatchNorm`: `nn.BatchNorm2d` (eps 1e-5, momentum 0.1 = Flax 0.9) including its
  running variance update with the *unbiased* batch variance, with optional
  per-group statistics (`groups`) to mimic per-GPU BatchNorm without SyncBN.
* `Conv`: `nn.Conv2d` with symmetric padding and the original's *effective*
  initialisation (Xavier normal, gain 0.02, zero bias; reference §1.2).
* `max_pool` / `avg_pool`: PyTorch floor mode, max-pool padding with -inf.
"""

import functools
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# Reference §1.2: every conv weight ~ Xavier normal with gain 0.02 and zero
# bias; every BatchNorm weight ~ N(1, 0.02) and zero bias.
INIT_GAIN = 0.02


def conv_kernel_std(shape) -> float:
  """std of a conv kernel [kh, kw, Cin, Cout]: 0.02 * sqrt(2 / (fan_in + fan_out)), fans = C * kh * kw."""
  kh, kw, cin, cout = shape
  return INIT_GAIN * float(np.sqrt(2.0 / ((cin + cout) * kh * kw)))


def initial_value(name: str, shape, z):
  """The initial value of a variable leaf called `name` given standard normals `z` of its shape.

  The single definition of the effective init (reference §1.2), used both by
  the module initialisers and by the one-draw `models.init_variables`:
  'kernel' -> conv_kernel_std * z; 'scale' (BN gamma) -> 1 + 0.02 z;
  'bias' and BN running 'mean' -> 0; BN running 'var' -> 1.
  """
  if name == "kernel":
    return conv_kernel_std(shape) * z
  if name == "scale":
    return 1.0 + INIT_GAIN * z
  if name in ("bias", "mean"):
    return jnp.zeros(shape, jnp.float32)
  if name == "var":
    return jnp.ones(shape, jnp.float32)
  raise ValueError(f"initial_value: no initialisation rule for a variable named {name!r}")


RANDOM_LEAVES = ("kernel", "scale")  # leaves whose initial value uses z


def conv_kernel_init(key, shape, dtype=jnp.float32):
  """Xavier/Glorot normal with gain 0.02 (untruncated)."""
  return initial_value("kernel", shape, jax.random.normal(key, shape, dtype))


def bn_scale_init(key, shape, dtype=jnp.float32):
  """BatchNorm gamma ~ N(1, 0.02)."""
  return initial_value("scale", shape, jax.random.normal(key, shape, dtype))


def init_from_shapes(shapes, rng):
  """Initial variables for a tree of ShapeDtypeStructs (from `jax.eval_shape(model.init, ...)`).

  Draws ONE standard-normal vector for all random leaves and slices it, so
  compiling it costs one RNG op instead of one per parameter (a ResNet-50 CMP
  initialises in ~4 s instead of ~13-15 s on a busy 2-core CPU). Same distributions as
  `model.init` (both use `initial_value`), different values for the same rng.
  """
  flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  names = [path[-1].key for path, _ in flat]
  sizes = [int(np.prod(leaf.shape)) if name in RANDOM_LEAVES else 0 for name, (_, leaf) in zip(names, flat)]
  z = jax.random.normal(rng, (sum(sizes),), jnp.float32)
  out, offset = [], 0
  for name, size, (_, leaf) in zip(names, sizes, flat):
    zi = z[offset:offset + size].reshape(leaf.shape) if size else None
    out.append(jnp.asarray(initial_value(name, leaf.shape, zi), leaf.dtype))
    offset += size
  return jax.tree_util.tree_unflatten(treedef, out)


# ---------------------------------------------------------------------------
# Resizing
# ---------------------------------------------------------------------------

def _align_corners_taps(n_in: int, n_out: int, dtype=np.float32):
  """Source indices and weights of PyTorch's align-corners linear interpolation.

  Mirrors ATen's `upsample_bilinear2d` index arithmetic, in float32 (ATen's
  accumulation type for float32/bfloat16/float16 tensors) or float64 (for float64):
  scale = (n_in - 1) / (n_out - 1) (0 when n_out == 1), src = scale * i,
  i0 = floor(src), i1 = min(i0 + 1, n_in - 1), lambda = src - i0.
  """
  ft = np.float64 if np.dtype(dtype) == np.float64 else np.float32
  if n_out > 1:
    scale = ft(n_in - 1) / ft(n_out - 1)
  else:
    scale = ft(0.0)
  src = scale * np.arange(n_out, dtype=ft)
  i0 = np.minimum(src.astype(np.int64), n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  lam1 = (src - i0.astype(ft)).astype(ft)
  lam0 = (ft(1.0) - lam1).astype(ft)
  return i0, i1, lam0, lam1


def resize_bilinear_align_corners(x: jax.Array, size: Tuple[int, int]) -> jax.Array:
  """Bilinear resize of an NHWC (or HWC) array with `align_corners=True` semantics.

  Matches `torch.nn.functional.interpolate(x, size, mode='bilinear',
  align_corners=True)`, including the size-1 cases (an output of size 1 takes
  input row/column 0; an input of size 1 is broadcast). Interpolation runs
  along W then H, in the same association as ATen, so float32 results agree to
  rounding. Identity sizes return `x` unchanged.

  Args:
    x: [..., H, W, C] array (at least 3 dims).
    size: (out_h, out_w).
  """
  out_h, out_w = int(size[0]), int(size[1])
  if out_h <= 0 or out_w <= 0:
    raise ValueError(f"resize_bilinear_align_corners: output size must be positive, got {size}")
  h_axis, w_axis = x.ndim - 3, x.ndim - 2
  in_h, in_w = x.shape[h_axis], x.shape[w_axis]
  if (in_h, in_w) == (out_h, out_w):
    return x

  def interp(y, axis, n_in, n_out):
    if n_in == n_out:
      return y
    i0, i1, lam0, lam1 = _align_corners_taps(n_in, n_out, y.dtype)
    shape = [1] * y.ndim
    shape[axis] = n_out
    w0 = jnp.asarray(lam0, y.dtype).reshape(shape)
    w1 = jnp.asarray(lam1, y.dtype).reshape(shape)
    return w0 * jnp.take(y, i0, axis=axis) + w1 * jnp.take(y, i1, axis=axis)

  x = interp(x, w_axis, in_w, out_w)
  return interp(x, h_axis, in_h, out_h)


# ---------------------------------------------------------------------------
# Pooling (PyTorch floor mode)
# ---------------------------------------------------------------------------

def max_pool(x: jax.Array, kernel: int, stride: int, padding: int = 0) -> jax.Array:
  """`nn.MaxPool2d(kernel, stride, padding)` (floor mode); padding acts as -inf.

  The gradient goes to the first maximum of each window in row-major order, as PyTorch's and as XLA's own
  (select-and-scatter). For overlapping windows (kernel > stride: AlexNet's and the ResNet stem's 3x3 / 2) it
  is computed from the k*k shifted views of the input (`_max_pool_bwd`), which XLA:CPU runs 5-13x faster than
  its select-and-scatter; non-overlapping pools keep XLA's, with which the ResNet steps' memory stayed lower
  (benchmarks/NOTES.md, section 9).
  """
  return (_max_pool if kernel > stride else _xla_max_pool)(x, kernel, stride, padding)


def _xla_max_pool(x, kernel: int, stride: int, padding: int):
  return nn.max_pool(x, (kernel, kernel), strides=(stride, stride), padding=((padding, padding), (padding, padding)))


_max_pool = jax.custom_vjp(_xla_max_pool, nondiff_argnums=(1, 2, 3))


def _max_pool_fwd(x, kernel, stride, padding):
  return _max_pool(x, kernel, stride, padding), x


def _max_pool_bwd(kernel, stride, padding, x, dy):
  # Each window's first maximum is found again here from x's shifted views (strictly greater replaces, as in
  # PyTorch's kernel), not by comparing them with the forward's output: XLA may recompute x inside a fusion
  # with other rounding, and an equality test against the stored maximum would then miss it.
  # In float32 for bfloat16 inputs (same comparisons; the sums rounded once): XLA:CPU fuses the search into
  # the placement below, and with bfloat16 operands it rounds after every operation of that fusion, which
  # made it 4-8x slower (benchmarks/NOTES.md, section 10).
  k, s, p = kernel, stride, padding
  wide = param_dtype(x.dtype)
  out_h, out_w = dy.shape[1:3]
  xp = jnp.pad(x.astype(wide), ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-jnp.inf)
  hp, wp = xp.shape[1:3]
  taps = _taps(xp, k, s, 1, out_h, out_w)
  best, first = taps[0], jnp.zeros(dy.shape, jnp.int32)
  for t, tap in enumerate(taps[1:], 1):
    greater = tap > best
    best, first = jnp.where(greater, tap, best), jnp.where(greater, t, first)
  dy = dy.astype(wide)
  dx = _untaps([jnp.where(first == t, dy, 0) for t in range(k * k)], k, s, 1, hp, wp)
  return (dx[:, p:p + x.shape[1], p:p + x.shape[2]].astype(x.dtype),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def avg_pool(x: jax.Array, kernel: int) -> jax.Array:
  """`nn.AvgPool2d(kernel)`: non-overlapping, stride = kernel, no padding, floor mode.

  Written as a mean over reshaped blocks rather than a strided window sum: the gradient is then a broadcast,
  where XLA:CPU transposes a window sum into a k*k-tap sum over an interior-padded map (170 ms for ShallowNet's
  8x8 pool at AlexNet's batch, about 1 ms this way).
  """
  b, h, w, c = x.shape
  k = kernel
  x = x[:, :h // k * k, :w // k * k].reshape(b, h // k, k, w // k, k, c)
  return jnp.mean(x, axis=(2, 4), dtype=param_dtype(x.dtype)).astype(x.dtype)


def half_dropout(module: nn.Module, x: jax.Array, deterministic: bool) -> jax.Array:
  """`nn.Dropout(0.5)` (AlexNet's fc6 and fc7): each element kept with probability 1/2 and doubled.

  Each keep decision is one random bit, 32 of them per 32-bit threefry draw over the channels, where flax's
  Dropout draws a 32-bit number per element: the same distribution for 1/32 of the random numbers (about
  100 ms less per AlexNet step on a 2-core CPU, benchmarks/NOTES.md section 10). Draws from the module's
  'dropout' rng; the channels must be a multiple of 32.
  """
  if deterministic:
    return x
  c = x.shape[-1]
  if c % 32:
    raise ValueError(f"half_dropout needs a multiple of 32 channels, got {c}")
  bits = jax.random.bits(module.make_rng("dropout"), x.shape[:-1] + (c // 32, 1), jnp.uint32)
  keep = (bits >> jnp.arange(32, dtype=jnp.uint32)) & 1
  return jnp.where(keep.reshape(x.shape) == 1, x * 2, jnp.zeros((), x.dtype))


# ---------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------

def param_dtype(dtype) -> Any:
  """Parameter / statistics dtype for a compute dtype: float32, or float64 for float64 (parity tests)."""
  return jnp.promote_types(jnp.float32, dtype)


def _acc_dtype(dtype):
  """Accumulation dtype of the matmuls: float32, or float64 for float64 (parity tests)."""
  return jnp.promote_types(jnp.float32, dtype)


def conv2d_reference(x, kernel, stride: int = 1, padding: int = 0, dilation: int = 1):
  """`nn.Conv2d` (no bias) as one XLA convolution, NHWC x HWIO -> NHWC: the plain formulation.

  `conv2d` computes the same values faster on CPU; this one is kept for tests and benchmarks.
  """
  s, p, d = stride, padding, dilation
  return jax.lax.conv_general_dilated(x, kernel, window_strides=(s, s), padding=((p, p), (p, p)),
                                      rhs_dilation=(d, d), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _taps(xp, k: int, stride: int, dilation: int, out_h: int, out_w: int):
  """The k*k shifted (strided) views of a padded input, one per kernel tap, in (ky, kx) order."""
  s, d = stride, dilation
  return [jax.lax.slice(xp, (0, ky * d, kx * d, 0),
                        (xp.shape[0], ky * d + (out_h - 1) * s + 1, kx * d + (out_w - 1) * s + 1, xp.shape[3]),
                        (1, s, s, 1))
          for ky in range(k) for kx in range(k)]


def _concat(arrays, axis: int):
  """`jnp.concatenate`, moving bfloat16 as 16-bit integers: XLA:CPU computes a bf16 concatenate in float32
  (twice the bytes written, and converts); the bf16 3x3 convs of ResNet-50 ran 1.05-2.3x slower that way."""
  if arrays[0].dtype != jnp.bfloat16:
    return jnp.concatenate(arrays, axis=axis)
  bits = jnp.concatenate([jax.lax.bitcast_convert_type(a, jnp.uint16) for a in arrays], axis=axis)
  return jax.lax.bitcast_convert_type(bits, jnp.bfloat16)


def _untaps(values, k: int, stride: int, dilation: int, hp: int, wp: int):
  """The transpose of `_taps`: k*k [..., out_h, out_w, C] arrays, in (ky, kx) order, each placed back where its
  tap was read in a padded [..., hp, wp, C] frame, and summed (col2im)."""
  s, d = stride, dilation
  out_h, out_w = values[0].shape[-3:-1]
  zero = jnp.zeros((), values[0].dtype)
  lead = [(0, 0, 0)] * (values[0].ndim - 3)
  total = None
  for v, (ky, kx) in zip(values, [(ky, kx) for ky in range(k) for kx in range(k)]):
    placed = jax.lax.pad(v, zero, lead + [(ky * d, hp - ky * d - ((out_h - 1) * s + 1), s - 1),
                                          (kx * d, wp - kx * d - ((out_w - 1) * s + 1), s - 1), (0, 0, 0)])
    total = placed if total is None else total + placed
  return total


def _kernel_grad(x, dy, k: int, stride: int, padding: int, dilation: int):
  """d(loss)/d(kernel) of a k x k conv as im2col matmuls, a group of samples at a time, summed.

  XLA:CPU runs the weight gradient of a convolution as another convolution whose kernel is the whole
  output map, which is slow (several times the forward) on large maps. Here, per group of samples
  (`_samples_per_group`), the k*k shifted views are concatenated into an [n*h*w, k*k*Cin] matrix and
  multiplied by dy [n*h*w, Cout]; a scan over the groups bounds the im2col buffer. Accumulates in float32
  (float64 for float64).
  """
  cin, cout = x.shape[-1], dy.shape[-1]
  out_h, out_w = dy.shape[1:3]
  acc = _acc_dtype(x.dtype)
  g = _samples_per_group(x.shape[0], out_h * out_w, cout)
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

  def one(total, group):
    xi, dyi = group
    cols = _concat(_taps(xi, k, stride, dilation, out_h, out_w), axis=-1)
    cols = cols.reshape(g * out_h * out_w, k * k * cin)
    return total + jax.lax.dot_general(cols, dyi.reshape(g * out_h * out_w, cout), (((0,), (0,)), ((), ())),
                                       preferred_element_type=acc), None

  groups = (_grouped_batch(xp, g), _grouped_batch(dy, g))
  total, _ = jax.lax.scan(one, jnp.zeros((k * k * cin, cout), acc), groups)
  return total.reshape(k, k, cin, cout)


def _samples_per_group(batch: int, rows_per_sample: int, cout: int) -> int:
  """How many samples the im2col loops take at a time: the fewest (a divisor of `batch`) whose im2col rows
  are at least `cout`, so that each matmul is at least as tall as the kernel matrix is wide; else the kernel is
  streamed again for every few rows (AlexNet's fc6: 144 rows per sample against a 2304 x 4096 kernel; 1.45x
  faster as one group). Larger groups of larger maps ran slower (benchmarks/NOTES.md, section 10)."""
  return next(n for n in range(1, batch + 1) if batch % n == 0 and (n * rows_per_sample >= cout or n == batch))


def _grouped_batch(x, g: int):
  """[B, ...] -> [B / g, g, ...]."""
  return x.reshape((x.shape[0] // g, g) + x.shape[1:])


def _out_size(n: int, k: int, stride: int, padding: int, dilation: int) -> int:
  return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _matmul_conv(x, kernel, stride: int, padding: int, dilation: int):
  """A k x k conv as im2col matmuls [n*h*w, k*k*Cin] @ [k*k*Cin, Cout] over groups of n samples (float32
  accumulation).

  In bfloat16 these matmuls run on the CPU's bf16 matmul instructions (AVX-512 BF16 or AMX), which XLA:CPU's
  bf16 convolution does not use: about 2x faster than the convolution for ResNet-50's 3x3 layers.
  """
  batch, k, cin, cout = x.shape[0], kernel.shape[0], kernel.shape[2], kernel.shape[3]
  out_h = _out_size(x.shape[1], k, stride, padding, dilation)
  out_w = _out_size(x.shape[2], k, stride, padding, dilation)
  g = _samples_per_group(batch, out_h * out_w, cout)
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  wm = kernel.reshape(k * k * cin, cout)

  def one(xi):
    cols = _concat(_taps(xi, k, stride, dilation, out_h, out_w), axis=-1)
    y = jnp.dot(cols.reshape(g * out_h * out_w, k * k * cin), wm, preferred_element_type=_acc_dtype(x.dtype))
    return y.astype(x.dtype).reshape(g, out_h, out_w, cout)

  return jax.lax.map(one, _grouped_batch(xp, g)).reshape(batch, out_h, out_w, cout)


def _matmul_input_grad(dy, kernel, x_shape, stride: int, padding: int, dilation: int):
  """d(loss)/d(input) of a k x k conv as matmuls dy @ kernel^T over groups of samples, then col2im."""
  k, cin, cout = kernel.shape[0], kernel.shape[2], kernel.shape[3]
  batch, height, width, _ = x_shape
  out_h, out_w = dy.shape[1:3]
  g = _samples_per_group(batch, out_h * out_w, cout)
  hp, wp = height + 2 * padding, width + 2 * padding
  wt = kernel.reshape(k * k * cin, cout).T
  acc = _acc_dtype(dy.dtype)

  def one(dyi):
    dcols = jnp.dot(dyi.reshape(g * out_h * out_w, cout), wt, preferred_element_type=acc)
    dcols = dcols.reshape(g, out_h, out_w, k * k, cin)
    total = _untaps([dcols[..., t, :] for t in range(k * k)], k, stride, dilation, hp, wp)
    return total[:, padding:padding + height, padding:padding + width].astype(dy.dtype)

  return jax.lax.map(one, _grouped_batch(dy, g)).reshape(batch, height, width, cin)


def _matmul_kernel_grad(x, dy, k: int, stride: int, padding: int, dilation: int):
  """d(loss)/d(kernel) as [k*k*Cin, n*h*w] @ [n*h*w, Cout] matmuls over groups of n samples, summed (the
  transposed im2col is built from a channels-first copy of the input, so the matmul has the layout XLA:CPU
  runs on its fast bf16 kernel)."""
  cin, cout = x.shape[-1], dy.shape[-1]
  out_h, out_w = dy.shape[1:3]
  s, d = stride, dilation
  acc = _acc_dtype(x.dtype)
  g = _samples_per_group(x.shape[0], out_h * out_w, cout)
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  xpt = _grouped_batch(xp, g).transpose(0, 4, 1, 2, 3)  # [B / g, Cin, g, Hp, Wp]

  def one(total, group):
    xi, dyi = group  # [Cin, g, Hp, Wp], [g, h, w, Cout]
    cols_t = _concat([
        jax.lax.slice(xi, (0, 0, ky * d, kx * d),
                      (cin, g, ky * d + (out_h - 1) * s + 1, kx * d + (out_w - 1) * s + 1), (1, 1, s, s))
        for ky in range(k) for kx in range(k)], axis=0).reshape(k * k * cin, g * out_h * out_w)
    return total + jnp.dot(cols_t, dyi.reshape(g * out_h * out_w, cout), preferred_element_type=acc), None

  total, _ = jax.lax.scan(one, jnp.zeros((k * k * cin, cout), acc), (xpt, _grouped_batch(dy, g)))
  return total.reshape(k, k, cin, cout)


# k x k convs whose im2col rows have at least this many entries (k*k*Cin) run as matmuls in bfloat16.
MATMUL_CONV_MIN_DEPTH = 256


# k x k convs with fewer output channels than this keep XLA's kernel gradient (see `_conv_kxk_bwd`).
KERNEL_GRAD_MIN_COUT = 32


def _use_matmul_conv(x, kernel) -> bool:
  k, cin = kernel.shape[0], kernel.shape[2]
  return x.dtype == jnp.bfloat16 and k * k * cin >= MATMUL_CONV_MIN_DEPTH


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_kxk(x, kernel, stride, padding, dilation):
  if _use_matmul_conv(x, kernel):
    return _matmul_conv(x, kernel, stride, padding, dilation)
  return conv2d_reference(x, kernel, stride, padding, dilation)


def _conv_kxk_fwd(x, kernel, stride, padding, dilation):
  return _conv_kxk(x, kernel, stride, padding, dilation), (x, kernel)


def _conv_kxk_bwd(stride, padding, dilation, res, dy):
  x, kernel = res
  k = kernel.shape[0]
  if _use_matmul_conv(x, kernel):
    dx = _matmul_input_grad(dy, kernel, x.shape, stride, padding, dilation)
    dk = _matmul_kernel_grad(x, dy, k, stride, padding, dilation)
    return dx, dk.astype(kernel.dtype)
  # The input gradient is XLA's own (a convolution of dy with the flipped kernel, fast); unused input
  # gradients (the stem's) are removed by XLA. So is the kernel gradient of convs with few output channels
  # (ShallowNet's 16), for which the im2col matmul is too narrow to pay for its buffer (1.2-3.4x slower).
  if kernel.shape[3] < KERNEL_GRAD_MIN_COUT:
    _, vjp = jax.vjp(lambda a, w: conv2d_reference(a, w, stride, padding, dilation), x, kernel)
    return vjp(dy)
  _, vjp_x = jax.vjp(lambda a: conv2d_reference(a, kernel, stride, padding, dilation), x)
  (dx,) = vjp_x(dy)
  dk = _kernel_grad(x, dy, k, stride, padding, dilation)
  return dx, dk.astype(kernel.dtype)


_conv_kxk.defvjp(_conv_kxk_fwd, _conv_kxk_bwd)


@jax.custom_vjp
def _matmul_1x1(x, w):
  """A 1x1 conv in bfloat16 ([..., Cin] @ [Cin, Cout]) whose matmuls accumulate in float32.

  XLA:CPU runs a bf16 x bf16 -> float32 matmul on its fast bf16 kernel, but a bf16 -> bf16 one (what autodiff
  of a plain bf16 dot gives) on a slower one. The kernel gradient x^T dy contracts the long pixel axis of both
  operands: given x^T as a transpose, XLA:CPU folds it into the matmul and runs that in float32; from a
  channels-first copy (`_channels_first`) it runs in bf16, 1.2-2.8x faster (benchmarks/NOTES.md, section 10).
  """
  return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32).astype(x.dtype)


def _matmul_1x1_fwd(x, w):
  return _matmul_1x1(x, w), (x, w)


def _matmul_1x1_bwd(res, dy):
  x, w = res
  dx = jax.lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())),
                           preferred_element_type=jnp.float32).astype(x.dtype)
  cin, cout = w.shape
  dw = jnp.dot(_channels_first(x.reshape(-1, cin)), dy.reshape(-1, cout), preferred_element_type=jnp.float32)
  return dx, dw.astype(w.dtype)


def _channels_first(x):
  """[N, C] -> a [C, N] copy: two halves of the channels transposed and concatenated, which XLA:CPU keeps
  as a copy (one transpose it would fold into the matmul that reads it)."""
  half = x.shape[1] // 2
  return _concat([x[:, :half].T, x[:, half:].T], axis=0)


_matmul_1x1.defvjp(_matmul_1x1_fwd, _matmul_1x1_bwd)


def conv2d(x, kernel, stride: int = 1, padding: int = 0, dilation: int = 1):
  """`nn.Conv2d` (no bias), NHWC x HWIO -> NHWC, in the formulation XLA:CPU runs fastest.

  Same values as `conv2d_reference` to float rounding:
  * 1x1 convs (no padding) are matmuls (`dot_general`) over the channels, after subsampling the input by
    the stride: forward and both gradients are then matmuls, ~2.7x faster than XLA's convolution.
  * k x k convs, through a custom VJP: in float32, XLA's convolution forward and input gradient and the
    kernel gradient as im2col matmuls (`_kernel_grad`; XLA's below 32 output channels); in bfloat16 (when
    k*k*Cin >= 256), all three as im2col matmuls (`_matmul_conv`, `_matmul_input_grad`,
    `_matmul_kernel_grad`) on the fast bf16 kernel. The im2col loops take one sample at a time, or a few for
    small maps.
  """
  k = kernel.shape[0]
  if kernel.shape[1] != k:
    raise ValueError(f"conv2d: square kernels only, got {kernel.shape[:2]}")
  if k == 1 and padding == 0:
    if stride > 1:
      x = x[:, ::stride, ::stride, :]
    if x.dtype == jnp.bfloat16:
      y = _matmul_1x1(x, kernel[0, 0])
    else:
      y = jax.lax.dot_general(x, kernel[0, 0], (((3,), (0,)), ((), ())))
  else:
    y = _conv_kxk(x, kernel, stride, padding, dilation)
  return y


class Conv(nn.Module):
  """`nn.Conv2d` with symmetric zero padding and the original's effective init.

  The kernel is HWIO (`kernel`), the bias `bias`; parameters are float32
  (float64 when `dtype` is float64) and the computation runs in `dtype`
  (through `conv2d`, the fast formulation).
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, p, s, d = self.kernel_size, self.padding, self.stride, self.dilation
    pdt = param_dtype(self.dtype)
    kernel = self.param("kernel", conv_kernel_init, (k, k, x.shape[-1], self.features), pdt)
    y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), s, p, d)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), pdt)
      y = y + bias.astype(self.dtype)
    return y


# ---------------------------------------------------------------------------
# BatchNorm
# ---------------------------------------------------------------------------

@jax.custom_vjp
def relu(x):
  """ReLU whose backward keeps only its output (autodiff of `nn.relu` keeps the output, a mask and a zero
  buffer of the same size)."""
  return jnp.maximum(x, 0)


def _relu_fwd(x):
  y = jnp.maximum(x, 0)
  return y, y


def _relu_bwd(y, dy):
  return (jnp.where(y > 0, dy, 0),)


relu.defvjp(_relu_fwd, _relu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _bn_train(x, scale, bias, groups: int, epsilon: float, fuse_relu: bool):
  """Training-mode BatchNorm (statistics per group of the batch), optionally followed by ReLU.

  Returns (y in x's dtype, mean, biased variance); the statistics are for the running averages only, which
  take them through `stop_gradient`, so the backward ignores their cotangents. A custom VJP because autodiff
  keeps float32 copies of the centred input and the output for the backward, whatever the compute dtype;
  this one keeps only x, in its own dtype (bfloat16 under `model.dtype=bfloat16`), and recomputes the rest.
  With XLA:CPU's memory scheduler (cmp_jax/__init__.py) that takes a ResNet-50 step's memory down by 1.6x in
  float32 and 2.6x in bfloat16, and the step gets faster (benchmarks/NOTES.md, section 7).
  """
  return _bn_train_fwd(x, scale, bias, groups, epsilon, fuse_relu)[0]


def _grouped(x, groups, dtype):
  """[B, H, W, C] -> [groups, B / groups, H, W, C] in dtype."""
  return x.astype(dtype).reshape((groups, x.shape[0] // groups) + x.shape[1:])


def _bn_normalise(xg, mean, rstd, scale, bias, fuse_relu):
  xhat = (xg - mean) * rstd
  z = xhat * scale + bias
  return xhat, (jnp.maximum(z, 0) if fuse_relu else z)


def _bn_train_fwd(x, scale, bias, groups, epsilon, fuse_relu):
  xg = _grouped(x, groups, scale.dtype)
  axes = tuple(range(1, xg.ndim - 1))
  mean = jnp.mean(xg, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(xg - mean), axis=axes, keepdims=True)
  rstd = jax.lax.rsqrt(var + epsilon)
  _, y = _bn_normalise(xg, mean, rstd, scale, bias, fuse_relu)
  return (y.reshape(x.shape).astype(x.dtype), mean, var), (x, mean, rstd, scale, bias)


def _bn_train_bwd(groups, epsilon, fuse_relu, res, cotangents):
  x, mean, rstd, scale, bias = res
  xhat, z = _bn_normalise(_grouped(x, groups, scale.dtype), mean, rstd, scale, bias, False)
  dz = _grouped(cotangents[0], groups, scale.dtype)
  if fuse_relu:
    dz = jnp.where(z > 0, dz, 0)
  axes = tuple(range(1, dz.ndim - 1))
  mean_dz = jnp.mean(dz, axis=axes, keepdims=True)
  mean_dz_xhat = jnp.mean(dz * xhat, axis=axes, keepdims=True)
  dx = (scale * rstd) * (dz - mean_dz - xhat * mean_dz_xhat)
  n = np.prod(dz.shape[1:-1])
  dscale = n * jnp.sum(mean_dz_xhat, axis=tuple(range(dz.ndim - 1)))
  dbias = n * jnp.sum(mean_dz, axis=tuple(range(dz.ndim - 1)))
  return dx.reshape(x.shape).astype(x.dtype), dscale, dbias


_bn_train.defvjp(_bn_train_fwd, _bn_train_bwd)


class BatchNorm(nn.Module):
  """PyTorch `nn.BatchNorm2d` semantics on NHWC inputs, with optional per-group statistics.

  Training (`use_running_average=False`): each contiguous chunk of
  `batch / groups` samples is normalised with its own biased mean/variance over
  (chunk, H, W) -- what `groups` GPUs without SyncBN do when each holds one
  chunk. The running statistics are updated from chunk 0 only (the original
  saves rank 0's buffers), with momentum `momentum` (Flax convention: 0.9 =
  PyTorch 0.1) and the *unbiased* variance var * n / (n - 1), n = chunk * H * W,
  as PyTorch does. During `init` nothing is updated (Flax convention).

  Eval (`use_running_average=True`): normalises with the running statistics.

  `relu=True` applies ReLU to the output (`nn.Sequential(BatchNorm2d, ReLU)`), fused into the training-mode
  backward (`_bn_train`). Statistics and the normalisation run in float32 (float64 when `dtype` is
  float64); the output is cast to `dtype`.
  Variables: params `scale` (init N(1, 0.02)) and `bias` (0); batch_stats `mean` (0) and `var` (1).
  """
  use_running_average: Optional[bool] = None
  momentum: float = 0.9
  epsilon: float = 1e-5
  groups: int = 1
  dtype: Dtype = jnp.float32
  relu: bool = False

  @nn.compact
  def __call__(self, x, use_running_average: Optional[bool] = None):
    use_ra = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    c = x.shape[-1]
    pdt = param_dtype(self.dtype)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), pdt))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), pdt))
    scale = self.param("scale", bn_scale_init, (c,), pdt)
    bias = self.param("bias", nn.initializers.zeros, (c,), pdt)

    if use_ra:
      inv = scale * jax.lax.rsqrt(ra_var.value + self.epsilon)
      y = (x.astype(pdt) * inv + (bias - ra_mean.value * inv)).astype(self.dtype)
      return nn.relu(y) if self.relu else y

    b = x.shape[0]
    groups = 1 if self.is_initializing() else self.groups
    if groups < 1 or b % groups:
      raise ValueError(f"BatchNorm: batch size {b} is not divisible by bn_groups={groups} "
                       "(per-device BatchNorm needs the same number of samples on every device)")
    y, mean, var = _bn_train(x, scale, bias, groups, self.epsilon, self.relu)

    if not self.is_initializing():
      n = x.size // (b * c) * (b // groups)
      mean0 = mean.reshape(groups, c)[0]
      var0 = var.reshape(groups, c)[0] * (n / max(n - 1, 1))
      m = self.momentum
      ra_mean.value = m * ra_mean.value + (1.0 - m) * jax.lax.stop_gradient(mean0)
      ra_var.value = m * ra_var.value + (1.0 - m) * jax.lax.stop_gradient(var0)
    return y.astype(self.dtype)


def conv_bn_relu(parent: nn.Module, x, name: str, conv_idx: int, features: int, kernel: int,
                 train: bool, stride: int = 1, padding: int = 0, dilation: int = 1):
  """Applies `{name}_{conv_idx}` (Conv, bias) then `{name}_{conv_idx+1}` (BatchNorm) and ReLU.

  Names mirror a PyTorch `nn.Sequential(Conv2d, BatchNorm2d, ReLU)` at index
  `conv_idx`, so `decoder2.1.weight` <-> params['decoder2_1']['kernel'].
  Must be called from inside a `@nn.compact` method of `parent`, which must
  have `dtype` and `bn_groups` attributes.
  """
  x = Conv(features, kernel, stride=stride, padding=padding, dilation=dilation,
           dtype=parent.dtype, name=f"{name}_{conv_idx}")(x)
  return BatchNorm(use_running_average=not train, groups=parent.bn_groups, dtype=parent.dtype, relu=True,
                   name=f"{name}_{conv_idx + 1}")(x)


def check_input_size(model_name: str, height: int, width: int, multiple: int):
  """Raises a ValueError naming the size and the rule when H or W is not a positive multiple."""
  if height <= 0 or width <= 0 or height % multiple or width % multiple:
    raise ValueError(
        f"{model_name}: input size {height}x{width} (HxW) is not supported: height and width must be "
        f"positive multiples of {multiple} (its output stride), otherwise the image and sparse feature "
        f"maps differ in size. Crop or pad the input, e.g. to "
        f"{max(multiple, height // multiple * multiple)}x{max(multiple, width // multiple * multiple)}.")
