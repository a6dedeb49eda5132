"""Bad probe datasets built from the fixtures, one per kind of error (tests/test_probe_datasets.py, test_eval.py)."""

import os
import shutil

import numpy as np
from PIL import Image

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _copy(tmp_path, name):
  dst = tmp_path / name
  shutil.copytree(os.path.join(FIX, name), dst)
  return dst


def _small_tree(tmp_path, classes=("3", "7"), n=2):
  root = tmp_path / "tree"
  for split in ("train", "val"):
    for c in classes:
      d = root / split / c
      d.mkdir(parents=True)
      src = os.path.join(FIX, "mnist_folder", split, c)
      for f in sorted(os.listdir(src))[:n]:
        shutil.copy(os.path.join(src, f), d / f)
  return root


def bad_cases(tmp_path):
  """(name, spec, task, substring the message must contain) for every kind of bad input; builds the files."""
  cases = [("scheme", "zip:foo", "segmentation", "unknown dataset scheme"),
           ("layout", f"folder:{FIX}/voc_mini", "classification", "voc_mini/train is missing"),
           ("voc_layout", f"voc:{FIX}/street_seg", "segmentation", "JPEGImages is missing")]
  seg = _copy(tmp_path, "street_seg")
  os.remove(seg / "val" / "masks" / "00000104.png")
  cases.append(("no_mask", f"folder:{seg}", "segmentation", "00000104.jpg has no mask"))
  seg2 = _copy(tmp_path / "b", "street_seg")
  m = seg2 / "train" / "masks" / "00000101.png"
  Image.open(m).resize((160, 90), Image.NEAREST).save(m)
  cases.append(("mask_size", f"folder:{seg2}", "segmentation", "00000101.png: 160x90 but its image"))
  seg3 = _copy(tmp_path / "c", "street_seg")
  m = seg3 / "val" / "masks" / "00000103.png"
  a = np.array(Image.open(m))
  a[0, :5] = 7
  Image.fromarray(a.astype(np.uint8), "L").save(m)
  cases.append(("label_range", f"folder:{seg3}", "segmentation", "00000103.png: label 7 outside the 3 classes"))
  tree = _small_tree(tmp_path / "d")
  for f in os.listdir(tree / "val" / "7"):
    os.remove(tree / "val" / "7" / f)
  cases.append(("empty_class", f"folder:{tree}", "classification", "val/7 holds no images"))
  tree2 = _small_tree(tmp_path / "e")
  (tree2 / "train" / "3" / "broken.png").write_bytes(b"this is not a PNG")
  cases.append(("unreadable", f"folder:{tree2}", "classification", "broken.png: not a readable image"))
  return cases


def truncated_tree(tmp_path):
  """A classification tree whose one val image is a truncated JPEG: its header reads, its pixels do not."""
  root = _small_tree(tmp_path)
  with open(os.path.join(FIX, "voc_mini", "JPEGImages", "2011_000003.jpg"), "rb") as f:
    (root / "val" / "7" / "cut.jpg").write_bytes(f.read()[:5000])
  return root
