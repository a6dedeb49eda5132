"""Linear probing of a frozen image encoder: dataset readers, features, the linear head, metrics.

datasets.py  the `voc:`, `folder:` and `tfds:` readers, checked before anything is computed
features.py  the frozen encoder's features from chosen layers (stop_gradient), cached on disk
linear.py    the linear head (1x1 conv for segmentation, Dense for classification), trained on the features
metrics.py   confusion matrices (per-batch sums) -> mIoU, per-class IoU, accuracy

`cmp_jax.evaluators.probe_segmentation` / `probe_classification` put them together; `eval.py` runs them.
"""
