"""The pieces of `train.py` that are worth testing alone: the train state, the update and eval steps,
validation metrics (EPE and two baselines), validation pictures, and the metric writers.

The train state is a plain dict, as in big_vision:

    {"params": ..., "batch_stats": ..., "opt": optax state, "step": int32 scalar}

`step` is the number of updates applied, which is also the position of the data stream (the pipeline
restarts at it on resume) and the 0-based iteration the LR schedule and the dropout key see. Per-step
randomness is `fold_in(rng, step)`, so no RNG lives in the state and a resumed run draws the same numbers.

A batch is a dict of arrays: `image` [B, H, W, 3] (normalised RGB), `sparse` [B, H, W, 4] (guidance
[u, v, mask, mask]) and `flow` [B, H, W, 2] (dense target), plus optionally `weight` [B] (0 for padding
samples of a last partial validation batch).
"""

import json
import os
import time
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import ndimage

from cmp_jax import losses

MOVING_THRESHOLD = 1.0  # px: "moving" pixels have |target flow| > 1


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


def make_update_fn(model, tx, schedule: Callable, nbins: int, fmax: float) -> Callable:
  """`update(state, batch, rng) -> (state, metrics)`: one SGD step on the global batch.

  The loss is the mean of the per-sample DiscreteLoss over the global batch: with equal per-device
  batches, the mean over devices of the per-device losses, as the original's all-reduce of loss/world.
  BatchNorm groups (per-device statistics) come from how `model` was built. Dropout (AlexNet) draws from
  `fold_in(rng, step)`. Metrics: `loss`, `lr` (the rate this step used) and `npts` (guidance points per
  sample, the original's NPts).
  """

  def loss_fn(params, batch_stats, batch, dropout_rng):
    logits, updated = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"],
                                  batch["sparse"], train=True, mutable=["batch_stats"],
                                  rngs={"dropout": dropout_rng})
    loss = losses.discrete_loss(logits, batch["flow"], nbins, fmax)
    return loss, updated["batch_stats"]

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
# Evaluation
# ---------------------------------------------------------------------------

def _epe_sums(pred, target, moving):
  epe = jnp.sqrt(jnp.sum(jnp.square(pred - target), axis=-1))
  return jnp.sum(epe, axis=(1, 2)), jnp.sum(epe * moving, axis=(1, 2))


def make_eval_fn(model, nbins: int, fmax: float) -> Callable:
  """`evaluate(variables, batch) -> per-sample stats` (each [B]) and the predicted flow [B, H, W, 2].

  The flow is decoded as the original's eval(): soft-argmax at the decoder resolution, then upsampled
  (align corners) to the crop size. Stats: `loss` (DiscreteLoss of the sample), `epe` / `epe_moving` (sums
  of the end-point error over all pixels / pixels with |target| > 1 px), `moving` (count of those pixels),
  `zero_epe` / `zero_epe_moving` (the same sums for a zero-flow prediction, i.e. |target|).
  """

  def evaluate(variables, batch):
    logits = model.apply(variables, batch["image"], batch["sparse"], train=False)
    target = batch["flow"].astype(jnp.float32)
    pred = losses.predict_flow(logits, target.shape[1:3], nbins, fmax)
    moving = (jnp.sqrt(jnp.sum(jnp.square(target), axis=-1)) > MOVING_THRESHOLD).astype(jnp.float32)
    epe, epe_moving = _epe_sums(pred, target, moving)
    zero, zero_moving = _epe_sums(jnp.zeros_like(target), target, moving)
    stats = {"loss": losses.discrete_loss_per_sample(logits, target, nbins, fmax), "epe": epe,
             "epe_moving": epe_moving, "moving": jnp.sum(moving, axis=(1, 2)), "zero_epe": zero,
             "zero_epe_moving": zero_moving}
    return stats, pred

  return evaluate


def nearest_guidance_flow(sparse: np.ndarray) -> np.ndarray:
  """Baseline: every pixel takes the flow of its nearest guidance pixel (zero flow without guidance).

  sparse: [H, W, 4] guidance [u, v, mask, mask] -> [H, W, 2]. Nearest in Euclidean distance
  (`scipy.ndimage.distance_transform_edt` with `return_indices`; ties as scipy breaks them).
  """
  sparse = np.asarray(sparse, np.float32)
  mask = sparse[..., 2] > 0
  if not mask.any():
    return np.zeros(sparse.shape[:2] + (2,), np.float32)
  _, (iy, ix) = ndimage.distance_transform_edt(~mask, return_indices=True)
  return sparse[iy, ix, :2]


def nearest_guidance_sums(sparse: np.ndarray, flow: np.ndarray):
  """Per-sample EPE sums (all pixels, moving pixels) of the nearest-guidance baseline: two [B] arrays."""
  flow = np.asarray(flow, np.float32)
  moving = np.sqrt(np.sum(np.square(flow), axis=-1)) > MOVING_THRESHOLD
  all_sums, moving_sums = [], []
  for s, f, m in zip(np.asarray(sparse), flow, moving):
    epe = np.sqrt(np.sum(np.square(nearest_guidance_flow(s) - f), axis=-1))
    all_sums.append(epe.sum(dtype=np.float64))
    moving_sums.append(epe[m].sum(dtype=np.float64))
  return np.asarray(all_sums), np.asarray(moving_sums)


class ValMetrics:
  """Sums per-sample validation stats over the whole val list, then reports dataset means.

  `loss` is the mean per-sample DiscreteLoss; every EPE is a mean over pixels (all crops have the same
  size, so over all pixels this is also the mean of per-sample means); the `_moving` ones are means over
  the pixels whose target moves more than 1 px, pooled over the whole set.
  """
  KEYS = ("loss", "epe", "epe_moving", "moving", "zero_epe", "zero_epe_moving", "nearest_epe",
          "nearest_epe_moving")

  def __init__(self):
    self.sums = np.zeros(len(self.KEYS) + 2, np.float64)  # + samples, pixels

  def add(self, stats: Dict[str, np.ndarray], pixels_per_sample: int, weight: Optional[np.ndarray] = None):
    n = len(np.asarray(stats["loss"]))
    w = np.ones(n) if weight is None else np.asarray(weight, np.float64)
    row = [np.sum(w * np.asarray(stats[k], np.float64)) for k in self.KEYS]
    self.sums += np.asarray(row + [w.sum(), w.sum() * pixels_per_sample])

  def merge(self, total: np.ndarray):
    """Replaces the sums by `total` (e.g. the sum over processes of every process's `sums`)."""
    self.sums = np.asarray(total, np.float64)

  def result(self) -> Dict[str, float]:
    s = dict(zip(self.KEYS + ("samples", "pixels"), self.sums))
    pix, mov = max(s["pixels"], 1.0), max(s["moving"], 1.0)
    return {"loss": s["loss"] / max(s["samples"], 1.0),
            "epe": s["epe"] / pix, "epe_moving": s["epe_moving"] / mov,
            "zero_epe": s["zero_epe"] / pix, "zero_epe_moving": s["zero_epe_moving"] / mov,
            "nearest_epe": s["nearest_epe"] / pix, "nearest_epe_moving": s["nearest_epe_moving"] / mov,
            "moving_fraction": s["moving"] / pix, "samples": int(s["samples"])}


def denormalise(image: np.ndarray, mean, std) -> np.ndarray:
  """Normalised RGB [..., 3] back to uint8 0..255."""
  return np.clip(np.asarray(image) * np.asarray(std) + np.asarray(mean), 0, 255).round().astype(np.uint8)


def visualise(image, sparse, pred, target, mean, std) -> np.ndarray:
  """Rows of [input with guidance crosses | predicted flow | target flow] (Middlebury colours), stacked.

  All inputs are batches ([N, H, W, C]); returns one uint8 picture [N * H, 3 * W, 3]. The two flows of a row
  share one colour scale (the target's, with the original's 5 px floor), so colours compare.
  """
  from cmp_jax import flowviz
  rows = []
  for img, s, p, t in zip(image, sparse, pred, target):
    maxrad = max(5.0, float(np.sqrt(np.sum(np.square(t), axis=-1)).max()))
    rows.append(np.concatenate([flowviz.draw_guidance(denormalise(img, mean, std), np.asarray(s)),
                                flowviz.flow_to_image(p, maxrad=maxrad),
                                flowviz.flow_to_image(t, maxrad=maxrad)], axis=1))
  return np.concatenate(rows, axis=0)


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


def format_seconds(s: float) -> str:
  s = int(max(s, 0))
  return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
