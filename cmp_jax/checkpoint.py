"""Checkpoints: orbax, one directory per step, committed atomically.

Layout. A run's workdir holds `checkpoints/<step>/` written by orbax's
CheckpointManager (it writes to a temporary name and renames on commit, so a
crash mid-save leaves no half-written step that `latest` could pick). Each step
holds one pytree, the train state: a dict with at least `params` and
`batch_stats` (Flax variable collections); training adds `opt`, `step` and the
data position. `cmp_jax.convert from-torch` writes the same layout with the
model variables only, so every tool loads either kind.

`--checkpoint PATH` everywhere accepts a workdir, its `checkpoints/` folder, or
one step folder.
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
  """A checkpoint path is missing or does not hold a CMP checkpoint."""


def manager(directory, keep=None, save_interval_steps=1):
  """A CheckpointManager over `directory` (the `checkpoints/` folder)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_interval_steps,
                                         create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


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


def load_variables(path):
  """Loads {'params', 'batch_stats'} (numpy) from a checkpoint path; returns (variables, step)."""
  ckpt_dir, step = _resolve(path)
  mngr = manager(ckpt_dir)
  try:
    state = mngr.restore(step, args=ocp.args.StandardRestore())
  except Exception as e:  # orbax raises several types for foreign folders
    raise CheckpointError(f"could not read a checkpoint at {os.path.join(ckpt_dir, str(step))!r}: {e}") from e
  finally:
    mngr.close()
  if "params" not in state:
    raise CheckpointError(f"{os.path.join(ckpt_dir, str(step))!r} has no 'params' entry")
  variables = {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
  return jax.tree.map(np.asarray, variables), step
