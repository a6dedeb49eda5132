"""The pieces of the trainer (`cmp_jax.trainer`) worth testing alone: the train state, the update step,
the "is it time" rule of the train loop, and the metric writers.

The train state is a plain dict, as in big_vision:

    {"params": ..., "batch_stats": ..., "opt": optax state, "step": int32 scalar}

`step` is the number of updates applied, which is also the position of the data stream (the pipeline
restarts at it on resume) and the 0-based iteration the LR schedule and the dropout key see. Per-step
randomness is `fold_in(rng, step)`, so no RNG lives in the state and a resumed run draws the same numbers.

A batch is a dict of arrays: `image` [B, H, W, 3] (normalised RGB), `sparse` [B, H, W, 4] (guidance
[u, v, mask, mask]) and `flow` [B, H, W, 2] (dense target). Validation batches also carry `valid` [B]
(0 for the padding samples of a last partial batch); see `cmp_jax.evaluators.flow`.
"""

import json
import os
import time
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmp_jax import losses


# ---------------------------------------------------------------------------
# Train state
# ---------------------------------------------------------------------------

def init_key(seed: int) -> jax.Array:
  """The key the parameters are drawn from.

  An RBG key (XLA's RngBitGenerator): on CPU its init compiles about 3x faster than with threefry
  (~7 s instead of ~24 s for ResNet-18). The values are fixed for a seed on one kind of backend, but CPU and
  GPU draw different ones. Dropout keeps threefry (`dropout_key`), whose numbers do not depend on how the
  batch is sharded, so any device/host layout of the same global batch trains identically.
  """
  return jax.random.key(int(seed), impl="rbg")


def dropout_key(seed: int) -> jax.Array:
  """The threefry key that `update` folds the step into for dropout."""
  return jax.random.fold_in(jax.random.PRNGKey(int(seed)), 1)


def init_state(model, tx, rng, height: int, width: int) -> Dict[str, Any]:
  """A fresh train state (not jitted: wrap it in `jax.jit(..., out_shardings=...)` or `jax.eval_shape`)."""
  image = jnp.zeros((1, height, width, 3), jnp.float32)
  sparse = jnp.zeros((1, height, width, 4), jnp.float32)
  variables = model.init(rng, image, sparse, train=False)
  params = variables["params"]
  return {"params": params, "batch_stats": variables.get("batch_stats", {}), "opt": tx.init(params),
          "step": jnp.zeros((), jnp.int32)}


def make_update_fn(model, tx, schedule: Callable, nbins: int, fmax: float, freeze_bn: bool = False) -> Callable:
  """`update(state, batch, rng) -> (state, metrics)`: one SGD step on the global batch.

  The loss is the mean of the per-sample DiscreteLoss over the global batch: with equal per-device
  batches, the mean over devices of the per-device losses, as the original's all-reduce of loss/world.
  BatchNorm groups (per-device statistics) come from how `model` was built. Dropout (AlexNet) draws from
  `fold_in(rng, step)`. Metrics: `loss`, `lr` (the rate this step used) and `npts` (guidance points per
  sample, the original's NPts). `freeze_bn`: BatchNorm normalises with its running statistics and leaves
  them unchanged (model in eval mode; not for AlexNet, whose dropout that also switches off).
  """

  def loss_fn(params, batch_stats, batch, dropout_rng):
    variables = {"params": params, "batch_stats": batch_stats}
    if freeze_bn:
      logits = model.apply(variables, batch["image"], batch["sparse"], train=False)
    else:
      logits, updated = model.apply(variables, batch["image"], batch["sparse"], train=True,
                                    mutable=["batch_stats"], rngs={"dropout": dropout_rng})
      batch_stats = updated["batch_stats"]
    return losses.discrete_loss(logits, batch["flow"], nbins, fmax), batch_stats

  def update(state, batch, rng):
    step = state["step"]
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state["batch_stats"], batch, jax.random.fold_in(rng, step))
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    npts = jnp.sum(batch["sparse"][..., 2]) / batch["sparse"].shape[0]
    metrics = {"loss": loss, "lr": schedule(step), "npts": npts}
    return {"params": params, "batch_stats": batch_stats, "opt": opt, "step": step + 1}, metrics

  return update


# ---------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------

class MetricWriter:
  """Writes scalars to `<workdir>/metrics.jsonl` (one JSON object per line) and to TensorBoard events in
  `<workdir>/events` (if `tensorboard`), and images to TensorBoard. Only the first process writes."""

  def __init__(self, workdir: str, tensorboard: bool = True, enabled: bool = True):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._file = open(self.path, "a", buffering=1)
    if tensorboard:
      import tensorflow as tf  # the input pipeline imports it anyway
      self._tf = tf
      self._tb = tf.summary.create_file_writer(os.path.join(workdir, "events"))

  def scalars(self, step: int, values: Dict[str, Any]):
    if not self.enabled:
      return
    values = {k: float(v) if isinstance(v, (float, np.floating, np.ndarray, jax.Array)) else v
              for k, v in values.items()}
    self._file.write(json.dumps({"step": int(step), "time": round(time.time(), 3), **values}) + "\n")
    if self._tb is not None:
      with self._tb.as_default(step=int(step)):
        for k, v in values.items():
          if isinstance(v, (int, float)) and not isinstance(v, bool):
            self._tf.summary.scalar(k, v)

  def image(self, step: int, name: str, rgb: np.ndarray):
    if self.enabled and self._tb is not None:
      with self._tb.as_default(step=int(step)):
        self._tf.summary.image(name, np.asarray(rgb)[None], max_outputs=1)

  def flush(self):
    if self.enabled:
      self._file.flush()
      if self._tb is not None:
        self._tb.flush()

  def close(self):
    if self.enabled:
      self.flush()
      self._file.close()
      if self._tb is not None:
        self._tb.close()


class Chrono:
  """Throughput and ETA over the steps since the last report (compile time excluded from img/s)."""

  def __init__(self, first_step: int, total_steps: int, global_batch: int):
    self.total, self.batch = total_steps, global_batch
    self.start_time = self.mark_time = time.time()
    self.first = self.mark_step = first_step

  def report(self, step: int) -> Dict[str, float]:
    now = time.time()
    done = step - self.mark_step
    rate = done / max(now - self.mark_time, 1e-9)
    self.mark_time, self.mark_step = now, step
    return {"img_per_s": rate * self.batch, "eta_s": (self.total - step) / max(rate, 1e-9),
            "elapsed_s": now - self.start_time}


def itstime(step: int, every: int, total: int) -> bool:
  """True after update number `step` (1-based count of updates done) if it is a multiple of `every` or the
  last one (`total`): when the train loop logs, validates and saves."""
  return step % every == 0 or step == total
