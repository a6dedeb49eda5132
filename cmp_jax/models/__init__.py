"""CMP networks in Flax Linen (NHWC) and `build_model(config.model)`.

Image encoders: `alexnet_fcn_32x`, `alexnet_fcn_8x` (alexnet.py), `resnet18/34/50/101/152`
(resnet.py). Sparse encoders: `shallownet8x`, `shallownet32x` (shallownet.py).
Decoders: `MotionDecoderPlain`, `MotionDecoderSkipLayer` (decoders.py). The composition
is `CMP` (cmp.py); shared ops (align-corners resize, PyTorch BatchNorm, init) in layers.py.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cmp_jax.models.alexnet import AlexNetBNFCN, alexnet_fcn_32x, alexnet_fcn_8x
from cmp_jax.models.cmp import CMP
from cmp_jax.models.decoders import MotionDecoderPlain, MotionDecoderSkipLayer
from cmp_jax.models import layers
from cmp_jax.models.layers import BatchNorm, Conv, resize_bilinear_align_corners
from cmp_jax.models.resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152
from cmp_jax.models.shallownet import ShallowNet, shallownet8x, shallownet32x

IMAGE_ENCODERS = {
    "alexnet_fcn_32x": alexnet_fcn_32x,
    "alexnet_fcn_8x": alexnet_fcn_8x,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
}
SPARSE_ENCODERS = {"shallownet8x": shallownet8x, "shallownet32x": shallownet32x}
DECODERS = {"MotionDecoderPlain": MotionDecoderPlain, "MotionDecoderSkipLayer": MotionDecoderSkipLayer}
# 'float64' is for parity tests only (needs jax x64, e.g. `with jax.enable_x64(True)`); configs allow the other two.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}


def build_model(model_cfg, bn_groups: int = 1) -> CMP:
  """Builds the CMP network described by `config.model`.

  Reads image_encoder, sparse_encoder, flow_decoder, img_enc_dim,
  sparse_enc_dim, output_dim, decoder_combo, dtype ('float32' or
  'bfloat16': computation dtype; parameters and BatchNorm statistics stay
  float32) and remat (ResNet encoders: recompute each block in the
  backward). `bn_groups`: BatchNorm statistics per contiguous chunk of
  batch / bn_groups samples (the number of devices for the original's
  per-GPU BatchNorm, 1 for statistics over the whole batch); the running
  statistics follow chunk 0.
  """
  m = model_cfg
  for key, table in (("image_encoder", IMAGE_ENCODERS), ("sparse_encoder", SPARSE_ENCODERS),
                     ("flow_decoder", DECODERS), ("dtype", DTYPES)):
    if m[key] not in table:
      raise ValueError(f"model.{key}: {m[key]!r} is not one of {tuple(table)}")
  skip_layer = m.flow_decoder == "MotionDecoderSkipLayer"  # the skip-layer decoder reads the encoder's skips
  if skip_layer and not m.image_encoder.startswith("resnet"):
    raise ValueError("model.flow_decoder: MotionDecoderSkipLayer needs a ResNet image encoder "
                     "(AlexNet has no skip features)")
  kw = dict(dtype=DTYPES[m.dtype], bn_groups=int(bn_groups))
  remat = bool(m.get("remat", False))  # configs written before the option have no such key
  if remat and not m.image_encoder.startswith("resnet"):
    raise ValueError("model.remat: rematerialisation is offered for the ResNet encoders only")
  image_encoder = IMAGE_ENCODERS[m.image_encoder](int(m.img_enc_dim), **(dict(kw, remat=True) if remat else kw))
  flow_encoder = SPARSE_ENCODERS[m.sparse_encoder](int(m.sparse_enc_dim), **kw)
  if image_encoder.output_stride != flow_encoder.output_stride:
    raise ValueError(f"model.sparse_encoder: {m.sparse_encoder} downsamples by {flow_encoder.output_stride} "
                     f"but {m.image_encoder} by {image_encoder.output_stride}; their feature maps must match")
  flow_decoder = DECODERS[m.flow_decoder](int(m.output_dim), combo=tuple(int(c) for c in m.decoder_combo),
                                          **kw)
  return CMP(image_encoder, flow_encoder, flow_decoder, skip_layer=skip_layer)


def init_variables(model: CMP, rng: jax.Array, height: int, width: int, batch: int = 1, fast: bool = True):
  """Returns initial {'params', 'batch_stats'} for `model` at input size height x width.

  fast=True (default): one normal draw for all parameters (`layers.init_from_shapes`),
  which takes ~4 s for a ResNet-50 CMP on a busy 2-core CPU where `model.init`
  compiles one RNG op per parameter (~13-15 s). The distributions are the
  same (the original's effective init, reference §1.2); the values differ from
  `model.init(rng, ...)`. fast=False runs `model.init` under jit.
  """
  model.check_input((batch, height, width, 3), (batch, height, width, 4))
  init = functools.partial(model.init, train=False)
  image = jax.ShapeDtypeStruct((batch, height, width, 3), jnp.float32)
  sparse = jax.ShapeDtypeStruct((batch, height, width, 4), jnp.float32)
  if not fast:
    return jax.jit(init)(rng, jnp.zeros(image.shape, image.dtype), jnp.zeros(sparse.shape, sparse.dtype))
  shapes = jax.eval_shape(init, rng, image, sparse)
  return jax.jit(lambda r: layers.init_from_shapes(shapes, r))(rng)


# The config.model keys that decide which variables a model has and what its outputs mean: a checkpoint
# trained with other values of any of them does not belong to the model (see cmp_jax.checkpoint).
ARCH_KEYS = ("image_encoder", "sparse_encoder", "flow_decoder", "img_enc_dim", "sparse_enc_dim", "output_dim",
             "decoder_combo", "nbins", "fmax")


def variable_shapes(model_cfg) -> Any:
  """{'params': ..., 'batch_stats': ...} of ShapeDtypeStructs for `config.model` (float32; nothing allocated)."""
  desc = tuple((k, tuple(model_cfg[k]) if k == "decoder_combo" else model_cfg[k]) for k in ARCH_KEYS)
  return _variable_shapes(desc)


@functools.lru_cache(maxsize=16)
def _variable_shapes(desc):
  import ml_collections
  model = build_model(ml_collections.ConfigDict(dict(desc, dtype="float32")))
  side = model.input_multiple * model.flow_decoder.largest_pool
  image = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
  sparse = jax.ShapeDtypeStruct((1, side, side, 4), jnp.float32)
  shapes = jax.eval_shape(lambda i, s: model.init(jax.random.key(0), i, s, train=False), image, sparse)
  return {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}


def count_params(tree: Any) -> int:
  """Number of scalars in a pytree (works on arrays and ShapeDtypeStructs)."""
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))
