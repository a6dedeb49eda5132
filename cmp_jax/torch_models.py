"""The original CMP networks in PyTorch, with the original's module names.

These definitions are written from the reference (§1) so that their
`state_dict()` keys and shapes are exactly those of the original repository's
checkpoints (`image_encoder.conv1.0.weight`, `flow_decoder.decoder2.1.weight`,
...). They serve two purposes:

* exported weights (`python -m cmp_jax.convert to-torch`) load into them with a
  strict `load_state_dict`, without the original repository;
* the parity tests run them beside the Flax modules with the same weights.

Layout is NCHW. Every bilinear resize uses `align_corners=True`, as the
original does. Nothing here initialises weights the way the original trainer
does (Xavier gain 0.02, §1.2); these modules are for loading weights, and keep
PyTorch's default init.

Torch is an optional dependency of cmp-jax (`pip install cmp-jax[torch]`); only
this module and `cmp_jax.convert`'s torch I/O import it.
"""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["AlexNetBN_FCN", "alexnet_fcn_32x", "alexnet_fcn_8x", "BasicBlock", "Bottleneck", "ResNet",
           "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "ShallowNet", "shallownet8x",
           "shallownet32x", "MotionDecoderPlain", "MotionDecoderSkipLayer", "CMP", "build_torch_model",
           "count_parameters"]


def _upsample(x, size):
  return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _conv_bn_relu(cin, cout, kernel, stride=1, padding=0, dilation=1):
  """Sequential(conv(bias), BN, ReLU): indices 0 and 1 carry the weights."""
  return nn.Sequential(
      nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=True),
      nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


# --------------------------------------------------------------------------------------------------
# Image encoder: AlexNet-BN FCN (reference §1.3)


class AlexNetBN_FCN(nn.Module):
  """AlexNet with BN after every conv, fc6/fc7 as 3x3/1x1 convs, and a 1x1 `conv8` head.

  `stride` = (conv1, pool1, pool2, pool5): (4, 2, 2, 2) gives output stride 32,
  (2, 2, 2, 1) output stride 8.
  """

  def __init__(self, output_dim=256, stride=(4, 2, 2, 2), dilation=(1, 1), padding=(1, 1)):
    super().__init__()
    self.conv1 = _conv_bn_relu(3, 96, 11, stride=stride[0], padding=5)
    self.pool1 = nn.MaxPool2d(3, stride=stride[1], padding=1)
    self.conv2 = _conv_bn_relu(96, 256, 5, padding=2)
    self.pool2 = nn.MaxPool2d(3, stride=stride[2], padding=1)
    self.conv3 = _conv_bn_relu(256, 384, 3, padding=1)
    self.conv4 = _conv_bn_relu(384, 384, 3, padding=padding[0], dilation=dilation[0])
    self.conv5 = _conv_bn_relu(384, 256, 3, padding=padding[1], dilation=dilation[1])
    self.pool5 = nn.MaxPool2d(3, stride=stride[3], padding=1)
    self.fc6 = _conv_bn_relu(256, 4096, 3, padding=1)
    self.drop6 = nn.Dropout(0.5)
    self.fc7 = _conv_bn_relu(4096, 4096, 1)
    self.drop7 = nn.Dropout(0.5)
    self.conv8 = nn.Conv2d(4096, output_dim, 1)

  def forward(self, x, ret_feat=False):
    if ret_feat:
      raise NotImplementedError("AlexNetBN_FCN has no skip features (the original raises too)")
    x = self.pool1(self.conv1(x))
    x = self.pool2(self.conv2(x))
    x = self.pool5(self.conv5(self.conv4(self.conv3(x))))
    x = self.drop6(self.fc6(x))
    x = self.drop7(self.fc7(x))
    return self.conv8(x)


def alexnet_fcn_32x(output_dim=256, pretrained=False):
  assert not pretrained, "no pretrained AlexNet-BN weights exist"
  return AlexNetBN_FCN(output_dim, stride=(4, 2, 2, 2))


def alexnet_fcn_8x(output_dim=256, pretrained=False):
  assert not pretrained, "no pretrained AlexNet-BN weights exist"
  return AlexNetBN_FCN(output_dim, stride=(2, 2, 2, 1))


# --------------------------------------------------------------------------------------------------
# Image encoder: dilated ResNet, output stride 8 (reference §1.4)


class BasicBlock(nn.Module):
  """torchvision BasicBlock; `dilation` applies to conv2 (as the original's edit does)."""
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


class Bottleneck(nn.Module):
  """torchvision v1.5 Bottleneck: the stride and the dilation sit on the 3x3 conv2."""
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + identity)


class ResNet(nn.Module):
  """ResNet with output stride 8 and a 1x1 `conv5` head (bias) to `output_dim` channels.

  As in the original: layer3 runs every block's 3x3 conv at dilation 2 and
  layer4 at dilation 4, first blocks included, with no stride in either (their
  downsample convs have stride 1). For BasicBlock (resnet18/34) the original
  left the first layer3/layer4 block's conv1 at stride 2 and so crashed; here
  that stride is removed too, and conv5 takes 512 channels.
  """

  def __init__(self, block, layers, output_dim=256):
    super().__init__()
    self.inplanes = 64
    self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
    self.layer1 = self._make_layer(block, 64, layers[0])
    self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
    self.layer3 = self._make_layer(block, 256, layers[2], dilation=2)
    self.layer4 = self._make_layer(block, 512, layers[3], dilation=4)
    self.conv5 = nn.Conv2d(512 * block.expansion, output_dim, 1, bias=True)

  def _make_layer(self, block, planes, blocks, stride=1, dilation=1):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
          nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, dilation, downsample)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, img, ret_feat=False):
    x = self.relu(self.bn1(self.conv1(img)))
    conv1 = x
    x = self.layer1(self.maxpool(x))
    layer1 = x
    x = self.layer4(self.layer3(self.layer2(x)))
    out = self.conv5(x)
    if ret_feat:
      return out, [img, conv1, layer1]
    return out


def _no_pretrained(pretrained):
  # The original loaded ImageNet weights here, then its init_weights wiped them (§1.2).
  assert not pretrained, "pretrained ImageNet weights are not supported (the original discarded them)"


def resnet18(output_dim=256, pretrained=False):
  _no_pretrained(pretrained)
  return ResNet(BasicBlock, [2, 2, 2, 2], output_dim)


def resnet34(output_dim=256, pretrained=False):
  _no_pretrained(pretrained)
  return ResNet(BasicBlock, [3, 4, 6, 3], output_dim)


def resnet50(output_dim=256, pretrained=False):
  _no_pretrained(pretrained)
  return ResNet(Bottleneck, [3, 4, 6, 3], output_dim)


def resnet101(output_dim=256, pretrained=False):
  _no_pretrained(pretrained)
  return ResNet(Bottleneck, [3, 4, 23, 3], output_dim)


def resnet152(output_dim=256, pretrained=False):
  _no_pretrained(pretrained)
  return ResNet(Bottleneck, [3, 8, 36, 3], output_dim)


# --------------------------------------------------------------------------------------------------
# Sparse motion encoder (reference §1.5)


class ShallowNet(nn.Module):
  """conv5x5/a + BN + ReLU, maxpool b, conv3x3 + BN + ReLU, avgpool c; one Sequential `features`."""

  def __init__(self, input_dim=4, output_dim=16, stride=(2, 2, 2)):
    super().__init__()
    self.features = nn.Sequential(
        nn.Conv2d(input_dim, 16, 5, stride=stride[0], padding=2), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.MaxPool2d(stride[1], stride[1]),
        nn.Conv2d(16, output_dim, 3, padding=1), nn.BatchNorm2d(output_dim), nn.ReLU(inplace=True),
        nn.AvgPool2d(stride[2], stride[2]))

  def forward(self, x):
    return self.features(x)


def shallownet8x(output_dim=16):
  return ShallowNet(output_dim=output_dim, stride=(2, 2, 2))


def shallownet32x(output_dim=16):
  return ShallowNet(output_dim=output_dim, stride=(2, 2, 8))


# --------------------------------------------------------------------------------------------------
# Decoders (reference §1.6, §1.7)


def _branch(input_dim, pool, nconv):
  """[MaxPool(pool) if pool > 1] then `nconv` conv3x3(128)+BN+ReLU."""
  mods = [nn.MaxPool2d(pool, pool)] if pool > 1 else []
  for i in range(nconv):
    mods += [nn.Conv2d(input_dim if i == 0 else 128, 128, 3, padding=1), nn.BatchNorm2d(128),
             nn.ReLU(inplace=True)]
  return nn.Sequential(*mods)


class MotionDecoderPlain(nn.Module):
  """Branches `decoder{c}` for c in combo (pool c, two convs), upsampled and concatenated, 1x1 `head`."""

  def __init__(self, input_dim=272, output_dim=198, combo=(1, 2, 4)):
    super().__init__()
    combo = tuple(combo)
    for c in combo:
      assert c in (1, 2, 4, 8), f"invalid combo: {combo}"
    self.combo = combo
    for c in (1, 2, 4, 8):  # registration order = the original's key order
      if c in combo:
        setattr(self, f"decoder{c}", _branch(input_dim, c, 2))
    self.head = nn.Conv2d(128 * len(combo), output_dim, 1)

  def forward(self, x):
    size = x.shape[2:]
    outs = []
    for c in (1, 2, 4, 8):
      if c in self.combo:
        y = getattr(self, f"decoder{c}")(x)
        outs.append(y if c == 1 else _upsample(y, size))
    return self.head(torch.cat(outs, dim=1))


class MotionDecoderSkipLayer(nn.Module):
  """Four 3-conv branches fused at 1/8, then fused with ResNet layer1 (1/4) and conv1 (1/2) skips.

  Ignores `combo`, as the original does. Output is at 1/2 input resolution.
  """

  def __init__(self, input_dim=272, output_dim=198, combo=(1, 2, 4, 8)):
    super().__init__()
    del combo
    self.decoder1 = _branch(input_dim, 1, 3)
    self.decoder2 = _branch(input_dim, 2, 3)
    self.decoder4 = _branch(input_dim, 4, 3)
    self.decoder8 = _branch(input_dim, 8, 3)
    self.fusion8 = _conv_bn_relu(512, 256, 3, padding=1)
    self.skipconv4 = _conv_bn_relu(256, 128, 3, padding=1)
    self.fusion4 = _conv_bn_relu(256 + 128, 128, 3, padding=1)
    self.skipconv2 = _conv_bn_relu(64, 32, 3, padding=1)
    self.fusion2 = _conv_bn_relu(128 + 32, 64, 3, padding=1)
    self.head = nn.Conv2d(64, output_dim, 1)

  def forward(self, x, skip_feat):
    _, conv1_feat, layer1_feat = skip_feat  # the original names these layer1, layer2, layer4
    x1 = self.decoder1(x)
    size = x1.shape[2:]
    x2 = _upsample(self.decoder2(x), size)
    x4 = _upsample(self.decoder4(x), size)
    x8 = _upsample(self.decoder8(x), size)
    f8 = self.fusion8(torch.cat([x1, x2, x4, x8], dim=1))
    f8_up = _upsample(f8, layer1_feat.shape[2:])
    f4 = self.fusion4(torch.cat([f8_up, self.skipconv4(layer1_feat)], dim=1))
    f4_up = _upsample(f4, conv1_feat.shape[2:])
    f2 = self.fusion2(torch.cat([f4_up, self.skipconv2(conv1_feat)], dim=1))
    return self.head(f2)


# --------------------------------------------------------------------------------------------------
# The full model (reference §1.1)

IMAGE_ENCODERS = {"alexnet_fcn_32x": alexnet_fcn_32x, "alexnet_fcn_8x": alexnet_fcn_8x,
                  "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50,
                  "resnet101": resnet101, "resnet152": resnet152}
SPARSE_ENCODERS = {"shallownet8x": shallownet8x, "shallownet32x": shallownet32x}
DECODERS = {"MotionDecoderPlain": MotionDecoderPlain, "MotionDecoderSkipLayer": MotionDecoderSkipLayer}


class CMP(nn.Module):
  """image_encoder(image) ++ flow_encoder(sparse) -> flow_decoder -> logits (B, output_dim, h, w).

  `image`: B x 3 x H x W, normalised; `sparse`: B x 4 x H x W = [u, v, mask, mask].
  """

  def __init__(self, image_encoder="alexnet_fcn_32x", sparse_encoder="shallownet32x",
               flow_decoder="MotionDecoderPlain", skip_layer=False, img_enc_dim=256, sparse_enc_dim=16,
               output_dim=198, decoder_combo=(1, 2, 4)):
    super().__init__()
    if skip_layer:
      assert flow_decoder == "MotionDecoderSkipLayer", "skip_layer=True needs MotionDecoderSkipLayer"
    self.skip_layer = skip_layer
    self.image_encoder = IMAGE_ENCODERS[image_encoder](img_enc_dim)
    self.flow_encoder = SPARSE_ENCODERS[sparse_encoder](sparse_enc_dim)
    self.flow_decoder = DECODERS[flow_decoder](input_dim=img_enc_dim + sparse_enc_dim, output_dim=output_dim,
                                               combo=tuple(decoder_combo))

  def forward(self, image, sparse):
    sparse_feat = self.flow_encoder(sparse)
    if self.skip_layer:
      img_feat, skip_feat = self.image_encoder(image, ret_feat=True)
      return self.flow_decoder(torch.cat([img_feat, sparse_feat], dim=1), skip_feat)
    img_feat = self.image_encoder(image)
    return self.flow_decoder(torch.cat([img_feat, sparse_feat], dim=1))


def build_torch_model(model_cfg):
  """A `CMP` from our config's `model` section (a whole config is accepted too)."""
  if "model" in model_cfg and not isinstance(model_cfg.get("model"), str):
    model_cfg = model_cfg["model"]
  return CMP(image_encoder=model_cfg["image_encoder"], sparse_encoder=model_cfg["sparse_encoder"],
             flow_decoder=model_cfg["flow_decoder"],
             skip_layer=model_cfg["flow_decoder"] == "MotionDecoderSkipLayer",
             img_enc_dim=int(model_cfg["img_enc_dim"]), sparse_enc_dim=int(model_cfg["sparse_enc_dim"]),
             output_dim=int(model_cfg["output_dim"]), decoder_combo=tuple(model_cfg["decoder_combo"]))


def count_parameters(module):
  """Weights, biases and BN gamma/beta (no running statistics), as in reference Appendix B."""
  return sum(p.numel() for p in module.parameters())
