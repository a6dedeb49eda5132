"""Confusion matrices and the metrics computed from them, once, after summing over a whole split.

A jitted per-batch function returns `confusion_matrix(...)` (a count matrix, rows = true class, columns =
predicted class); the host adds them up; `segmentation_metrics` / `classification_metrics` turn the total
into figures. Summing counts, not per-batch means, makes the result independent of the batch size and of
padding (padded entries carry the ignore label or zero weight).
"""

import jax.numpy as jnp
import numpy as np


def confusion_matrix(labels, preds, num_classes, ignore_label=255, weights=None):
  """[K, K] int32 counts: entry (t, p) = number of elements with true class t predicted as p.

  labels, preds: integer arrays of the same shape (any rank). Elements whose label is `ignore_label`, or
  outside [0, num_classes), or whose weight is 0, are not counted.
  """
  shape = jnp.shape(preds)
  labels = jnp.asarray(labels).astype(jnp.int32).reshape(-1)
  preds = jnp.asarray(preds).astype(jnp.int32).reshape(-1)
  valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
  if weights is not None:
    valid &= jnp.broadcast_to(jnp.asarray(weights), shape).reshape(-1) > 0
  index = jnp.where(valid, labels * num_classes + jnp.clip(preds, 0, num_classes - 1), 0)
  counts = jnp.bincount(index, weights=valid.astype(jnp.int32), length=num_classes * num_classes)
  return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def iou_per_class(cm):
  """IoU of each class from a [K, K] confusion matrix: TP / (TP + FP + FN); NaN where TP+FP+FN = 0."""
  cm = np.asarray(cm, np.float64)
  tp = np.diag(cm)
  union = cm.sum(0) + cm.sum(1) - tp
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def segmentation_metrics(cm, class_names=None):
  """{'miou', 'pixel_acc', 'mean_class_acc', 'iou': {class: IoU or None}, 'pixels', 'classes_present'}.

  mIoU is the mean IoU over the classes that occur in the labels or the predictions (a class neither
  present nor predicted has no IoU and is left out, as mmsegmentation and scenic do; every class occurs in
  PASCAL VOC 2012 val, so there it is the mean over all 21).
  """
  cm = np.asarray(cm, np.int64)
  k = cm.shape[0]
  names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
  iou = iou_per_class(cm)
  total = int(cm.sum())
  rows = cm.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    class_acc = np.where(rows > 0, np.diag(cm) / np.maximum(rows, 1), np.nan)
  return {
      "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
      "pixel_acc": float(np.trace(cm) / total) if total else float("nan"),
      "mean_class_acc": float(np.nanmean(class_acc)) if np.isfinite(class_acc).any() else float("nan"),
      "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
      "pixels": total,
      "classes_present": int((rows > 0).sum()),
  }


def classification_metrics(cm, class_names=None):
  """{'top1', 'mean_class_acc', 'per_class_acc': {class: acc or None}, 'samples'} from a [K, K] matrix."""
  cm = np.asarray(cm, np.int64)
  k = cm.shape[0]
  names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
  total = int(cm.sum())
  rows = cm.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    class_acc = np.where(rows > 0, np.diag(cm) / np.maximum(rows, 1), np.nan)
  return {
      "top1": float(np.trace(cm) / total) if total else float("nan"),
      "mean_class_acc": float(np.nanmean(class_acc)) if np.isfinite(class_acc).any() else float("nan"),
      "per_class_acc": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, class_acc)},
      "samples": total,
  }
