"""Flow validation: DiscreteLoss and end-point error of the predicted dense flow over a whole val list,
beside two baselines on the same guidance (zero flow, and each pixel copying its nearest guidance vector),
plus pictures of input | predicted | target flow.

    ev = evaluators.from_config("flow", config, model=model, mesh=mesh, val_iter=val_iter)
    for name, value in ev.run(variables):   # 'loss', 'epe', ..., and 'input_pred_target' (a picture)
      ...

Batches come from `cmp_jax.data.pipeline.make_val_iterator`: the whole list, with padding samples marked
by `valid` = 0 in a last partial batch. Each process evaluates its rows; per-sample sums are added over
processes once, then turned into means.
"""

from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from scipy import interpolate, ndimage

from cmp_jax import losses, parallel
from cmp_jax.evaluators import common

MOVING_THRESHOLD = 1.0  # px: "moving" pixels have |target flow| > 1


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


def linear_guidance_flow(sparse: np.ndarray) -> np.ndarray:
  """A smoother fill (scripts/guidance_baselines.py): the guidance interpolated linearly over its Delaunay
  triangles, nearest guidance outside them (and wherever there are no three points off one line)."""
  sparse = np.asarray(sparse, np.float32)
  near = nearest_guidance_flow(sparse)
  ys, xs = np.nonzero(sparse[..., 2] > 0)
  if len(ys) < 3 or np.linalg.matrix_rank(np.stack([ys, xs, np.ones_like(ys)], 1)) < 3:
    return near
  gy, gx = np.mgrid[:sparse.shape[0], :sparse.shape[1]]
  out = interpolate.griddata(np.stack([ys, xs], 1), sparse[ys, xs, :2], (gy, gx), method="linear")
  outside = np.isnan(out[..., 0])
  out[outside] = near[outside]
  return out.astype(np.float32)


def idw_guidance_flow(sparse: np.ndarray, power: float = 4.0) -> np.ndarray:
  """Another fill: the inverse-distance-weighted mean of the guidance vectors (weights distance ** -power);
  a guidance pixel keeps its own vector. Zero flow without guidance."""
  sparse = np.asarray(sparse, np.float32)
  ys, xs = np.nonzero(sparse[..., 2] > 0)
  if not len(ys):
    return np.zeros(sparse.shape[:2] + (2,), np.float32)
  gy, gx = np.mgrid[:sparse.shape[0], :sparse.shape[1]]
  d2 = (gy[..., None] - ys) ** 2 + (gx[..., None] - xs) ** 2
  w = np.maximum(d2, 1e-12) ** (-power / 2)
  return (np.einsum("hwk,kc->hwc", w, sparse[ys, xs, :2]) / w.sum(-1)[..., None]).astype(np.float32)


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
          "nearest_epe_moving", "points")

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
    return {"loss": s["loss"] / max(s["samples"], 1.0), "points": s["points"] / max(s["samples"], 1.0),
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




def jit_eval_fn(model, config, mesh):
  """`make_eval_fn` jitted for batches sharded over `mesh`."""
  batch_sh = parallel.batch_sharding(mesh)
  return jax.jit(make_eval_fn(model, int(config.model.nbins), float(config.model.fmax)),
                 out_shardings=(batch_sh, batch_sh))


class FlowEvaluator(common.Evaluator):
  """Validation of a CMP model on one val iterator; `run(variables)` yields `(name, value)` pairs.

  The names are ValMetrics' keys (scalars) and `input_pred_target`, a uint8 picture of the first
  `config.vis_num` valid samples (only on the first process, and only if vis_num > 0).
  """

  def __init__(self, config, *, model, mesh, val_iter, evaluate=None, groups=None):
    """evaluate: a jitted `make_eval_fn` to share between evaluators of one model (compiled once).
    groups: optional, the group name (e.g. the clip) of each val list index; `run` then also yields each
    group's results as `<group>/<key>`."""
    self.config, self.mesh, self.val_iter = config, mesh, val_iter
    self.primary = jax.process_index() == 0
    self.evaluate = evaluate or jit_eval_fn(model, config, mesh)
    self.groups = groups

  def run(self, variables):
    crop_h, crop_w = (int(s) for s in self.config.data.crop_size)
    names = sorted(set(self.groups or ()))
    acc, vis = ValMetrics(), []
    by_group = {g: ValMetrics() for g in names}
    vis_num = int(self.config.vis_num) if self.primary else 0
    for batch in self.val_iter:
      inputs = parallel.shard_batch({k: batch[k] for k in ("image", "sparse", "flow")}, self.mesh)
      stats, pred = self.evaluate(variables, inputs)
      stats, pred = parallel.local_rows(stats), parallel.local_rows(pred)
      stats["nearest_epe"], stats["nearest_epe_moving"] = nearest_guidance_sums(batch["sparse"], batch["flow"])
      stats["points"] = np.sum(batch["sparse"][..., 2] > 0, axis=(1, 2))
      acc.add(stats, crop_h * crop_w, weight=batch["valid"])
      for g in names:
        mine = np.asarray([self.groups[i] == g for i in np.asarray(batch["index"])])
        by_group[g].add(stats, crop_h * crop_w, weight=batch["valid"] * mine)
      for i in np.flatnonzero(batch["valid"])[:vis_num - len(vis)]:
        vis.append((batch["image"][i], batch["sparse"][i], pred[i], batch["flow"][i]))
    acc.merge(parallel.sum_over_processes(acc.sums))
    yield from acc.result().items()
    for g in names:
      by_group[g].merge(parallel.sum_over_processes(by_group[g].sums))
      yield from ((f"{g}/{k}", v) for k, v in by_group[g].result().items())
    if vis:
      yield "input_pred_target", visualise(*[np.stack(x) for x in zip(*vis)], mean=self.config.data.image_mean,
                                           std=self.config.data.image_std)


def summary(res: Dict[str, float], seconds: Optional[float] = None) -> str:
  """One log line of a validation result (the scalars FlowEvaluator yields)."""
  line = (f"loss {res['loss']:.4f} | EPE {res['epe']:.3f} px (moving {res['epe_moving']:.3f}) | "
          f"zero flow {res['zero_epe']:.3f} ({res['zero_epe_moving']:.3f}) | nearest guidance "
          f"{res['nearest_epe']:.3f} ({res['nearest_epe_moving']:.3f}) | {res['samples']} samples, "
          f"{res['points']:.1f} guidance points each, {100 * res['moving_fraction']:.1f}% moving px")
  return line + (f", {seconds:.1f}s" if seconds is not None else "")


Evaluator = FlowEvaluator  # the name `evaluators.from_config("flow", ...)` builds
