"""Flow decoders: `MotionDecoderPlain` (§1.6) and `MotionDecoderSkipLayer` (§1.7).

Parameter names follow the original's `nn.Sequential` indices, e.g.
`decoder1_0` (conv) / `decoder1_1` (BN) / `decoder1_3` / `decoder1_4` and, in
the pooled branches, `decoder2_1` / `decoder2_2` / `decoder2_4` / `decoder2_5`
(index 0 is the max-pool). All branch upsampling is bilinear with
align_corners=True, as in the original.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cmp_jax.models import layers

ALLOWED_COMBO = (1, 2, 4, 8)


def _check_feature_size(name: str, x, largest_pool: int):
  h, w = x.shape[1:3]
  if h < largest_pool or w < largest_pool:
    raise ValueError(f"{name}: encoder features of {h}x{w} are too small for its max-pool by {largest_pool} "
                     f"(needs at least {largest_pool}x{largest_pool}); use a larger input")


def _branch(parent, x, c: int, n_convs: int, train: bool):
  """decoder{c}: [MaxPool(c) if c > 1] then `n_convs` x (conv3x3 128 + BN + ReLU)."""
  name = f"decoder{c}"
  idx = 0
  if c > 1:
    x = layers.max_pool(x, c, c)
    idx = 1
  for _ in range(n_convs):
    x = layers.conv_bn_relu(parent, x, name, idx, 128, 3, train, padding=1)
    idx += 3
  return x


class MotionDecoderPlain(nn.Module):
  """Multi-scale pooling decoder used by all representation-learning configs.

  For each c in `combo` (a subset of 1, 2, 4, 8; concatenated in that order,
  whatever order `combo` lists them): max-pool by c (floor), two conv3x3+BN+ReLU
  with 128 channels, upsample back to the input size. `head` (1x1 conv, bias)
  maps the 128 * len(combo) channels to `output_dim` logits at the input
  resolution. 1,460,934 parameters for 272 -> 198 with combo (1, 2, 4).
  """
  output_dim: int = 198
  combo: Sequence[int] = (1, 2, 4)
  dtype: Any = jnp.float32
  bn_groups: int = 1

  @property
  def largest_pool(self) -> int:
    return max(self.combo)

  @nn.compact
  def __call__(self, x, skip_feat=None, train: bool = False):
    bad = [c for c in self.combo if c not in ALLOWED_COMBO]
    if bad or not self.combo:
      raise ValueError(f"MotionDecoderPlain: invalid combo {tuple(self.combo)}; use a non-empty subset of "
                       f"{ALLOWED_COMBO}")
    _check_feature_size("MotionDecoderPlain", x, max(self.combo))
    size = x.shape[1:3]
    outs = []
    for c in ALLOWED_COMBO:
      if c in self.combo:
        outs.append(layers.resize_bilinear_align_corners(_branch(self, x, c, 2, train), size))
    return layers.Conv(self.output_dim, 1, dtype=self.dtype, name="head")(jnp.concatenate(outs, axis=-1))


class MotionDecoderSkipLayer(nn.Module):
  """Decoder with skip connections from the ResNet stem and layer1 (semi-auto / demo model).

  Always builds the four branches 1, 2, 4, 8 with three conv3x3+BN+ReLU each
  (the original ignores `combo`), fuses them (`fusion8`, 512 -> 256 at 1/8),
  then upsamples and fuses with the layer1 features (`skipconv4`, `fusion4`,
  1/4) and the stem features (`skipconv2`, `fusion2`, 1/2). `head` (1x1 conv)
  gives `output_dim` logits at 1/2 of the input resolution. 4,479,846
  parameters for 272 -> 198.

  `skip_feat` is the ResNet's `(img, conv1, layer1)`; the image is unused.
  """
  output_dim: int = 198
  combo: Sequence[int] = (1, 2, 4, 8)  # ignored, as in the original
  dtype: Any = jnp.float32
  bn_groups: int = 1
  largest_pool = 8

  @nn.compact
  def __call__(self, x, skip_feat, train: bool = False):
    _, feat2, feat4 = skip_feat  # original names: layer1, layer2, layer4 = img, conv1, layer1
    _check_feature_size("MotionDecoderSkipLayer", x, 8)
    x1 = _branch(self, x, 1, 3, train)
    size8 = x1.shape[1:3]
    cat = [x1] + [layers.resize_bilinear_align_corners(_branch(self, x, c, 3, train), size8) for c in (2, 4, 8)]
    f8 = layers.conv_bn_relu(self, jnp.concatenate(cat, axis=-1), "fusion8", 0, 256, 3, train, padding=1)

    f8_up = layers.resize_bilinear_align_corners(f8, feat4.shape[1:3])
    s4 = layers.conv_bn_relu(self, feat4, "skipconv4", 0, 128, 3, train, padding=1)
    f4 = layers.conv_bn_relu(self, jnp.concatenate([f8_up, s4], axis=-1), "fusion4", 0, 128, 3, train,
                             padding=1)

    f4_up = layers.resize_bilinear_align_corners(f4, feat2.shape[1:3])
    s2 = layers.conv_bn_relu(self, feat2, "skipconv2", 0, 32, 3, train, padding=1)
    f2 = layers.conv_bn_relu(self, jnp.concatenate([f4_up, s2], axis=-1), "fusion2", 0, 64, 3, train,
                             padding=1)
    return layers.Conv(self.output_dim, 1, dtype=self.dtype, name="head")(f2)
