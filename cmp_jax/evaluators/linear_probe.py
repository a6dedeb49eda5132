"""Linear probe of a frozen image encoder: the shared part of probe_segmentation and probe_classification.

`Evaluator(config, encoder=..., cache_dir=..., log=...)` opens and checks the dataset when it is built;
`run(variables)` (the encoder's own {'params', 'batch_stats'}) computes (or reads from the cache) the
features of the train and val splits, trains the linear head on the train features and yields the val
metrics, then the same metrics on the train split with a `train_` prefix.

Config keys (configs/probe_segmentation.py documents each): task, dataset, train_split, val_split,
num_classes, ignore_label, tfds_*, image_size (> 0 here: eval.py resolves -1), label_size (-1: image_size),
layers, batch_size (feature extraction), data.image_mean / data.image_std, seed, probe.{epochs, batch_size,
lr, weight_decay}.
"""

import os
from typing import Any, Iterator, Tuple

import numpy as np

from cmp_jax.evaluators import common
from cmp_jax.probe import datasets, features, linear


class LinearProbe(common.Evaluator):
  task = None  # set by the subclasses

  def __init__(self, config, *, encoder, dataset=None, cache_dir=None, log=print):
    self.config, self.encoder, self.log = config, encoder, log
    self.layers = features.check_layers(encoder, config.layers)
    self.image_size = int(config.image_size)
    features.check_image_size(encoder, self.image_size)
    self.label_size = int(config.label_size) if int(config.label_size) > 0 else self.image_size
    self.dataset = dataset if dataset is not None else datasets.open_dataset(config.dataset, self.task, config)
    self.cache_dir = cache_dir
    self.feature_fn = features.make_feature_fn(encoder, self.layers, pool=self.task == "classification")
    self.settings = linear.ProbeSettings(
        num_classes=self.dataset.num_classes, task=self.task, epochs=int(config.probe.epochs),
        batch_size=int(config.probe.batch_size), lr=float(config.probe.lr),
        weight_decay=float(config.probe.weight_decay), seed=int(config.seed),
        ignore_label=int(config.ignore_label), eval_batch_size=int(config.batch_size))

  def feature_settings(self):
    """Everything but the variables and the files that the cached features depend on."""
    c = self.config
    return {"task": self.task, "arch": self.encoder.arch_name, "dtype": str(self.encoder.dtype),
            "layers": list(self.layers), "image_size": self.image_size, "label_size": self.label_size,
            "mean": list(c.data.image_mean), "std": list(c.data.image_std), "version": 1}

  def features(self, variables, name="variables"):
    """{split: (x, y)} for the train and val splits."""
    fp = features.variables_fingerprint(variables)
    out = {}
    for split_name, split in (("train", self.dataset.train), ("val", self.dataset.val)):
      cache = None
      if self.cache_dir:
        key = features.cache_key(fp, split, self.feature_settings())
        cache = os.path.join(self.cache_dir, f"{self.task}-{split_name}-{key}.npz")
      x, y = features.extract(
          split, self.feature_fn, variables, task=self.task, image_size=self.image_size,
          label_size=self.label_size, mean=self.config.data.image_mean, std=self.config.data.image_std,
          batch_size=int(self.config.batch_size), what=f"features {name}/{split_name}", cache_path=cache,
          log=self.log)
      self._check_targets(y, split_name)
      out[split_name] = (x, y)
    return out

  def _check_targets(self, y, split_name):
    k, ignore = self.dataset.num_classes, int(self.config.ignore_label)
    labels = np.unique(y)
    bad = labels[(labels != ignore) & ((labels < 0) | (labels >= k))]
    if bad.size:
      raise datasets.DatasetError(f"config.dataset {self.dataset.spec!r} ({split_name}): labels {bad[:5].tolist()} "
                                  f"outside the {k} classes 0..{k - 1}")

  def run(self, variables, name="variables") -> Iterator[Tuple[str, Any]]:
    feats = self.features(variables, name)
    head = linear.train(*feats["train"], self.settings, log=self.log, what=f"linear probe {name}")
    for prefix, split in (("", "val"), ("train_", "train")):
      cm = linear.confusion_sums(head, *feats[split], self.settings)
      yield from ((prefix + k, v) for k, v in self.metrics(cm))

  def metrics(self, cm):
    raise NotImplementedError
