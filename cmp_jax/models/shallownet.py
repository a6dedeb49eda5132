"""Sparse motion encoder: ShallowNet (reference §1.5).

The original is one `nn.Sequential` named `features`:
0 conv 5x5/2 (pad 2, bias), 1 BN, 2 ReLU, 3 MaxPool(2), 4 conv 3x3 (pad 1, bias),
5 BN, 6 ReLU, 7 AvgPool(c). Here the parameter names are `features_0`,
`features_1`, `features_4`, `features_5`. 4,000 parameters.
"""

from typing import Any, Tuple

import flax.linen as nn
import jax.numpy as jnp

from cmp_jax.models import layers


class ShallowNet(nn.Module):
  """`ShallowNet(input_dim=4, output_dim=16, stride=(a, b, c))`: total downsampling a*b*c.

  Input: the sparse guidance [B, H, W, 4] = [u, v, mask, mask]. Output:
  [B, H/(a*b*c), W/(a*b*c), output_dim].
  """
  output_dim: int = 16
  strides: Tuple[int, int, int] = (2, 2, 2)
  dtype: Any = jnp.float32
  bn_groups: int = 1

  @property
  def output_stride(self) -> int:
    a, b, c = self.strides
    return a * b * c

  @property
  def arch_name(self) -> str:
    return f"shallownet{self.output_stride}x"

  @nn.compact
  def __call__(self, x, train: bool = False):
    layers.check_input_size(self.arch_name, x.shape[1], x.shape[2], self.output_stride)
    a, b, c = self.strides
    x = layers.conv_bn_relu(self, x, "features", 0, 16, 5, train, stride=a, padding=2)
    x = layers.max_pool(x, b, b)
    x = layers.conv_bn_relu(self, x, "features", 4, self.output_dim, 3, train, padding=1)
    return layers.avg_pool(x, c)


def shallownet8x(output_dim: int = 16, **kw) -> ShallowNet:
  """Strides (2, 2, 2): output stride 8, for ResNet and AlexNet-8x."""
  return ShallowNet(output_dim, strides=(2, 2, 2), **kw)


def shallownet32x(output_dim: int = 16, **kw) -> ShallowNet:
  """Strides (2, 2, 8): output stride 32, for AlexNet-32x."""
  return ShallowNet(output_dim, strides=(2, 2, 8), **kw)
