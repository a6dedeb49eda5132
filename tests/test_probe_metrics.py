"""Confusion matrices and the mIoU / accuracy arithmetic, against hand-computed values."""

import numpy as np
import pytest

from cmp_jax.probe import metrics


def test_confusion_matrix_counts_ignores_255_and_zero_weights():
  labels = np.array([[0, 0, 1, 255], [2, 1, 1, 0]])
  preds = np.array([[0, 1, 1, 2], [2, 2, 1, 0]])
  cm = np.asarray(metrics.confusion_matrix(labels, preds, 3))
  # pairs (t, p): (0,0) (0,1) (1,1) [ignored] (2,2) (1,2) (1,1) (0,0)
  np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 2, 1], [0, 0, 1]])
  w = np.array([1.0, 0.0])[:, None]  # the second row is padding
  cm = np.asarray(metrics.confusion_matrix(labels, preds, 3, weights=w))
  np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [0, 0, 0]])


def test_segmentation_metrics_by_hand():
  # rows = true class, columns = predicted; class 3 never occurs nor is predicted.
  cm = np.array([[3, 1, 0, 0],
                 [0, 2, 2, 0],
                 [0, 0, 0, 0],
                 [0, 0, 0, 0]])
  m = metrics.segmentation_metrics(cm, ["bg", "a", "b", "c"])
  # IoU: bg 3 / (4 + 3 - 3) = 0.75; a 2 / (4 + 3 - 2) = 0.4; b 0 / (0 + 2 - 0) = 0; c: no IoU
  assert m["iou"] == {"bg": 0.75, "a": 0.4, "b": 0.0, "c": None}
  assert m["miou"] == pytest.approx((0.75 + 0.4 + 0.0) / 3)
  assert m["pixel_acc"] == pytest.approx(5 / 8)
  assert m["mean_class_acc"] == pytest.approx((3 / 4 + 2 / 4) / 2)  # classes with labels only
  assert m["pixels"] == 8 and m["classes_present"] == 2


def test_classification_metrics_by_hand():
  cm = np.array([[5, 0, 1],
                 [2, 2, 0],
                 [0, 0, 0]])
  m = metrics.classification_metrics(cm, ["x", "y", "z"])
  assert m["top1"] == pytest.approx(7 / 10)
  assert m["per_class_acc"] == {"x": pytest.approx(5 / 6), "y": 0.5, "z": None}
  assert m["mean_class_acc"] == pytest.approx((5 / 6 + 0.5) / 2)
  assert m["samples"] == 10


def test_summed_batches_equal_one_matrix():
  """Summing per-batch confusion matrices gives the matrix of the whole split (what the evaluators rely on)."""
  from cmp_jax.evaluators.common import sum_batches
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, size=(10, 6, 6))
  labels[rng.uniform(size=labels.shape) < 0.1] = 255
  preds = rng.integers(0, 4, size=(10, 6, 6))
  whole = np.asarray(metrics.confusion_matrix(labels, preds, 4))
  batches = [(labels[i:i + 3], preds[i:i + 3]) for i in range(0, 10, 3)]
  total = sum_batches(lambda b: metrics.confusion_matrix(b[0], b[1], 4), batches)
  np.testing.assert_array_equal(total, whole)
  assert whole.sum() == (labels != 255).sum()
