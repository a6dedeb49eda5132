"""Weight conversion between cmp-jax checkpoints and the original CMP's PyTorch layout.

Both directions use the original repository's state-dict keys (reference §4.5, §6):

  from-torch  an original checkpoint (`ckpt_iter_N.pth.tar`: {'step', 'state_dict' with `module.` keys,
              'optimizer'}), or a bare state dict, with or without `module.` and `num_batches_tracked`
              (the released demo checkpoint has none) -> an orbax checkpoint `DIR/checkpoints/<step>/`
              that train.py / eval.py / the demos load.
  to-torch    a cmp-jax checkpoint -> `--part image_encoder`: the image encoder's bare state dict, keys
              without prefix, with `num_batches_tracked`, exactly what the original
              `tools/weight_process.py` writes for downstream tasks; `--part full`:
              {'step': int, 'state_dict': {'module.' + key: tensor}} like the original's checkpoints
              (without the 'optimizer' entry: SGD momentum buffers are not exported).
  pack        a cmp-jax checkpoint -> `DIR/weights.msgpack` (one file: the model variables in bfloat16 and
              the step) and `DIR/config.json`, the form in which a model ships (`checkpoint.pack`); prints
              its size and sha256. Every tool loads DIR as a checkpoint.

    python -m cmp_jax.convert from-torch ckpt_iter_42000.pth.tar --config configs/resnet50_vip_mpii_liteflow.py --out runs/demo
    python -m cmp_jax.convert to-torch --config configs/quickstart.py --checkpoint runs/quickstart --out encoder.pth
    python -m cmp_jax.convert pack --config configs/quickstart.py --checkpoint runs/quickstart --out packed/

Exported files load into `cmp_jax.torch_models` (no original repo needed) with a strict load_state_dict.

Mapping (Flax <-> PyTorch): a Flax module name `name_i` is the PyTorch Sequential child `name.i`
(`layer3_5` <-> `layer3.5`, `conv1_0` <-> `conv1.0`); leaves: conv `kernel` (HWIO) <-> `weight` (OIHW),
`bias` <-> `bias`, BN `scale` <-> `weight`, `bias` <-> `bias`, batch_stats `mean` <-> `running_mean`,
`var` <-> `running_var`. `num_batches_tracked` has no Flax counterpart: it is ignored on import and written as
the checkpoint's step on export (the original increments it once per training iteration).

Every conversion checks keys and shapes against the model built from the config (`jax.eval_shape`, nothing
is allocated) and raises `ConversionError` listing missing, unexpected and mis-shaped keys.
"""

import collections
import os
import re
import sys

import numpy as np
from absl import flags

from cmp_jax import cli, config_lib, fileio

PARTS = ("full", "image_encoder")


class ConversionError(ValueError):
  """A state dict or checkpoint does not match the model the config describes."""


# --------------------------------------------------------------------------------------------------
# Config loading


def _model_cfg(cfg):
  """The `model` section of a whole config, or `cfg` itself if it is one."""
  if "model" in cfg and not isinstance(cfg["model"], str):
    return cfg["model"]
  return cfg


# --------------------------------------------------------------------------------------------------
# The key map, from the Flax model's variable shapes


def _torch_module_name(flax_name):
  # `layer3_5` -> `layer3.5`; `conv1_0` -> `conv1.0`; `image_encoder` stays.
  return re.sub(r"_(\d+)$", r".\1", flax_name)


def _torch_leaf(collection, leaf, ndim):
  if collection == "batch_stats":
    return {"mean": "running_mean", "var": "running_var"}[leaf]
  if leaf == "kernel":
    return "weight"
  if leaf == "scale":
    return "weight"
  if leaf == "bias":
    return "bias"
  raise ConversionError(f"no PyTorch name for Flax variable {collection}/{leaf} (ndim {ndim})")


def _flatten(tree, prefix=()):
  for k, v in tree.items():
    if isinstance(v, dict) or hasattr(v, "items"):
      yield from _flatten(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def variable_shapes(model_cfg):
  """The Flax variables' shapes for a config (or its model section): see `cmp_jax.models.variable_shapes`."""
  from cmp_jax import models
  return models.variable_shapes(_model_cfg(model_cfg))


class KeyMap:
  """torch key <-> (collection, Flax path), with the torch shape of each entry, for one model and part.

  `entries`: OrderedDict torch_key -> (collection, path, torch_shape), keys relative to the part (no
  `image_encoder.` for part='image_encoder'), in the original's state-dict order.
  `bn_modules`: torch module names that are BatchNorms (they also carry `num_batches_tracked`).
  """

  def __init__(self, model_cfg, part="full"):
    if part not in PARTS:
      raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    self.part = part
    entries = {}
    bn_modules = set()
    shapes = variable_shapes(model_cfg)
    for collection in ("params", "batch_stats"):
      for path, sds in _flatten(shapes[collection]):
        if part == "image_encoder":
          if path[0] != "image_encoder":
            continue
          path_in_part = path[1:]
        else:
          path_in_part = path
        module = ".".join(_torch_module_name(p) for p in path_in_part[:-1])
        key = module + "." + _torch_leaf(collection, path[-1], len(sds.shape))
        shape = tuple(sds.shape)
        if path[-1] == "kernel":
          shape = (shape[3], shape[2], shape[0], shape[1])  # HWIO -> OIHW
        if collection == "batch_stats" or path[-1] == "scale":
          bn_modules.add(module)
        entries[key] = (collection, path, shape)
    self.bn_modules = bn_modules
    self.entries = collections.OrderedDict((k, entries[k]) for k in _original_order(entries))

  def keys(self, with_num_batches_tracked=True):
    out = []
    for key in self.entries:
      out.append(key)
      module, leaf = key.rsplit(".", 1)
      if with_num_batches_tracked and leaf == "running_var" and module in self.bn_modules:
        out.append(module + ".num_batches_tracked")
    return out


_LEAF_ORDER = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3}
_CHILD_ORDER = {n: i for i, n in enumerate(
    ["image_encoder", "flow_encoder", "flow_decoder",
     "conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample",  # torchvision blocks and stem
     "layer1", "layer2", "layer3", "layer4", "conv4", "conv5", "fc6", "fc7", "conv8",
     "features", "decoder1", "decoder2", "decoder4", "decoder8", "fusion8", "skipconv4", "fusion4",
     "skipconv2", "fusion2", "head"])}


def _original_order(entries):
  """Sorts keys the way PyTorch's state_dict lists them for the original modules (registration order)."""
  def sort_key(key):
    parts = key.split(".")
    out = []
    for p in parts[:-1]:
      out.append((0, int(p), "") if p.isdigit() else (1, _CHILD_ORDER.get(p, 99), p))
    out.append((2, _LEAF_ORDER.get(parts[-1], 9), parts[-1]))
    return out
  return sorted(entries, key=sort_key)


# --------------------------------------------------------------------------------------------------
# Checking


def _to_numpy(value):
  if hasattr(value, "detach"):  # torch.Tensor
    value = value.detach().cpu()
    if value.dtype.is_floating_point:
      value = value.float()  # also makes bfloat16/float16 readable by numpy
    return value.numpy()
  return np.asarray(value)


def _fail_listing(what, missing, unexpected, misshaped, hint=""):
  from cmp_jax import checkpoint
  raise ConversionError(checkpoint.mismatch_report(what, missing, unexpected, misshaped, hint))


def strip_prefix(state_dict, prefix):
  """Drops `prefix` from keys when every key has it."""
  if state_dict and all(k.startswith(prefix) for k in state_dict):
    return collections.OrderedDict((k[len(prefix):], v) for k, v in state_dict.items())
  return state_dict


# --------------------------------------------------------------------------------------------------
# PyTorch -> Flax


def torch_state_dict_to_flax(state_dict, model_cfg, part="full"):
  """Converts an original-layout state dict to Flax variables {'params', 'batch_stats'} (numpy float32).

  `state_dict`: a mapping key -> torch.Tensor or numpy array, or a checkpoint dict holding it under
  'state_dict'. Keys may carry `module.` (DataParallel / the original checkpoints); `num_batches_tracked`
  entries are optional and ignored. With part='image_encoder' a bare image-encoder state dict (what
  tools/weight_process.py writes) or a full one (its `image_encoder.*` entries are used) is accepted, and
  only the 'image_encoder' subtrees are returned.

  Raises ConversionError listing missing, unexpected and mis-shaped keys.
  """
  if "state_dict" in state_dict and hasattr(state_dict["state_dict"], "items"):
    state_dict = state_dict["state_dict"]
  state_dict = strip_prefix(collections.OrderedDict(state_dict), "module.")
  if part == "image_encoder" and any(k.startswith("image_encoder.") for k in state_dict):
    state_dict = collections.OrderedDict((k[len("image_encoder."):], v) for k, v in state_dict.items()
                                         if k.startswith("image_encoder."))
  keymap = KeyMap(model_cfg, part)

  missing, misshaped = [], []
  variables = {"params": {}, "batch_stats": {}}
  for key, (collection, path, shape) in keymap.entries.items():
    if key not in state_dict:
      missing.append(key)
      continue
    value = _to_numpy(state_dict[key])
    if tuple(value.shape) != shape:
      misshaped.append((key, value.shape, shape))
      continue
    if path[-1] == "kernel":
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    node = variables[collection]
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = np.array(value, dtype=np.float32, order="C", copy=True)  # never alias torch memory
  allowed_nbt = {m + ".num_batches_tracked" for m in keymap.bn_modules}
  unexpected = [k for k in state_dict if k not in keymap.entries and k not in allowed_nbt]
  if missing or unexpected or misshaped:
    _fail_listing("the PyTorch state dict", missing, unexpected, misshaped,
                  _hint(_model_cfg(model_cfg), part))
  return variables


def _hint(model_cfg, part):
  try:
    desc = f"{model_cfg.image_encoder} + {model_cfg.sparse_encoder} + {model_cfg.flow_decoder}"
  except AttributeError:
    desc = "the config's model"
  return (f"(expected {desc}, part={part!r}; check that --config is the experiment the weights came from)")


def _import_torch():
  try:
    import torch
  except ImportError as e:
    raise ImportError("PyTorch is needed for weight conversion: pip install torch (see requirements.txt)") from e
  return torch


def load_torch_checkpoint(path):
  """Reads an original checkpoint or a bare state dict with torch.load on CPU; returns (state_dict, step)."""
  torch = _import_torch()
  if not os.path.isfile(path):
    raise FileNotFoundError(f"PyTorch checkpoint {path!r} does not exist")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:
    raise ConversionError(f"could not read {path!r} as a PyTorch checkpoint: {e}") from e
  if not hasattr(obj, "items"):
    raise ConversionError(f"{path!r} holds a {type(obj).__name__}, not a state dict or a checkpoint dict")
  step = 0
  if "state_dict" in obj and hasattr(obj["state_dict"], "items"):
    step = int(obj.get("step", 0) or 0)
    obj = obj["state_dict"]
  return obj, step


# --------------------------------------------------------------------------------------------------
# Flax -> PyTorch


def flax_to_torch_state_dict(variables, model_cfg, part="full", prefix="", num_batches_tracked=0):
  """Converts Flax variables to an original-layout state dict (OrderedDict of torch tensors).

  part='full': keys `image_encoder.*`, `flow_encoder.*`, `flow_decoder.*`; part='image_encoder': the
  image encoder's keys without that prefix (tools/weight_process.py's output). `prefix` is prepended to
  every key (the original checkpoints use 'module.'). Every BatchNorm gets `num_batches_tracked` (int64,
  value `num_batches_tracked`), so a strict `load_state_dict` into `cmp_jax.torch_models` passes.
  Extra variables in `variables` (for example a train state's optimizer) are ignored; missing or
  mis-shaped ones raise ConversionError.
  """
  torch = _import_torch()
  keymap = KeyMap(model_cfg, part)
  missing, misshaped = [], []
  out = collections.OrderedDict()
  for key in keymap.keys(with_num_batches_tracked=True):
    if key.endswith(".num_batches_tracked"):
      out[prefix + key] = torch.tensor(int(num_batches_tracked), dtype=torch.int64)
      continue
    collection, path, shape = keymap.entries[key]
    node = variables.get(collection, {})
    try:
      for p in path:
        node = node[p]
    except (KeyError, TypeError):
      missing.append("/".join((collection,) + tuple(path)) + f" ({key})")
      continue
    value = np.asarray(node, dtype=np.float32)
    if path[-1] == "kernel":
      value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    if tuple(value.shape) != shape:
      misshaped.append((key, value.shape, shape))
      continue
    out[prefix + key] = torch.from_numpy(np.ascontiguousarray(value))
  if missing or misshaped:
    _fail_listing("the Flax variables", missing, [], misshaped, _hint(_model_cfg(model_cfg), part))
  return out


def _atomic_torch_save(obj, path):
  torch = _import_torch()
  with fileio.atomic_path(path) as tmp:
    torch.save(obj, tmp)


# --------------------------------------------------------------------------------------------------
# Command line


def from_torch(ckpt, config, out, part="full"):
  """Converts a PyTorch checkpoint file; writes DIR/checkpoints/<step>/ and returns that path."""
  from cmp_jax import checkpoint
  state_dict, step = load_torch_checkpoint(ckpt)
  try:
    variables = torch_state_dict_to_flax(state_dict, config, part=part)
  except ConversionError as e:
    raise ConversionError(f"{ckpt}: {e}") from None
  path = checkpoint.save_variables(out, variables, step)
  checkpoint.write_run_config(out, config)
  return path


def to_torch(checkpoint_path, config, out, part="image_encoder"):
  """Exports a cmp-jax checkpoint as a PyTorch file (see the module docstring); returns (path, step)."""
  from cmp_jax import checkpoint
  try:
    variables, step = checkpoint.load_checked(checkpoint_path, config)
  except checkpoint.CheckpointError as e:
    raise ConversionError(str(e)) from None
  try:
    if part == "image_encoder":
      obj = flax_to_torch_state_dict(variables, config, part="image_encoder", num_batches_tracked=step)
    else:
      obj = {"step": int(step),
             "state_dict": flax_to_torch_state_dict(variables, config, part="full", prefix="module.",
                                                    num_batches_tracked=step)}
  except ConversionError as e:
    raise ConversionError(f"checkpoint {checkpoint_path} (step {step}): {e}") from None
  _atomic_torch_save(obj, out)
  return os.path.abspath(out), step


def pack(checkpoint_path, config, out):
  """Packs a cmp-jax checkpoint into OUT/weights.msgpack (bf16) and OUT/config.json; returns (path, step)."""
  from cmp_jax import checkpoint
  try:
    variables, step = checkpoint.load_checked(checkpoint_path, config)
  except checkpoint.CheckpointError as e:
    raise ConversionError(str(e)) from None
  return checkpoint.pack(out, variables, config, step), step


def define_flags(fv):
  flags.DEFINE_string("checkpoint", None, "to-torch, pack: a workdir, its checkpoints/ folder, or one step folder",
                      flag_values=fv)
  flags.DEFINE_string("out", None, "from-torch: output directory (OUT/checkpoints/<step>/ and OUT/config.json); "
                      "to-torch: output .pth file (written atomically)", flag_values=fv)
  flags.DEFINE_enum("part", None, PARTS, "full (from-torch default): the whole model; image_encoder (to-torch "
                    "default): the image encoder only, as the original's tools/weight_process.py writes it",
                    flag_values=fv)


USAGE = """usage:
  python -m cmp_jax.convert from-torch CKPT --config configs/X.py --out DIR [--part full|image_encoder]
  python -m cmp_jax.convert to-torch --config configs/X.py --checkpoint DIR --out FILE.pth [--part image_encoder|full]
  python -m cmp_jax.convert pack --config configs/X.py --checkpoint DIR --out DIR
"""


def main(argv):
  """The command line (see the module docstring); returns the exit code."""
  try:
    command = next((a for a in argv[1:] if not a.startswith("-")), None)
    if command not in ("from-torch", "to-torch", "pack"):
      raise cli.UsageError(f"the first argument must be from-torch, to-torch or pack (got {command!r}; see --help)")
    args, rest = cli.parse(argv, define_flags, __doc__ + "\n" + USAGE, required=("config", "out"),
                           positional=2 if command == "from-torch" else 1)
    config = config_lib.validate(args.config, check_paths=False)
    if command == "from-torch":
      path = from_torch(rest[1], config, args.out, part=args.part or "full")
      print(f"wrote cmp-jax checkpoint {path} (part={args.part or 'full'})")
    elif args.checkpoint is None:
      raise cli.UsageError(f"{command} needs --checkpoint (see --help)")
    elif command == "pack":
      from cmp_jax import checkpoint
      path, step = pack(args.checkpoint, config, args.out)
      print(f"wrote step {step} to {path}: {os.path.getsize(path) / 2**20:.1f} MiB, sha256 {checkpoint.sha256(path)}")
    else:
      path, step = to_torch(args.checkpoint, config, args.out, part=args.part or "image_encoder")
      print(f"wrote PyTorch {args.part or 'image_encoder'} weights of step {step} to {path}")
  except (cli.UsageError, ConversionError, ImportError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
