"""Linear probe for semantic segmentation: a 1x1 head on frozen features, mIoU over the whole val split.

Yields `miou`, `pixel_acc`, `mean_class_acc`, `iou/<class>` (None for a class neither in the labels nor
predicted), `confusion` (the [K, K] matrix), then the same on the train split as `train_*`.
"""

from cmp_jax.evaluators.linear_probe import LinearProbe
from cmp_jax.probe import metrics


class Evaluator(LinearProbe):
  task = "segmentation"

  def metrics(self, cm):
    m = metrics.segmentation_metrics(cm, self.dataset.class_names)
    yield "miou", m["miou"]
    yield "pixel_acc", m["pixel_acc"]
    yield "mean_class_acc", m["mean_class_acc"]
    for name, v in m["iou"].items():
      yield f"iou/{name}", v
    yield "pixels", m["pixels"]
    yield "confusion", cm.tolist()
