"""Features of the frozen image encoder from chosen layers, computed once per split and cached on disk.

Layers (names for `config.layers`):
  ResNet  `stem` (conv1+BN+ReLU, 1/2), `layer1` (1/4), `layer2`, `layer3`, `layer4` (1/8: dilated), `out`
          (the 1x1 `conv5`, what CMP's decoder reads; 1/8)
  AlexNet `conv1` .. `conv5`, `fc6`, `fc7` (after BN + ReLU), `out` (`conv8`)
Several layers are concatenated along channels: for segmentation each is resized (bilinear) to the finest
of their resolutions; for classification each is average-pooled over space first.

The encoder runs in eval mode (BatchNorm running statistics, no dropout) under `jax.lax.stop_gradient`.
Images are resized (PIL bicubic, aspect ratio not kept) to image_size x image_size, so small images are
upscaled, then normalised with the encoder's training mean/std. Masks are resized to label_size x
label_size with nearest neighbour. Features are stored as float32: at the original's initialisation
(Xavier gain 0.02) a random encoder's deep features are ~1e-9, below float16's range.

The cache file name holds a hash of everything the features depend on (the encoder's variables, the
layers, the sizes, normalisation and the split's files with their sizes and mtimes), so a changed input
never reuses stale features. Cache files are written atomically (temporary file, then os.replace).
"""

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from cmp_jax import fileio, models
from cmp_jax.data import transforms
from cmp_jax.evaluators.common import Progress
from cmp_jax.probe import datasets

RESNET_LAYERS = ("stem", "layer1", "layer2", "layer3", "layer4", "out")
ALEXNET_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "out")


class FeatureError(datasets.ProbeError):
  """A layer name or an image size the encoder cannot take."""


def build_encoder(model_cfg):
  """The image encoder alone, as `models.build_model` builds it inside CMP (same names and shapes)."""
  name = model_cfg.image_encoder
  if name not in models.IMAGE_ENCODERS:
    raise FeatureError(f"config.model.image_encoder {name!r}: not one of {tuple(models.IMAGE_ENCODERS)}")
  if model_cfg.dtype not in ("float32", "bfloat16"):
    raise FeatureError(f"config.model.dtype {model_cfg.dtype!r}: must be float32 or bfloat16")
  return models.IMAGE_ENCODERS[name](int(model_cfg.img_enc_dim), dtype=models.DTYPES[model_cfg.dtype])


def available_layers(encoder):
  return RESNET_LAYERS if isinstance(encoder, models.ResNet) else ALEXNET_LAYERS


def _capture(encoder, layer):
  """(submodule name whose __call__ output is the layer, whether a ReLU follows), or None for 'out'."""
  if layer == "out":
    return None
  if isinstance(encoder, models.ResNet):
    if layer == "stem":
      return "bn1", True
    i = int(layer[len("layer"):])
    return f"layer{i}_{encoder.stage_sizes[i - 1] - 1}", False
  return f"{layer}_1", True  # AlexNet: the BatchNorm of conv1..conv5 / fc6 / fc7, then ReLU


def check_layers(encoder, layers):
  layers = tuple(layers)
  names = available_layers(encoder)
  if not layers:
    raise FeatureError("config.layers: empty; name at least one layer, e.g. ('out',)")
  for layer in layers:
    if layer not in names:
      raise FeatureError(f"config.layers: {layer!r} is not a layer of {encoder.arch_name}; choose from {names}")
  return layers


def check_image_size(encoder, image_size):
  stride = encoder.output_stride
  if image_size <= 0 or image_size % stride:
    raise FeatureError(f"config.image_size: {image_size} px; {encoder.arch_name} needs a positive multiple of "
                       f"{stride}")


def expected_variables(encoder, image_size):
  """ShapeDtypeStructs of the encoder's {'params', 'batch_stats'}."""
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(lambda im: encoder.init(jax.random.key(0), im, train=False), x)


def random_variables(encoder, image_size, seed):
  """The encoder at the original's effective initialisation (`layers.init_from_shapes`), seeded."""
  shapes = expected_variables(encoder, image_size)
  from cmp_jax.models import layers as model_layers
  variables = jax.jit(lambda r: model_layers.init_from_shapes(shapes, r))(jax.random.key(int(seed)))
  return jax.tree.map(np.asarray, dict(variables))


def make_feature_fn(encoder, layers, pool):
  """jitted (variables, images [B,S,S,3]) -> [B,h,w,C] float32 (pool=False) or [B,C] (pool=True)."""
  taps = [_capture(encoder, layer) for layer in layers]

  def fn(variables, images):
    out, state = encoder.apply(variables, images, train=False, capture_intermediates=True,
                               mutable=["intermediates"])
    inter = state["intermediates"]
    feats = []
    for tap in taps:
      if tap is None:
        f = out
      else:
        f = inter[tap[0]]["__call__"][0]
        if tap[1]:
          f = jax.nn.relu(f)
      feats.append(jax.lax.stop_gradient(f.astype(jnp.float32)))
    if pool:
      return jnp.concatenate([f.mean(axis=(1, 2)) for f in feats], axis=-1)
    h = max(f.shape[1] for f in feats)
    w = max(f.shape[2] for f in feats)
    feats = [f if f.shape[1:3] == (h, w) else jax.image.resize(f, (f.shape[0], h, w, f.shape[3]), "bilinear")
             for f in feats]
    return jnp.concatenate(feats, axis=-1)

  return jax.jit(fn)


def prepare(image, target, image_size, label_size, mean, std, task):
  """Resized, normalised float32 image and the target (int, or a label_size^2 uint8 mask, nearest)."""
  im = Image.fromarray(image).resize((image_size, image_size), Image.BICUBIC)
  x = transforms.normalise(np.asarray(im.convert("RGB")), transforms.normalise_table(mean, std))
  if task == "classification":
    return x, int(target)
  mask = Image.fromarray(np.asarray(target, np.int32).astype(np.uint8) if np.max(target) < 256 else
                         np.asarray(target, np.int32))
  return x, np.asarray(mask.resize((label_size, label_size), Image.NEAREST)).astype(np.uint8)


def variables_fingerprint(variables):
  h = hashlib.sha1()
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(jax.tree_util.keystr(path).encode())
    h.update(str(a.dtype).encode() + str(a.shape).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def cache_key(variables_fp, split, settings):
  blob = json.dumps({"variables": variables_fp, "split": datasets.split_fingerprint(split), "settings": settings},
                    sort_keys=True, default=str)
  return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _atomic_savez(path, **arrays):
  with fileio.atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)


def extract(split, feature_fn, variables, *, task, image_size, label_size, mean, std, batch_size, what,
            cache_path=None, log=print):
  """(features float32 [N,h,w,C] or [N,C], targets uint8 [N,L,L] or int32 [N]) for every item of `split`.

  Reads `cache_path` when it exists; else computes them (progress with ETA on `log`) and writes it.
  """
  if cache_path and os.path.isfile(cache_path):
    with np.load(cache_path) as z:
      log(f"{what}: features from the cache {cache_path}")
      return z["x"], z["y"]
  n = len(split)
  progress = Progress(what, n, "images", log)
  xs, ys = None, np.zeros((n, label_size, label_size) if task == "segmentation" else (n,),
                          np.uint8 if task == "segmentation" else np.int32)
  variables = jax.device_put(variables)
  batch, idx = [], 0

  def flush(batch, idx):
    nonlocal xs
    images = np.stack([b[0] for b in batch])
    m = len(batch)
    if m < batch_size:  # constant shapes: one compilation
      images = np.concatenate([images, np.zeros((batch_size - m,) + images.shape[1:], images.dtype)])
    f = np.asarray(feature_fn(variables, images))[:m]
    if xs is None:
      xs = np.zeros((n,) + f.shape[1:], np.float32)
    xs[idx:idx + m] = f
    for j, b in enumerate(batch):
      ys[idx + j] = b[1]
    progress.update(m)
    return idx + m

  for image, target in split.iterate():
    batch.append(prepare(image, target, image_size, label_size, mean, std, task))
    if len(batch) == batch_size:
      idx = flush(batch, idx)
      batch = []
  if batch:
    idx = flush(batch, idx)
  if idx != n:
    raise datasets.DatasetError(f"{what}: the split gave {idx} items, expected {n}")
  if cache_path:
    _atomic_savez(cache_path, x=xs, y=ys)
  return xs, ys


def encoder_variables(variables, where="checkpoint"):
  """The image encoder's {'params', 'batch_stats'} from a CMP checkpoint's variables (full or encoder-only)."""
  params = variables.get("params", {})
  if "image_encoder" not in params:
    raise FeatureError(f"{where} holds no image encoder (no 'image_encoder' entry among its parameters "
                       f"{sorted(params)[:6]})")
  return {"params": params["image_encoder"], "batch_stats": variables.get("batch_stats", {}).get("image_encoder", {})}


def load_encoder_variables(path, config):
  """(image-encoder variables with the model's dtypes, step) of the checkpoint at `path` for config.model.

  `checkpoint.load_checked` refuses, as FeatureError, a checkpoint made with another architecture (its
  config.json) and one whose encoder variables are missing, left over or of another shape.
  """
  from cmp_jax import checkpoint as ckpt_lib
  try:
    variables, step = ckpt_lib.load_checked(path, config, part="image_encoder")
  except ckpt_lib.CheckpointError as e:
    raise FeatureError(f"{e} (config.model.image_encoder / img_enc_dim)") from None
  return encoder_variables(variables, f"checkpoint {path} (step {step})"), step
