r"""Linear probe for image classification (eval.py): a Dense layer on globally pooled frozen features, top-1.

  python eval.py --config configs/probe_classification.py --workdir runs/probe_cls \
      --config.dataset=folder:path/to/tree --config.checkpoint=runs/quickstart
  # the shipped fixture (280 MNIST digits as PNG: 20 train + 8 val per class):
  python eval.py --config configs/probe_classification.py:fixture --workdir /tmp/probe_cls \
      --config.checkpoint=runs/quickstart

folder:PATH reads PATH/train/<class>/* and PATH/val/<class>/* (any format PIL reads); tfds:NAME a TFDS
dataset already on disk (splits config.train_split / config.val_split, features tfds_image_key and
tfds_label_key). Everything else is as configs/probe_segmentation.py: the architecture from the checkpoint's
config.json, a random-init run beside it, features cached in WORKDIR/features/. Images are resized to
image_size x image_size (small images upscaled), the chosen layers' features are average-pooled over space,
standardised per channel, and a linear classifier is trained with cross-entropy (AdamW, cosine decay).
"""

import importlib.util
import os

import ml_collections


def _segmentation_config():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe_segmentation.py")
  spec = importlib.util.spec_from_file_location("probe_segmentation_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config(arg=None):
  c = _segmentation_config()
  c.task = "classification"
  c.dataset = "folder:data/probe_classification"
  c.val_split = "val"
  c.tfds_label_key = "label"
  c.layers = ("out",)
  c.batch_size = 32
  c.probe = ml_collections.ConfigDict()
  c.probe.epochs = 30
  c.probe.batch_size = 64
  c.probe.lr = 1e-2
  c.probe.weight_decay = 0.0
  if arg == "fixture":  # 280 MNIST digits (tests/fixtures/README.md)
    c.dataset = "folder:tests/fixtures/mnist_folder"
    c.image_size = 64
  elif arg:
    raise ValueError(f"configs/probe_classification.py: unknown argument {arg!r} (only 'fixture')")
  return c
