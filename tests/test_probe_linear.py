"""The linear head: it learns from features that carry the label, deterministically for a seed."""

import os

import ml_collections
import numpy as np
import pytest

from cmp_jax.probe import datasets, linear, metrics

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _cfg():
  return ml_collections.ConfigDict(dict(train_split="train", val_split="val", num_classes=-1, ignore_label=255,
                                        tfds_data_dir="", tfds_image_key="image", tfds_label_key="label"))


@pytest.fixture(scope="module")
def mnist_pixels():
  """Raw MNIST pixels (784 features that carry the digit), train and val."""
  ds = datasets.open_dataset(f"folder:{FIX}/mnist_folder", "classification", _cfg())

  def arrays(split):
    items = list(split.iterate())
    return (np.stack([im[..., 0].reshape(-1) for im, _ in items]).astype(np.float32) / 255,
            np.array([t for _, t in items], np.int32))

  return arrays(ds.train), arrays(ds.val)


def test_classification_probe_beats_chance_and_is_deterministic(mnist_pixels):
  (xtr, ytr), (xva, yva) = mnist_pixels
  s = linear.ProbeSettings(num_classes=10, task="classification", epochs=30, batch_size=50, lr=1e-2, seed=3)
  head = linear.train(xtr, ytr, s, log=lambda m: None)
  val = metrics.classification_metrics(linear.confusion_sums(head, xva, yva, s))
  assert val["samples"] == 80
  assert val["top1"] > 0.6, val  # chance is 0.1 (8 val digits per class)
  again = linear.train(xtr, ytr, s, log=lambda m: None)
  for k in head:
    np.testing.assert_array_equal(head[k], again[k])
  other = linear.train(xtr, ytr, linear.ProbeSettings(**{**s.__dict__, "seed": 4}), log=lambda m: None)
  assert not np.array_equal(head["w"], other["w"])  # the seed sets the data order


def test_segmentation_probe_on_label_carrying_features():
  """Features: the 1/8-resolution one-hot of the true mask plus noise; the head must recover the classes."""
  ds = datasets.open_dataset(f"folder:{FIX}/street_seg", "segmentation", _cfg())
  rng = np.random.default_rng(0)

  def arrays(split):
    xs, ys = [], []
    for _, mask in split.iterate():
      small = mask[4::8, 4::8][:20, :40]                 # 180x320 -> 20x40 grid (nearest)
      onehot = np.eye(3, dtype=np.float32)[small]
      xs.append(onehot + 0.3 * rng.normal(size=onehot.shape).astype(np.float32))
      ys.append(mask[:160, :320][::2, ::2].astype(np.uint8))  # 80x160 labels
    return np.stack(xs), np.stack(ys)

  (xtr, ytr), (xva, yva) = arrays(ds.train), arrays(ds.val)
  ytr[:, :2] = 255  # some ignored pixels
  s = linear.ProbeSettings(num_classes=3, task="segmentation", epochs=60, batch_size=3, lr=5e-2, seed=0)
  head = linear.train(xtr, ytr, s, log=lambda m: None)
  m = metrics.segmentation_metrics(linear.confusion_sums(head, xva, yva, s), ds.class_names)
  assert m["pixels"] == yva.size
  # chance (always background) gives mIoU ~ 0.29; the upsampled 1/8 one-hot bounds it below 1
  assert m["miou"] > 0.6, m
  assert all(v is not None and v > 0.3 for v in m["iou"].values()), m["iou"]
