"""The CMP network: image encoder + sparse motion encoder + flow decoder (reference §1.1)."""

import flax.linen as nn
import jax.numpy as jnp

from cmp_jax.models import layers


class CMP(nn.Module):
  """Conditional Motion Propagation network.

  `__call__(image, sparse, train=False)`:
    image: [B, H, W, 3] normalised RGB (mean/std on the 0-255 scale).
    sparse: [B, H, W, 4] guidance [u, v, mask, mask] (flow in pixels at the
      input resolution at guidance pixels, 0 elsewhere; the mask duplicated).
    Returns logits [B, h, w, output_dim] at the decoder resolution (1/32 for
    AlexNet-32x + Plain, 1/8 for ResNet + Plain, 1/2 for the skip-layer
    decoder); channels [0, nbins) score the u bins, [nbins, 2 nbins) the v bins.
    Decode them with `cmp_jax.losses.predict_flow` or train with `discrete_loss`.

  H and W must be multiples of the encoders' output stride (32 for
  AlexNet-32x, 8 otherwise) and at least that stride times the decoder's
  largest max-pool (max(combo) for the Plain decoder, 8 for the skip-layer
  one; e.g. 128 for AlexNet-32x with combo (1, 2, 4), 64 for ResNet + skip
  layer); anything else raises a ValueError naming the size and the rule.
  The decoder input is concat([image features, sparse features]) in that order.

  Submodules (and top-level parameter collections): `image_encoder`,
  `flow_encoder` (the original's attribute name; it was `sparse_encoder`
  before), `flow_decoder`.
  """
  image_encoder: nn.Module
  flow_encoder: nn.Module
  flow_decoder: nn.Module
  skip_layer: bool = False

  @property
  def input_multiple(self) -> int:
    return max(self.image_encoder.output_stride, self.flow_encoder.output_stride)

  def check_input(self, image_shape, sparse_shape=None):
    """Raises ValueError if the [B, H, W, C] shapes cannot go through the network."""
    if len(image_shape) != 4 or image_shape[-1] != 3:
      raise ValueError(f"CMP: image must be [B, H, W, 3] (NHWC), got shape {tuple(image_shape)}")
    if sparse_shape is not None:
      if len(sparse_shape) != 4 or sparse_shape[-1] != 4:
        raise ValueError(f"CMP: sparse guidance must be [B, H, W, 4] = [u, v, mask, mask], got shape "
                         f"{tuple(sparse_shape)}")
      if tuple(sparse_shape[:3]) != tuple(image_shape[:3]):
        raise ValueError(f"CMP: image {tuple(image_shape)} and sparse guidance {tuple(sparse_shape)} must "
                         "have the same batch size, height and width")
    name = f"CMP({self.image_encoder.arch_name} + {type(self.flow_decoder).__name__})"
    layers.check_input_size(name, image_shape[1], image_shape[2], self.input_multiple)
    smallest = self.input_multiple * self.flow_decoder.largest_pool
    if min(image_shape[1:3]) < smallest:
      raise ValueError(f"{name}: input size {image_shape[1]}x{image_shape[2]} (HxW) is too small: the decoder "
                       f"max-pools the 1/{self.input_multiple} features by {self.flow_decoder.largest_pool}, so "
                       f"height and width must be at least {smallest}")

  @nn.compact
  def __call__(self, image, sparse, train: bool = False):
    self.check_input(image.shape, sparse.shape)
    sparse_feat = self.flow_encoder(sparse, train=train)
    if self.skip_layer:
      image_feat, skips = self.image_encoder(image, train=train, ret_feat=True)
      return self.flow_decoder(jnp.concatenate([image_feat, sparse_feat.astype(image_feat.dtype)], axis=-1),
                               skips, train=train)
    image_feat = self.image_encoder(image, train=train)
    return self.flow_decoder(jnp.concatenate([image_feat, sparse_feat.astype(image_feat.dtype)], axis=-1),
                             train=train)
