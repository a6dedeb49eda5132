"""Linear probe for classification: a Dense layer on globally pooled frozen features, top-1 on val.

Yields `top1`, `mean_class_acc`, `samples`, `confusion` (the [K, K] matrix), then the same on the train
split as `train_*`.
"""

from cmp_jax.evaluators.linear_probe import LinearProbe
from cmp_jax.probe import metrics


class Evaluator(LinearProbe):
  task = "classification"

  def metrics(self, cm):
    m = metrics.classification_metrics(cm, self.dataset.class_names)
    yield "top1", m["top1"]
    yield "mean_class_acc", m["mean_class_acc"]
    yield "samples", m["samples"]
    yield "confusion", cm.tolist()
