"""The config schema shared by every experiment, and its validation.

`base()` is the original's first experiment, AlexNet-BN CMP on YFCC with the PASCAL VOC hyperparameters
(`configs/alexnet_yfcc_voc_16gpu_70k.py`, reference §5); every file in `configs/` calls it and then sets only
what its experiment changes. Keys keep the original YAML names where one exists, so a researcher reading
the original `config.yaml` finds the same words here.

`validate(config)` checks a config before anything is compiled or loaded and raises `ConfigError` naming
the key and what is wrong with it. The allowed names come from the registries they select from
(`cmp_jax.models`, `cmp_jax.sampling`), so a model added there is allowed here.
"""

import importlib.util
import os
import re

import ml_collections


class ConfigError(ValueError):
  """A config key is unknown or holds a value the code cannot use."""


def base():
  """The original's alexnet_yfcc_voc_16gpu_70k experiment (reference §5): the defaults of every config."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.image_encoder = "alexnet_fcn_32x"
  c.model.sparse_encoder = "shallownet32x"
  c.model.flow_decoder = "MotionDecoderPlain"  # MotionDecoderSkipLayer also feeds it the encoder's skip features
  c.model.img_enc_dim = 256
  c.model.sparse_enc_dim = 16
  c.model.output_dim = 198
  c.model.decoder_combo = (1, 2, 4)
  c.model.nbins = 99
  c.model.fmax = 50.0
  # Compute dtype; 'bfloat16' runs convolutions in bf16 with float32 params.
  c.model.dtype = "float32"
  # 'per_device': BatchNorm statistics over each device's batch, as the
  # original (no SyncBN). 'global': over the whole global batch.
  c.model.bn_stats = "per_device"
  # Not in the original: True trains with every BatchNorm in eval mode (its running statistics, kept
  # as they are, e.g. from an earlier stage), so the output does not depend on the batch's statistics.
  c.model.freeze_bn = False
  # Not in the original: True recomputes each ResNet block's inside in the backward instead of keeping it
  # (less memory, 3-18 % more time on the benchmark's CPU; the same values). ResNet encoders only.
  c.model.remat = False

  c.data = ml_collections.ConfigDict()
  # Paths in list files are relative to data_root (the YFCC layout).
  c.data.data_root = "data/yfcc"
  c.data.train_source = ("data/yfcc/lists/train.txt",)  # original-format list files, lines concatenated
  c.data.val_source = ("data/yfcc/lists/val.txt",)
  c.data.train_records = ""       # glob of sharded record files; used instead of train_source when set
  c.data.val_records = ""
  c.data.flow_file_type = "jpg"   # 'jpg' (flowx/flowy 8-bit) or 'flo'
  c.data.short_size = 416
  c.data.crop_size = (384, 384)   # (h, w)
  c.data.image_mean = (123.675, 116.28, 103.53)
  c.data.image_std = (58.395, 57.12, 57.375)
  c.data.sample_strategy = ("grid", "watershed")
  c.data.sample_bg_ratio = 1.5625e-4
  c.data.nms_ks = 41
  c.data.max_num_guide = 150      # -1: no limit
  c.data.aug_flip = False
  c.data.aug_reverse = False
  c.data.aug_scale = False
  c.data.aug_rotate = False
  # False: a missing/corrupt sample stops the run naming the file.
  # True: such samples are skipped, counted and reported.
  c.data.skip_bad_samples = False
  c.data.num_threads = 2          # tf.data private thread pool
  c.data.prefetch = 2

  c.batch_size = 12               # PER DEVICE, as in the original
  # > 0: the GLOBAL batch instead; train.py sets batch_size = global_batch_size / devices and stops if
  # that does not divide (e.g. a 16-GPU config on 8 devices at the same global batch: 192).
  c.global_batch_size = -1
  c.val_batch_size = 1            # per device
  c.total_iter = 70000

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.lr = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.lr_steps = (40000, 60000)
  c.optimizer.lr_mults = (0.1, 0.1)
  c.optimizer.warmup_lr = ()      # piecewise-linear warm-up targets (empty: none)
  c.optimizer.warmup_steps = ()

  # Not in the original: a checkpoint (run folder, its checkpoints/ or a packed model) whose weights and
  # BatchNorm statistics start a new run (step 0, fresh optimiser), e.g. the previous stage of a curriculum.
  # A run that resumes from its own checkpoints ignores it.
  c.init_from = ""

  c.print_freq = 100
  c.val_freq = 10000
  c.val_iter = -1                 # -1: the whole val list
  c.initial_val = True
  c.save_freq = 10000
  c.keep_checkpoints = 3
  c.vis_num = 16                  # validation samples drawn as images
  # Validate a second time with guidance at the paper's density (`paper_density`): ~13.5 points per 384x384
  # crop, the regime CMP is for; reported as val_sparse/* beside val/* (the config's own sampler).
  c.sparse_val = True
  c.tensorboard = True
  return c


# The paper's guidance density: grid + watershed with a grid stride of 200 px and an NMS kernel of 81 at a
# 384x384 crop (sample_bg_ratio 2.5e-5; the alexnet_yfcc_youtube config), about 13.5 points per image.
PAPER_GRID_STRIDE, PAPER_NMS_KS, PAPER_CROP = 200, 81, 384


def paper_density(crop_size):
  """(sample_bg_ratio, nms_ks) giving the paper's guidance points per image area at `crop_size` (h, w): the
  grid stride and the NMS kernel scale with the crop's side (the geometric mean of h and w)."""
  side = (float(crop_size[0]) * float(crop_size[1])) ** 0.5
  stride = max(1, round(PAPER_GRID_STRIDE * side / PAPER_CROP))
  nms_ks = max(1, 2 * round((PAPER_NMS_KS * side / PAPER_CROP - 1) / 2) + 1)  # nearest odd
  return 1.0 / (stride + 0.5) ** 2, nms_ks  # int(sqrt(1 / ratio)) == stride, as the sampler reads it


def with_paper_density(config):
  """A copy of `config` whose sampler draws guidance at the paper's density (see `paper_density`)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.data.sample_strategy = ("grid", "watershed")
    c.data.sample_bg_ratio, c.data.nms_ks = paper_density(c.data.crop_size)
    c.data.max_num_guide = -1
  return c


def variant(c, arg, config_file):
  """A config file's `get_config(arg)` variants: None (the config itself) or 'smoke' (20 steps, validation
  at the end only, at most 10 val batches: does it all run?)."""
  if arg == "smoke":
    c.total_iter = 20
    c.optimizer.lr_steps = (15, 18)
    c.optimizer.warmup_lr, c.optimizer.warmup_steps = (), ()
    c.print_freq = 5
    c.val_freq = c.save_freq = 20
    c.val_iter = 10
    c.initial_val = False
  elif arg is not None:
    raise ValueError(f"{config_file}: unknown variant {arg!r} (known: smoke)")
  return c


def model_config(image_encoder="alexnet_fcn_32x", sparse_encoder=None, flow_decoder="MotionDecoderPlain", **kw):
  """base()'s `model` section with another architecture: the sparse encoder defaults to the one whose
  stride matches the image encoder's (ShallowNet-32x for AlexNet-32x, else ShallowNet-8x); `kw` sets any
  other model key."""
  m = base().model
  m.image_encoder, m.flow_decoder = image_encoder, flow_decoder
  m.sparse_encoder = sparse_encoder or ("shallownet32x" if image_encoder == "alexnet_fcn_32x" else "shallownet8x")
  for k, v in kw.items():
    m[k] = v
  return m


def _fail(key, msg):
  raise ConfigError(f"config.{key}: {msg}")


def validate(c, check_paths=True):
  """Raises ConfigError naming the first bad key. Cheap: no compile, no I/O but stat."""
  from cmp_jax import models, sampling  # the registries (imports jax, touches no device)
  m, d = c.model, c.data
  for key, table in (("image_encoder", models.IMAGE_ENCODERS), ("sparse_encoder", models.SPARSE_ENCODERS),
                     ("flow_decoder", models.DECODERS)):
    if m[key] not in table:
      _fail(f"model.{key}", f"{m[key]!r} is not one of {tuple(table)}")
  if m.flow_decoder == "MotionDecoderSkipLayer" and not m.image_encoder.startswith("resnet"):
    _fail("model.flow_decoder", "MotionDecoderSkipLayer needs a ResNet image encoder (AlexNet has no skip features)")
  img_stride = models.IMAGE_ENCODERS[m.image_encoder](int(m.img_enc_dim)).output_stride
  sparse_stride = models.SPARSE_ENCODERS[m.sparse_encoder](int(m.sparse_enc_dim)).output_stride
  if sparse_stride != img_stride:
    _fail("model.sparse_encoder", f"{m.sparse_encoder} downsamples by {sparse_stride} but "
          f"{m.image_encoder} by {img_stride}; their feature maps must match")
  if not m.decoder_combo or any(k not in (1, 2, 4, 8) for k in m.decoder_combo):
    _fail("model.decoder_combo", f"{tuple(m.decoder_combo)} must be a non-empty subset of (1, 2, 4, 8)")
  if m.output_dim != 2 * m.nbins or m.nbins % 2 == 0:
    _fail("model.output_dim", f"must be 2 * nbins with nbins odd (got output_dim={m.output_dim}, nbins={m.nbins})")
  if m.dtype not in ("float32", "bfloat16"):  # models.DTYPES also has float64, for parity tests only
    _fail("model.dtype", f"{m.dtype!r} is not 'float32' or 'bfloat16'")
  if m.bn_stats not in ("per_device", "global"):
    _fail("model.bn_stats", f"{m.bn_stats!r} is not 'per_device' or 'global'")
  if m.freeze_bn and m.image_encoder.startswith("alexnet"):
    _fail("model.freeze_bn", "is not offered for AlexNet (eval mode would also switch off its dropout)")
  if m.remat and not m.image_encoder.startswith("resnet"):
    _fail("model.remat", f"is offered for the ResNet encoders only, not {m.image_encoder}")

  rule = 32 if img_stride == 32 else 8
  if len(d.crop_size) != 2 or any(s <= 0 or s % rule for s in d.crop_size):
    _fail("data.crop_size", f"{tuple(d.crop_size)}: {m.image_encoder} needs both sides to be positive "
          f"multiples of {rule}")
  if d.flow_file_type not in ("jpg", "flo"):
    _fail("data.flow_file_type", f"{d.flow_file_type!r} is not 'jpg' or 'flo'")
  strategies = tuple(s for s in sampling.STRATEGIES if s != "specified")  # 'specified' takes points, not flow
  bad = [s for s in d.sample_strategy if s not in strategies]
  if bad or not d.sample_strategy:
    _fail("data.sample_strategy", f"{tuple(d.sample_strategy)}: each must be one of {strategies}")
  if d.nms_ks < 1 or d.nms_ks % 2 == 0:
    _fail("data.nms_ks", f"{d.nms_ks} must be a positive odd integer")
  if not 0 < d.sample_bg_ratio <= 1:
    _fail("data.sample_bg_ratio", f"{d.sample_bg_ratio} must be in (0, 1]")
  if d.max_num_guide == 0 or d.max_num_guide < -1:
    _fail("data.max_num_guide", f"{d.max_num_guide} must be -1 (no limit) or positive")
  if d.short_size <= 0:
    _fail("data.short_size", f"{d.short_size} must be positive")

  for key in ("batch_size", "val_batch_size", "total_iter", "print_freq", "val_freq", "save_freq",
              "keep_checkpoints"):
    if int(c[key]) <= 0:
      _fail(key, f"{c[key]} must be a positive integer")
  if int(c.global_batch_size) == 0 or int(c.global_batch_size) < -1:
    _fail("global_batch_size", f"{c.global_batch_size} must be -1 (use batch_size per device) or positive")
  o = c.optimizer
  if len(o.lr_mults) != len(o.lr_steps):
    _fail("optimizer.lr_mults", f"has {len(o.lr_mults)} entries but lr_steps has {len(o.lr_steps)}")
  if list(o.lr_steps) != sorted(o.lr_steps):
    _fail("optimizer.lr_steps", f"{tuple(o.lr_steps)} must be increasing")
  if len(o.warmup_lr) != len(o.warmup_steps):
    _fail("optimizer.warmup_lr", f"has {len(o.warmup_lr)} entries but warmup_steps has {len(o.warmup_steps)}")

  if check_paths:
    for split in ("train", "val"):
      records = d[f"{split}_records"]
      if records:
        continue
      sources = d[f"{split}_source"]
      if not sources:
        _fail(f"data.{split}_source", f"is empty and data.{split}_records is not set: no {split} data")
      for path in sources:
        if not os.path.isfile(path):
          _fail(f"data.{split}_source", f"list file {path!r} does not exist")
    if d.data_root and not os.path.isdir(d.data_root):
      _fail("data.data_root", f"{d.data_root!r} is not a directory")
  return c


def load_config(path):
  """Imports an ml_collections config file and returns `get_config()` (`path:arg` passes `arg`)."""
  arg = None
  if ":" in path and not os.path.exists(path):
    path, arg = path.rsplit(":", 1)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path!r} does not exist")
  name = "_cmp_config_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path!r} has no get_config()")
  return module.get_config() if arg is None else module.get_config(arg)
