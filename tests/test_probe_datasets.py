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
