"""Image encoder: ResNet dilated to output stride 8, with a 1x1 `conv5` head (reference §1.4).

Parameter names follow torchvision / the original: `conv1`, `bn1` (stem),
`layer{i}_{j}` for block j of layer i with `conv1..3`, `bn1..3` and
`downsample_0` (1x1 conv) / `downsample_1` (BN), and `conv5` (1x1, bias).

Dilation, as the original sets it after construction: *every* block of layer3
runs its 3x3 conv at dilation 2 (padding 2) and every block of layer4 at
dilation 4 (padding 4), first blocks included, with no stride in either layer
(their downsample convs have stride 1). This is not torchvision's
`replace_stride_with_dilation`, whose first dilated block keeps the previous
dilation.

Deviation for ResNet-18/34 (BasicBlock): the original crashes on them. Its
edit sets stride 1 on the downsample and on `conv2` but BasicBlock carries the
stride on `conv1`, so the residual add mismatches; and `conv5` expects 2048
input channels. Here the first layer3/layer4 BasicBlock's conv1 has stride 1
too, the dilation sits on conv2 (the conv the original edits), and conv5 takes
the real 512 channels. ResNet-50/101/152 are exactly the original.
With the skip-layer decoder, ResNet-18/34 hand it 64-channel layer1 features
(not 256), so its `skipconv4` has 64 input channels.
"""

from typing import Any, Sequence, Type

import flax.linen as nn
import jax.numpy as jnp

from cmp_jax.models import layers


class BasicBlock(nn.Module):
  """torchvision BasicBlock (3x3, 3x3); `stride` on conv1, `dilation` on conv2."""
  planes: int
  stride: int = 1
  dilation: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32
  bn_groups: int = 1
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = lambda name, relu=False: layers.BatchNorm(use_running_average=not train, groups=self.bn_groups,
                                                   dtype=self.dtype, relu=relu, name=name)
    identity = x
    out = layers.Conv(self.planes, 3, self.stride, 1, use_bias=False, dtype=self.dtype, name="conv1")(x)
    out = bn("bn1", relu=True)(out)
    out = layers.Conv(self.planes, 3, 1, self.dilation, self.dilation, use_bias=False, dtype=self.dtype,
                      name="conv2")(out)
    out = bn("bn2")(out)
    if self.downsample:
      identity = layers.Conv(self.planes * self.expansion, 1, self.stride, use_bias=False, dtype=self.dtype,
                             name="downsample_0")(x)
      identity = bn("downsample_1")(identity)
    return layers.relu(out + identity)


class Bottleneck(nn.Module):
  """torchvision v1.5 Bottleneck (1x1, 3x3, 1x1 x4): stride and dilation on the 3x3 conv2."""
  planes: int
  stride: int = 1
  dilation: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32
  bn_groups: int = 1
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = lambda name, relu=False: layers.BatchNorm(use_running_average=not train, groups=self.bn_groups,
                                                   dtype=self.dtype, relu=relu, name=name)
    identity = x
    out = layers.Conv(self.planes, 1, use_bias=False, dtype=self.dtype, name="conv1")(x)
    out = bn("bn1", relu=True)(out)
    out = layers.Conv(self.planes, 3, self.stride, self.dilation, self.dilation, use_bias=False,
                      dtype=self.dtype, name="conv2")(out)
    out = bn("bn2", relu=True)(out)
    out = layers.Conv(self.planes * self.expansion, 1, use_bias=False, dtype=self.dtype, name="conv3")(out)
    out = bn("bn3")(out)
    if self.downsample:
      identity = layers.Conv(self.planes * self.expansion, 1, self.stride, use_bias=False, dtype=self.dtype,
                             name="downsample_0")(x)
      identity = bn("downsample_1")(identity)
    return layers.relu(out + identity)


class ResNet(nn.Module):
  """Dilated ResNet (output stride 8) + `conv5` (1x1, bias, no BN) to `output_dim` channels.

  `__call__(x, train, ret_feat)` maps a normalised [B, H, W, 3] image to
  [B, H/8, W/8, output_dim]. With `ret_feat=True` it returns
  `(out, (img, conv1, layer1))`: the input image itself, the stem output after
  BN+ReLU and before the max-pool (64 channels, 1/2), and the layer1 output
  (64 * expansion channels, 1/4), as the original's skip features.
  `remat=True` keeps only each block's input for the backward and recomputes the
  rest of the block there: less memory, more time, the same values.
  """
  block: Type[nn.Module]
  stage_sizes: Sequence[int]
  output_dim: int = 256
  dtype: Any = jnp.float32
  bn_groups: int = 1
  remat: bool = False  # not in the original: recompute each block's inside in the backward (NOTES section 8)
  output_stride = 8

  @nn.compact
  def __call__(self, x, train: bool = False, ret_feat: bool = False):
    layers.check_input_size(self.arch_name, x.shape[1], x.shape[2], self.output_stride)
    img = x
    y = layers.Conv(64, 7, 2, 3, use_bias=False, dtype=self.dtype, name="conv1")(x)
    conv1 = layers.BatchNorm(use_running_average=not train, groups=self.bn_groups, dtype=self.dtype, relu=True,
                             name="bn1")(y)
    y = layers.max_pool(conv1, 3, 2, 1)

    inplanes = 64
    expansion = self.block.expansion
    # argument 2 of a block's __call__ (after self and x) is `train`, a Python bool
    block = nn.remat(self.block, static_argnums=(2,)) if self.remat else self.block
    feats = {}
    # (planes, stride, dilation) per layer: strides removed and dilation 2 / 4 in layer3 / layer4.
    for li, (planes, stride, dilation) in enumerate(((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4))):
      for bi in range(self.stage_sizes[li]):
        first = bi == 0
        y = block(planes, stride=stride if first else 1, dilation=dilation,
                  downsample=first and (stride != 1 or inplanes != planes * expansion),
                  dtype=self.dtype, bn_groups=self.bn_groups, name=f"layer{li + 1}_{bi}")(y, train)
        inplanes = planes * expansion
      feats[li + 1] = y
    out = layers.Conv(self.output_dim, 1, dtype=self.dtype, name="conv5")(y)
    if ret_feat:
      return out, (img, conv1, feats[1])
    return out

  @property
  def depth(self) -> int:
    per_block = 3 if self.block is Bottleneck else 2
    return per_block * sum(self.stage_sizes) + 2

  @property
  def arch_name(self) -> str:
    return f"resnet{self.depth}"


def resnet18(output_dim: int = 256, **kw) -> ResNet:
  """BasicBlock [2, 2, 2, 2]; made to work (the original crashes, see module docstring)."""
  return ResNet(BasicBlock, (2, 2, 2, 2), output_dim, **kw)


def resnet34(output_dim: int = 256, **kw) -> ResNet:
  """BasicBlock [3, 4, 6, 3]; made to work (the original crashes, see module docstring)."""
  return ResNet(BasicBlock, (3, 4, 6, 3), output_dim, **kw)


def resnet50(output_dim: int = 256, **kw) -> ResNet:
  """Bottleneck [3, 4, 6, 3]: 24,032,576 parameters with conv5(256)."""
  return ResNet(Bottleneck, (3, 4, 6, 3), output_dim, **kw)


def resnet101(output_dim: int = 256, **kw) -> ResNet:
  """Bottleneck [3, 4, 23, 3]."""
  return ResNet(Bottleneck, (3, 4, 23, 3), output_dim, **kw)


def resnet152(output_dim: int = 256, **kw) -> ResNet:
  """Bottleneck [3, 8, 36, 3]."""
  return ResNet(Bottleneck, (3, 8, 36, 3), output_dim, **kw)
