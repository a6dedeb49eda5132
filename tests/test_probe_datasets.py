"""The probe readers on their real layouts (tests/fixtures), and bad layouts named in one message."""

import os

import ml_collections
import numpy as np
import pytest

from cmp_jax.probe import datasets
from probe_fixture import bad_cases

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def cfg(**kw):
  c = ml_collections.ConfigDict(dict(train_split="train", val_split="val", num_classes=-1, ignore_label=255,
                                     tfds_data_dir="", tfds_image_key="image", tfds_label_key="label"))
  c.update(kw)
  return c


def test_voc_reader():
  ds = datasets.open_dataset(f"voc:{FIX}/voc_mini", "segmentation", cfg())
  assert ds.num_classes == 21 and ds.class_names[15] == "person"
  assert [os.path.basename(p) for p in ds.train.images] == ["2011_000006.jpg", "2011_000025.jpg"]
  assert len(ds.val) == 1
  image, mask = ds.val.load(0)
  assert image.shape == (338, 500, 3) and image.dtype == np.uint8 and mask.shape == (338, 500)
  assert set(np.unique(mask)) == {0, 5, 15, 255}  # background, bottle, person, void
  _, mask = ds.train.load(1)
  assert set(np.unique(mask)) == {0, 6, 7}  # background, bus, car


def test_folder_segmentation_reader():
  ds = datasets.open_dataset(f"folder:{FIX}/street_seg", "segmentation", cfg())
  assert ds.class_names == ("_background_", "car", "track")
  assert (len(ds.train), len(ds.val)) == (3, 2)
  image, mask = ds.train.load(0)
  assert image.shape == (180, 320, 3) and mask.shape == (180, 320)
  assert set(np.unique(mask)) == {0, 1, 2}


def test_folder_classification_reader():
  ds = datasets.open_dataset(f"folder:{FIX}/mnist_folder", "classification", cfg())
  assert ds.class_names == tuple(str(i) for i in range(10))
  assert (len(ds.train), len(ds.val)) == (200, 80)
  assert np.bincount(ds.train.targets).tolist() == [20] * 10
  image, label = ds.val.load(0)
  assert image.shape == (28, 28, 3) and label == 0  # greyscale PNG -> RGB


def test_bad_inputs_name_the_file(tmp_path):
  for name, spec, task, expected in bad_cases(tmp_path):
    with pytest.raises(datasets.DatasetError) as e:
      datasets.open_dataset(spec, task, cfg())
    assert expected in str(e.value), (name, str(e.value))
    assert "\n" not in str(e.value)


def test_tfds_reader_on_a_prepared_dataset(tmp_path):
  """`tfds:NAME` reads a dataset prepared on disk (here 30 + 30 fixture digits) and never downloads."""
  tfds = pytest.importorskip("tensorflow_datasets")
  from PIL import Image

  class ProbeDigits(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(28, 28, 1)), "label": tfds.features.ClassLabel(num_classes=10)}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples("train"), "test": self._generate_examples("val")}

    def _generate_examples(self, split):
      root = os.path.join(FIX, "mnist_folder", split)
      for c in sorted(os.listdir(root)):
        for f in sorted(os.listdir(os.path.join(root, c)))[:3]:
          yield f"{c}/{f}", {"image": np.asarray(Image.open(os.path.join(root, c, f)))[..., None], "label": int(c)}

  ProbeDigits(data_dir=str(tmp_path)).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  c = cfg(val_split="test", tfds_data_dir=str(tmp_path))
  ds = datasets.open_dataset("tfds:probe_digits", "classification", c)
  assert (len(ds.train), len(ds.val), ds.num_classes) == (30, 30, 10)
  items = list(ds.val.iterate())
  assert items[0][0].shape == (28, 28, 3) and sorted(t for _, t in items) == sorted(list(range(10)) * 3)
  with pytest.raises(datasets.DatasetError, match="never downloads"):
    datasets.open_dataset("tfds:no_such_dataset_here", "classification", c)
  with pytest.raises(datasets.DatasetError, match="has the splits"):
    datasets.open_dataset("tfds:probe_digits", "classification", cfg(val_split="validation", tfds_data_dir=str(tmp_path)))
