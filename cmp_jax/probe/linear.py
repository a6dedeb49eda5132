"""The linear head on frozen features: training (cross-entropy) and evaluation (confusion-matrix sums).

Segmentation: a 1x1 linear layer (a per-pixel Dense) on features [N, h, w, C]; its logits are upsampled
(bilinear) to the label resolution L x L and scored with cross-entropy over the pixels whose label is not
`ignore_label` (255). Upsampling the logits is the same as applying the 1x1 layer to bilinearly upsampled
features (both are linear), at K/C of the cost.
Classification: a Dense layer on globally pooled features [N, C].

Both: the features are standardised per channel with the training split's mean and std (a BatchNorm
without affine parameters, as MAE's linear probe), the head starts at zero, AdamW with a cosine decay over
`epochs` passes of `batch_size` samples (the last incomplete batch of each pass is dropped; each pass is a
permutation drawn from np.random.default_rng(seed)). Training and evaluation are deterministic for a seed
(on one machine and backend).
"""

import dataclasses
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmp_jax.evaluators.common import Progress, sum_batches
from cmp_jax.probe import metrics


@dataclasses.dataclass
class ProbeSettings:
  num_classes: int
  task: str = "classification"          # or 'segmentation'
  epochs: int = 100
  batch_size: int = 64
  lr: float = 1e-2
  weight_decay: float = 0.0
  seed: int = 0
  ignore_label: int = 255
  eval_batch_size: int = 64


def channel_stats(x, chunk=256):
  """Per-channel mean and std (float64 accumulation) of [N, ..., C] features, chunked over N."""
  c = x.shape[-1]
  s, s2, n = np.zeros(c), np.zeros(c), 0
  for i in range(0, x.shape[0], chunk):
    v = np.asarray(x[i:i + chunk], np.float64).reshape(-1, c)
    s += v.sum(0)
    s2 += (v * v).sum(0)
    n += v.shape[0]
  mean = s / max(n, 1)
  std = np.sqrt(np.maximum(s2 / max(n, 1) - mean * mean, 0.0))
  # No floor relative to 1: at the original's init (gain 0.02) a random encoder's deep features are ~1e-9.
  return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def logits_fn(head, x, label_hw=None):
  """Logits of the head: [B, K] for pooled features, [B, H, W, K] (upsampled to label_hw) for feature maps."""
  z = (x.astype(jnp.float32) - head["mean"]) / head["std"]
  logits = z @ head["w"] + head["b"]
  if logits.ndim == 4 and label_hw is not None and logits.shape[1:3] != tuple(label_hw):
    logits = jax.image.resize(logits, (logits.shape[0], *label_hw, logits.shape[3]), "bilinear")
  return logits


def _loss(params, stats, x, y, num_classes, ignore_label, label_hw):
  logits = logits_fn({**params, **stats}, x, label_hw)
  y = y.astype(jnp.int32)
  valid = (y != ignore_label) & (y >= 0) & (y < num_classes)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, y, 0))
  return jnp.sum(ce * valid) / jnp.maximum(jnp.sum(valid), 1)


def train(x, y, s: ProbeSettings, log=print, what="probe") -> Dict[str, Any]:
  """Trains the linear head on features x and targets y; returns the head {'w','b','mean','std'} (numpy)."""
  n = x.shape[0]
  bs = max(1, min(int(s.batch_size), n))
  steps_per_epoch = max(1, n // bs)
  total = int(s.epochs) * steps_per_epoch
  label_hw = tuple(y.shape[1:3]) if s.task == "segmentation" else None
  mean, std = channel_stats(x)
  stats = {"mean": jnp.asarray(mean), "std": jnp.asarray(std)}
  params = {"w": jnp.zeros((x.shape[-1], s.num_classes), jnp.float32), "b": jnp.zeros((s.num_classes,), jnp.float32)}
  tx = optax.adamw(optax.cosine_decay_schedule(float(s.lr), max(total, 1)), weight_decay=float(s.weight_decay))
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, xb, yb):
    loss, grads = jax.value_and_grad(_loss)(params, stats, xb, yb, s.num_classes, s.ignore_label, label_hw)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  rng = np.random.default_rng(int(s.seed))
  progress = Progress(what, total, "steps", log)
  losses = []
  for _ in range(int(s.epochs)):
    order = rng.permutation(n)
    for k in range(steps_per_epoch):
      sel = np.sort(order[k * bs:(k + 1) * bs])
      params, opt, loss = step(params, opt, jnp.asarray(x[sel]), jnp.asarray(y[sel]))
      losses.append(loss)
      if len(losses) >= 50 or (progress.done + len(losses)) >= total:
        last = float(losses[-1])
        progress.update(len(losses), f"loss {last:.4f}")
        losses = []
  head = {**jax.tree.map(np.asarray, params), "mean": mean, "std": std}
  return head


def confusion_sums(head, x, y, s: ProbeSettings):
  """The [K, K] confusion matrix of the head on (x, y), summed over fixed-size batches on the host."""
  label_hw = tuple(y.shape[1:3]) if s.task == "segmentation" else None
  head = jax.device_put(head)
  k = s.num_classes

  @jax.jit
  def batch_cm(head, batch):
    xb, yb, wb = batch
    pred = jnp.argmax(logits_fn(head, xb, label_hw), axis=-1)
    weights = wb.reshape((-1,) + (1,) * (yb.ndim - 1))
    return metrics.confusion_matrix(yb, pred, k, s.ignore_label, weights=weights)

  b = max(1, min(int(s.eval_batch_size), x.shape[0]))

  def batches():
    for i in range(0, x.shape[0], b):
      xb, yb = x[i:i + b], y[i:i + b]
      m = xb.shape[0]
      w = np.ones((b,), np.float32)
      if m < b:  # pad to a constant shape; padding has weight 0
        w[m:] = 0
        xb = np.concatenate([xb, np.zeros((b - m,) + xb.shape[1:], xb.dtype)])
        yb = np.concatenate([yb, np.zeros((b - m,) + yb.shape[1:], yb.dtype)])
      yield xb, yb, w

  return sum_batches(batch_cm, batches(), head)
