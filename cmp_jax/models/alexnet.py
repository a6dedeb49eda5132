"""Image encoder: AlexNet with BatchNorm as a fully convolutional net (reference §1.3).

Parameter names follow the original's `nn.Sequential` indices: `conv1_0` is
the conv of `conv1` (PyTorch `conv1.0`), `conv1_1` its BatchNorm (`conv1.1`),
and so on for conv2..conv5, fc6, fc7; `conv8` is the 1x1 output conv.
"""

from typing import Any, Tuple

import flax.linen as nn
import jax.numpy as jnp

from cmp_jax.models import layers


class AlexNetBNFCN(nn.Module):
  """`AlexNetBN_FCN(output_dim, stride)` of the original.

  Every conv has a bias and is followed by BatchNorm + ReLU, except `conv8`.
  conv1 is 11x11 with the original's non-standard padding 5; the max-pools are
  3x3 with padding 1 (-inf); fc6 is a 3x3 conv and fc7 a 1x1 conv, each followed
  by Dropout(0.5). Dropout is active only when `train=True` *and* a 'dropout'
  rng is supplied (`apply(..., rngs={'dropout': key})`).

  Attributes:
    output_dim: channels of `conv8` (256 in every config).
    strides: (conv1, pool1, pool2, pool5) strides: (4, 2, 2, 2) gives output
      stride 32 (`alexnet_fcn_32x`), (2, 2, 2, 1) output stride 8 (`alexnet_fcn_8x`).
    dtype: computation dtype (params stay float32).
    bn_groups: BatchNorm statistic groups (see `layers.BatchNorm`).
  """
  output_dim: int = 256
  strides: Tuple[int, int, int, int] = (4, 2, 2, 2)
  dtype: Any = jnp.float32
  bn_groups: int = 1

  @property
  def output_stride(self) -> int:
    s = 1
    for v in self.strides:
      s *= v
    return s

  @property
  def arch_name(self) -> str:
    return f"alexnet_fcn_{self.output_stride}x"

  @nn.compact
  def __call__(self, x, train: bool = False, ret_feat: bool = False):
    """x: [B, H, W, 3] normalised image -> [B, H/stride, W/stride, output_dim]."""
    if ret_feat:
      raise ValueError("AlexNetBNFCN has no skip features (ret_feat=True); the skip-layer decoder "
                       "needs a ResNet image encoder")
    layers.check_input_size(self.arch_name, x.shape[1], x.shape[2], self.output_stride)
    s1, s2, s3, s4 = self.strides
    deterministic = not (train and self.has_rng("dropout"))
    x = layers.conv_bn_relu(self, x, "conv1", 0, 96, 11, train, stride=s1, padding=5)
    x = layers.max_pool(x, 3, s2, 1)
    x = layers.conv_bn_relu(self, x, "conv2", 0, 256, 5, train, padding=2)
    x = layers.max_pool(x, 3, s3, 1)
    x = layers.conv_bn_relu(self, x, "conv3", 0, 384, 3, train, padding=1)
    x = layers.conv_bn_relu(self, x, "conv4", 0, 384, 3, train, padding=1)
    x = layers.conv_bn_relu(self, x, "conv5", 0, 256, 3, train, padding=1)
    x = layers.max_pool(x, 3, s4, 1)
    x = layers.conv_bn_relu(self, x, "fc6", 0, 4096, 3, train, padding=1)
    x = layers.half_dropout(self, x, deterministic)
    x = layers.conv_bn_relu(self, x, "fc7", 0, 4096, 1, train)
    x = layers.half_dropout(self, x, deterministic)
    return layers.Conv(self.output_dim, 1, dtype=self.dtype, name="conv8")(x)


def alexnet_fcn_32x(output_dim: int = 256, **kw) -> AlexNetBNFCN:
  """Output stride 32 (strides 4, 2, 2, 2); used by every AlexNet config. Input sides: multiples of 32."""
  return AlexNetBNFCN(output_dim, strides=(4, 2, 2, 2), **kw)


def alexnet_fcn_8x(output_dim: int = 256, **kw) -> AlexNetBNFCN:
  """Output stride 8 (strides 2, 2, 2, 1); unused by the configs. Input sides: multiples of 8."""
  return AlexNetBNFCN(output_dim, strides=(2, 2, 2, 1), **kw)
