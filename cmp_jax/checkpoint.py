"""Checkpoints: orbax, one directory per step, committed atomically.

Layout. A run's workdir holds `checkpoints/<step>/` written by orbax's
CheckpointManager (it writes to a temporary name and renames on commit, so a
crash mid-save leaves no half-written step that `latest` could pick). Each step
holds one pytree, the train state: a dict with at least `params` and
`batch_stats` (Flax variable collections); training adds `opt` and `step` (which
is also the position of the data stream). `cmp_jax.convert from-torch` writes the same layout with the
model variables only, so every tool loads either kind.

`--checkpoint PATH` everywhere accepts a workdir, its `checkpoints/` folder, or
one step folder, or a packed model folder.

Packed models (`pack`, `python -m cmp_jax.convert pack`): a folder with one file `weights.msgpack` (the
model variables and the step, floats stored as bfloat16 by default; flax msgpack, read without executing
code) and the run's `config.json`. One file, so that a model kept in a repository or sent around has one sha256.

Atomicity (orbax-checkpoint 0.12.8, checked in its source): a save writes
`checkpoints/<step>.orbax-checkpoint-tmp/`, writes `commit_success.txt` into
it, then renames it to `checkpoints/<step>/` (one `rename`, atomic on a POSIX
file system). A process killed mid-save leaves only the
`*.orbax-checkpoint-tmp` folder: orbax's step listing ignores it, `_resolve`
here only takes all-digit names, and `train_manager` (orbax's
cleanup_tmp_directories) deletes such leftovers when a run restarts.
"""

import glob
import hashlib
import json
import os
import re
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization, traverse_util

from cmp_jax import fileio, models


class CheckpointError(ValueError):
  """A checkpoint path is missing or does not hold a CMP checkpoint."""


def manager(directory, keep=None, cleanup_tmp=False):
  """A CheckpointManager over `directory` (the `checkpoints/` folder), keeping the last `keep` steps.

  cleanup_tmp deletes the temporary folders of interrupted saves when the manager starts: only for the
  run that owns the folder, never for a reader (it could delete a save in progress).
  """
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=cleanup_tmp)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_handlers=ocp.StandardCheckpointHandler())


WEIGHTS_FILE = "weights.msgpack"


def _packed(path):
  """The packed weights file in folder `path`, or None."""
  f = os.path.join(os.path.abspath(path), WEIGHTS_FILE)
  return f if os.path.isfile(f) else None


def sha256(path):
  """Hex sha256 of a file's bytes."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def pack(directory, variables, config, step, dtype="bfloat16"):
  """Writes `directory/weights.msgpack` (variables with floats cast to `dtype`, and the step) and
  `directory/config.json`; returns the weights file's path."""
  def cast(v):
    v = np.asarray(v)
    return v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v

  tree = {"step": int(step), "params": jax.tree.map(cast, variables["params"]),
          "batch_stats": jax.tree.map(cast, variables.get("batch_stats", {}))}
  path = os.path.join(directory, WEIGHTS_FILE)
  fileio.atomic_write_bytes(path, serialization.msgpack_serialize(tree))
  write_run_config(directory, config)
  return os.path.abspath(path)


def _load_packed(path):
  try:
    with open(path, "rb") as f:
      tree = serialization.msgpack_restore(f.read())
    step = int(tree["step"])
    variables = {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}
  except Exception as e:  # msgpack raises several types for foreign or cut files
    raise CheckpointError(f"could not read packed weights {path!r}: {type(e).__name__}: {e}") from None
  return jax.tree.map(np.array, variables), step


def _resolve(path):
  """Returns (checkpoints_dir, step) for a workdir, a checkpoints dir or a step dir."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise CheckpointError(f"checkpoint {path!r} does not exist or is not a directory")
  base = os.path.basename(path)
  if base.isdigit() and os.path.isdir(path):
    return os.path.dirname(path), int(base)
  ckpt_dir = os.path.join(path, "checkpoints") if os.path.isdir(os.path.join(path, "checkpoints")) else path
  steps = sorted(int(s) for s in os.listdir(ckpt_dir)
                 if s.isdigit() and os.path.isdir(os.path.join(ckpt_dir, s)))
  if not steps:
    raise CheckpointError(f"{path!r} holds no checkpoint (expected <workdir>/checkpoints/<step>/ or a step folder)")
  return ckpt_dir, steps[-1]


def save_variables(directory, variables, step=0):
  """Writes model variables ({'params', 'batch_stats'}) as step `step` under `directory/checkpoints`."""
  state = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  mngr = manager(os.path.join(directory, "checkpoints"))
  mngr.save(step, args=ocp.args.StandardSave(jax.tree.map(np.asarray, state)), force=True)
  mngr.wait_until_finished()
  mngr.close()
  return os.path.join(os.path.abspath(directory), "checkpoints", str(step))


def mismatch_report(what, missing=(), unexpected=(), misshaped=(), hint="", limit=40):
  """The one message, on one line, for "these weights do not fit this model", as every loader reports it.

  `missing` / `unexpected`: variable names; `misshaped`: (name, shape found, shape the model needs). Each
  list names its first `limit` entries, then "... and N more".
  """
  misshaped = [f"{k}: {tuple(got)} -> {tuple(want)}" for k, got, want in misshaped]
  parts = []
  for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                       ("mis-shaped keys (key: found -> expected)", misshaped)):
    if items:
      items = list(items)
      more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
      parts.append(f"{len(items)} {title}: {', '.join(items[:limit])}{more}")
  return f"{what} does not match the model the config describes: {'; '.join(parts)}" + (f" {hint}" if hint else "")


def check_variables(expected, loaded, where="checkpoint"):
  """Raises CheckpointError (a `mismatch_report`) unless `loaded` has exactly the variables of `expected`.

  Both are {'params', 'batch_stats'} trees; `expected` of arrays or ShapeDtypeStructs (e.g. from
  `jax.eval_shape` of the model's init), `loaded` of arrays (e.g. from `load_variables`).
  """
  def flat(tree):
    return traverse_util.flatten_dict({c: tree.get(c, {}) for c in ("params", "batch_stats")}, sep="/")

  exp, got = flat(expected), flat(loaded)
  missing = sorted(set(exp) - set(got))
  unexpected = sorted(set(got) - set(exp))
  misshaped = [(k, np.shape(got[k]), exp[k].shape) for k in sorted(set(exp) & set(got))
               if tuple(np.shape(got[k])) != tuple(exp[k].shape)]
  if missing or unexpected or misshaped:
    raise CheckpointError(mismatch_report(
        where, missing, unexpected, misshaped,
        "(was it trained with another config? original PyTorch weights convert with "
        "python -m cmp_jax.convert from-torch)"))


def _host_target(metadata):
  """A restore target putting every array of a saved tree on this process's first device.

  Without a target orbax rebuilds the saved shardings, which name the devices of the run that wrote them
  (say 16 GPUs over two hosts); with this one any checkpoint loads on any machine.
  """
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def leaf(m):
    if hasattr(m, "shape") and hasattr(m, "dtype"):
      return jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding)
    return m

  return jax.tree.map(leaf, metadata)


def _restore_to_host(mngr, step):
  meta = mngr.item_metadata(step)  # needs the manager's item_handlers (else None)
  tree = getattr(meta, "tree", meta)
  return mngr.restore(step, args=ocp.args.StandardRestore(_host_target(tree)))


def load_variables(path):
  """Loads {'params', 'batch_stats'} (numpy) from a checkpoint path; returns (variables, step)."""
  packed = _packed(path)
  if packed:
    return _load_packed(packed)
  ckpt_dir, step = _resolve(path)
  mngr = manager(ckpt_dir)
  try:
    state = _restore_to_host(mngr, step)
  except Exception as e:  # orbax raises several types for foreign folders
    raise CheckpointError(f"could not read a checkpoint at {os.path.join(ckpt_dir, str(step))!r}: {e}") from e
  finally:
    mngr.close()
  if "params" not in state:
    raise CheckpointError(f"{os.path.join(ckpt_dir, str(step))!r} has no 'params' entry")
  variables = {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
  return jax.tree.map(np.array, variables), step  # writable host copies


def run_dir(path):
  """The folder whose `config.json` describes the checkpoint at `path` (a workdir, its checkpoints/ folder,
  one step folder, a `convert from-torch` output folder, or a packed model folder)."""
  if _packed(path):
    return os.path.abspath(path)
  ckpt_dir, _ = _resolve(path)
  return os.path.dirname(ckpt_dir) if os.path.basename(ckpt_dir) == "checkpoints" else ckpt_dir


def write_run_config(directory, config):
  """Writes the config a run's checkpoints were made with to `directory/config.json` (atomically)."""
  fileio.atomic_write_bytes(os.path.join(directory, "config.json"), config.to_json_best_effort(indent=2).encode())


def read_run_config(directory):
  """(path, dict) of `directory/config.json`, or (path, None) where there is none; CheckpointError when it
  cannot be read as a config."""
  path = os.path.join(directory, "config.json")
  if not os.path.isfile(path):
    return path, None
  try:
    with open(path) as f:
      saved = json.load(f)
    if not isinstance(saved, dict):
      raise ValueError("not a JSON object")
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path}: not a readable config ({e})") from None
  return path, saved


def check_model_config(directory, config, what=None):
  """Raises CheckpointError naming every architecture key (`models.ARCH_KEYS`) in which the config saved in
  `directory/config.json` differs from `config`. A folder without config.json (written by older versions)
  passes: its variables are still checked one by one when loaded."""
  path, saved = read_run_config(directory)
  if saved is None:
    return
  saved = saved.get("model", {})
  diffs = []
  for key in models.ARCH_KEYS:
    ours = list(config.model[key]) if key == "decoder_combo" else config.model[key]
    if key in saved and saved[key] != ours:
      diffs.append(f"model.{key} is {saved[key]!r} there but {ours!r} in this config")
  if diffs:
    raise CheckpointError(f"{what or directory} was made with another model: " + "; ".join(diffs) +
                          f" (its config: {path})")


def load_checked(path, config, part="full"):
  """Loads the model variables at `path` for `config`'s model; returns (variables, step).

  Refuses (CheckpointError) a checkpoint whose saved config names another architecture, and one with any
  variable missing, left over or of another shape. part='image_encoder' loads and checks only the image
  encoder's variables (of a full checkpoint, or of one written by `convert from-torch --part
  image_encoder`). Values are cast to the model's dtypes.
  """
  variables, step = load_variables(path)
  where = f"checkpoint {path!r} (step {step})"
  check_model_config(run_dir(path), config, where)
  expected = models.variable_shapes(config.model)
  if part == "image_encoder":
    def encoder(tree):
      return {c: {"image_encoder": tree[c]["image_encoder"]} for c in ("params", "batch_stats")
              if "image_encoder" in tree.get(c, {})}
    expected, variables = encoder(expected), encoder(variables)
  check_variables(expected, variables, where)
  return jax.tree.map(lambda v, e: np.asarray(v, e.dtype), variables, expected), step


# ---------------------------------------------------------------------------
# Train state (train.py): saved every save_freq steps, resumed from the latest
# ---------------------------------------------------------------------------

def train_manager(workdir, keep):
  """The CheckpointManager of a training run: `<workdir>/checkpoints`, the last `keep` steps kept.

  `save_state` waits for each save to be committed. Leftover temporary folders of a
  save that was killed are deleted when the manager starts.
  """
  return manager(os.path.join(workdir, "checkpoints"), keep, cleanup_tmp=True)


def save_state(mngr, step, state):
  """Saves the train state (jax arrays, possibly spread over several processes) as `step`, once.

  Waits until the step is committed, so that a save that fails (a full disk, a folder that cannot be
  written) stops the run at once with a CheckpointError, not at the next save or at exit.
  """
  if int(step) in mngr.all_steps():
    return False
  try:
    mngr.save(int(step), args=ocp.args.StandardSave(state), force=True)
    mngr.wait_until_finished()
  except Exception as e:  # orbax wraps the OSError of the writer thread in several types
    for tmp in glob.glob(os.path.join(str(mngr.directory), f"{int(step)}.orbax-checkpoint-tmp*")):
      shutil.rmtree(tmp, ignore_errors=True)
    reason = re.sub(r"\s*\[tensorstore_spec='.*?'\]", "", str(e))  # a page of JSON per array
    reason = reason if len(reason) <= 400 else reason[:400] + " ..."
    raise CheckpointError(f"could not save step {step} to {os.path.join(str(mngr.directory), str(step))!r} "
                          f"({type(e).__name__}: {reason}). Nothing of that step was committed; free space or "
                          "fix the folder, then rerun the same command to resume from the last checkpoint.") from e
  return True


def restore_state(mngr, step, abstract_state):
  """Restores step `step` onto the shapes, dtypes and shardings of `abstract_state` (ShapeDtypeStructs)."""
  try:
    return mngr.restore(int(step), args=ocp.args.StandardRestore(abstract_state))
  except Exception as e:  # orbax raises several types for foreign or mismatched folders
    raise CheckpointError(
        f"could not resume from {os.path.join(str(mngr.directory), str(step))!r}: {e}. It was written for "
        "another model or optimiser than this config describes: use a new --workdir, or delete its "
        "checkpoints/ to start over.") from e
