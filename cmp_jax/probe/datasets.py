"""Probe datasets: `voc:PATH`, `folder:PATH` and `tfds:NAME`, checked before anything is computed.

    open_dataset("voc:data/VOCdevkit/VOC2012", "segmentation", config) -> Dataset(train, val, class_names)

Layouts:
  voc:PATH      a PASCAL VOC 2012 devkit folder: JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette PNG:
                class indices 0..20, 255 = void/ignore), ImageSets/Segmentation/{train,val}.txt (one id a line).
                Segmentation only; 21 classes (background + the 20 VOC classes).
  folder:PATH   classification: PATH/train/<class>/<image> and PATH/val/<class>/<image>, any format PIL reads;
                the classes are the sorted folder names of train/ (val/ may lack some, not add any).
                segmentation: PATH/{train,val}/images/<stem>.<ext> with PATH/{train,val}/masks/<stem>.<ext>
                (single-channel class indices: palette or greyscale PNG; 255 = ignore). The classes are the
                lines of PATH/class_names.txt when it exists, else config.num_classes, else max label + 1.
  tfds:NAME     a TFDS dataset already prepared under config.tfds_data_dir (or TFDS's default data_dir);
                never downloaded. Splits config.train_split / config.val_split, features config.tfds_image_key
                and config.tfds_label_key (a ClassLabel for classification, an integer mask for segmentation).

`open_dataset` checks the whole layout up front (every image has its mask, opens as an image, masks match
their images in size and hold labels in range, no class folder is empty), so a bad dataset stops the run
before any work, with a `DatasetError` naming the file or setting. Images come back as H x W x 3 uint8 RGB.
"""

import dataclasses
import os
from typing import Iterator, List, Optional, Tuple

import numpy as np
from PIL import Image

from cmp_jax.evaluators.common import Progress

SCHEMES = ("voc", "folder", "tfds")
TASKS = ("segmentation", "classification")
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
MASK_MODES = ("P", "L", "I", "I;16")


class ProbeError(ValueError):
  """Bad input to a probe (dataset, layer, size, checkpoint); the message names the file or setting."""


class DatasetError(ProbeError):
  """The dataset setting, layout or one of its files is unusable; the message names which."""


def parse_spec(spec: str) -> Tuple[str, str]:
  """'voc:PATH' -> ('voc', 'PATH'); DatasetError for an unknown scheme or an empty argument."""
  spec = str(spec)
  scheme, sep, arg = spec.partition(":")
  if not sep or scheme not in SCHEMES:
    raise DatasetError(f"config.dataset {spec!r}: unknown dataset scheme; write voc:PATH, folder:PATH or tfds:NAME")
  if not arg:
    raise DatasetError(f"config.dataset {spec!r}: {scheme}: needs a {'name' if scheme == 'tfds' else 'path'}")
  return scheme, arg


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------

def _open_image(path, what="image"):
  try:
    im = Image.open(path)
    im.size  # noqa: B018  (header read)
    return im
  except FileNotFoundError:
    raise DatasetError(f"{what} {path}: no such file") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise DatasetError(f"{what} {path}: not a readable image ({e})") from None


def load_rgb(path) -> np.ndarray:
  """H x W x 3 uint8 RGB; DatasetError naming the file if it cannot be decoded."""
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"))
  except (OSError, SyntaxError, ValueError) as e:
    raise DatasetError(f"image {path}: not a readable image ({e})") from None


def load_mask(path) -> np.ndarray:
  """H x W int32 class indices from a palette / greyscale mask; DatasetError naming the file otherwise."""
  try:
    with Image.open(path) as im:
      if im.mode not in MASK_MODES:
        raise DatasetError(f"mask {path}: mode {im.mode} is not a class-index mask (expected a palette or "
                           "greyscale PNG whose pixel values are class indices, 255 = ignore)")
      return np.asarray(im).astype(np.int32)
  except (OSError, SyntaxError, ValueError) as e:
    if isinstance(e, DatasetError):
      raise
    raise DatasetError(f"mask {path}: not a readable image ({e})") from None


@dataclasses.dataclass
class FileSplit:
  """One split of a file-based dataset: image paths and, per image, a mask path or a class index."""
  name: str
  images: List[str]
  targets: list  # mask paths (segmentation) or int labels (classification)
  task: str

  def __len__(self):
    return len(self.images)

  def keys(self) -> List[str]:
    return list(self.images)

  def load(self, i):
    """(image H x W x 3 uint8, target): target is an int label or an H x W int32 mask."""
    image = load_rgb(self.images[i])
    if self.task == "classification":
      return image, int(self.targets[i])
    mask = load_mask(self.targets[i])
    if mask.shape != image.shape[:2]:
      raise DatasetError(f"mask {self.targets[i]}: {mask.shape[1]}x{mask.shape[0]} but its image "
                         f"{self.images[i]} is {image.shape[1]}x{image.shape[0]}")
    return image, mask

  def iterate(self) -> Iterator[Tuple[np.ndarray, object]]:
    for i in range(len(self)):
      yield self.load(i)


@dataclasses.dataclass
class Dataset:
  spec: str
  task: str
  train: object  # FileSplit or TfdsSplit
  val: object
  class_names: Tuple[str, ...]

  @property
  def num_classes(self):
    return len(self.class_names)


# ---------------------------------------------------------------------------
# Checks shared by the file-based readers
# ---------------------------------------------------------------------------

def _check_segmentation(split: FileSplit, num_classes: Optional[int], ignore_label: int, log=print) -> int:
  """Opens every image header and decodes every mask; returns the largest label seen (ignore excluded)."""
  top = -1
  progress = Progress(f"checking {split.name} images and masks", len(split), "pairs", log)
  for image, mask_path in zip(split.images, split.targets):
    im = _open_image(image, "image")
    mk = _open_image(mask_path, "mask")
    if mk.mode not in MASK_MODES:
      raise DatasetError(f"mask {mask_path}: mode {mk.mode} is not a class-index mask (expected a palette or "
                         "greyscale PNG whose pixel values are class indices, 255 = ignore)")
    if mk.size != im.size:
      raise DatasetError(f"mask {mask_path}: {mk.size[0]}x{mk.size[1]} but its image {image} is "
                         f"{im.size[0]}x{im.size[1]} (a mask must have its image's size)")
    mask = load_mask(mask_path)
    labels = np.unique(mask)
    labels = labels[labels != ignore_label]
    if labels.size and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes)):
      bad = [int(v) for v in labels if v < 0 or (num_classes is not None and v >= num_classes)]
      raise DatasetError(f"mask {mask_path}: label{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad[:5]))} "
                         f"outside the {num_classes} classes 0..{(num_classes or 0) - 1} "
                         f"({ignore_label} = ignore)")
    if labels.size:
      top = max(top, int(labels.max()))
    progress.update(1)
  return top


def _list_images(folder) -> List[str]:
  return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                if not f.startswith(".") and os.path.isfile(os.path.join(folder, f)))


def _need_dir(path, spec, layout):
  if not os.path.isdir(path):
    raise DatasetError(f"config.dataset {spec!r}: {path} is missing; expected {layout}")


# ---------------------------------------------------------------------------
# voc:PATH
# ---------------------------------------------------------------------------

VOC_LAYOUT = "a PASCAL VOC 2012 devkit folder with JPEGImages/, SegmentationClass/, ImageSets/Segmentation/{train,val}.txt"


def _voc(root, spec, task, config, log=print) -> Dataset:
  if task != "segmentation":
    raise DatasetError(f"config.dataset {spec!r}: voc: is a segmentation dataset; the classification probe takes "
                       "folder:PATH or tfds:NAME")
  if not os.path.isdir(root):
    raise DatasetError(f"config.dataset {spec!r}: {root} does not exist")
  if os.path.isdir(os.path.join(root, "VOC2012")) and not os.path.isdir(os.path.join(root, "JPEGImages")):
    raise DatasetError(f"config.dataset {spec!r}: {root} is a VOCdevkit folder; give voc:{os.path.join(root, 'VOC2012')}")
  for d in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
    _need_dir(os.path.join(root, d), spec, VOC_LAYOUT)
  splits = {}
  for name in (config.train_split, config.val_split):
    list_file = os.path.join(root, "ImageSets", "Segmentation", f"{name}.txt")
    if not os.path.isfile(list_file):
      raise DatasetError(f"config.dataset {spec!r}: {list_file} is missing; expected {VOC_LAYOUT}")
    with open(list_file) as f:
      ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
      raise DatasetError(f"{list_file}: lists no image")
    images = [os.path.join(root, "JPEGImages", i + ".jpg") for i in ids]
    masks = [os.path.join(root, "SegmentationClass", i + ".png") for i in ids]
    for i, (im, mk) in enumerate(zip(images, masks)):
      if not os.path.isfile(im):
        raise DatasetError(f"{list_file} line {i + 1}: image {im} is missing")
      if not os.path.isfile(mk):
        raise DatasetError(f"image {im} has no mask: {mk} is missing")
    splits[name] = FileSplit(name, images, masks, task)
  for s in splits.values():
    _check_segmentation(s, len(VOC_CLASSES), int(config.ignore_label), log)
  return Dataset(spec, task, splits[config.train_split], splits[config.val_split], VOC_CLASSES)


# ---------------------------------------------------------------------------
# folder:PATH
# ---------------------------------------------------------------------------

CLS_LAYOUT = "PATH/train/<class>/<images> and PATH/val/<class>/<images>"
SEG_LAYOUT = "PATH/{train,val}/images/<stem>.<ext> and PATH/{train,val}/masks/<stem>.png"


def _folder_classification(root, spec, config, log=print) -> Dataset:
  train_dir = os.path.join(root, config.train_split)
  val_dir = os.path.join(root, config.val_split)
  _need_dir(train_dir, spec, CLS_LAYOUT)
  _need_dir(val_dir, spec, CLS_LAYOUT)
  classes = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d))
                   and not d.startswith("."))
  if len(classes) < 2:
    raise DatasetError(f"config.dataset {spec!r}: {train_dir} holds {len(classes)} class folder(s); a classifier "
                       f"needs at least 2 (expected {CLS_LAYOUT})")
  index = {c: i for i, c in enumerate(classes)}
  splits = {}
  for name, d in ((config.train_split, train_dir), (config.val_split, val_dir)):
    images, labels = [], []
    for c in sorted(x for x in os.listdir(d) if os.path.isdir(os.path.join(d, x)) and not x.startswith(".")):
      if c not in index:
        raise DatasetError(f"class folder {os.path.join(d, c)}: class {c!r} is not among the training classes "
                           f"({train_dir})")
      files = _list_images(os.path.join(d, c))
      if not files:
        raise DatasetError(f"class folder {os.path.join(d, c)} holds no images")
      images += files
      labels += [index[c]] * len(files)
    if not images:
      raise DatasetError(f"config.dataset {spec!r}: {d} has no class folders (expected {CLS_LAYOUT})")
    splits[name] = FileSplit(name, images, labels, "classification")
    progress = Progress(f"checking {name} images", len(images), "images", log)
    for f in images:
      _open_image(f, "image")
      progress.update(1)
  return Dataset(spec, "classification", splits[config.train_split], splits[config.val_split], tuple(classes))


def _folder_segmentation(root, spec, config, log=print) -> Dataset:
  splits, top = {}, -1
  names_file = os.path.join(root, "class_names.txt")
  class_names = None
  if os.path.isfile(names_file):
    with open(names_file) as f:
      class_names = tuple(line.strip() for line in f if line.strip())
  num_classes = len(class_names) if class_names else (int(config.num_classes) if config.num_classes > 0 else None)
  for name in (config.train_split, config.val_split):
    img_dir, mask_dir = os.path.join(root, name, "images"), os.path.join(root, name, "masks")
    _need_dir(img_dir, spec, SEG_LAYOUT)
    _need_dir(mask_dir, spec, SEG_LAYOUT)
    masks = {}
    for m in _list_images(mask_dir):
      masks.setdefault(os.path.splitext(os.path.basename(m))[0], m)
    images = _list_images(img_dir)
    if not images:
      raise DatasetError(f"config.dataset {spec!r}: {img_dir} holds no images")
    targets = []
    for im in images:
      stem = os.path.splitext(os.path.basename(im))[0]
      if stem not in masks:
        raise DatasetError(f"image {im} has no mask: no file {stem}.* in {mask_dir}")
      targets.append(masks[stem])
    splits[name] = FileSplit(name, images, targets, "segmentation")
    top = max(top, _check_segmentation(splits[name], num_classes, int(config.ignore_label), log))
  if num_classes is None:
    num_classes = top + 1
  if num_classes < 2:
    raise DatasetError(f"config.dataset {spec!r}: the masks hold fewer than 2 classes")
  if not class_names:
    class_names = tuple(str(i) for i in range(num_classes))
  return Dataset(spec, "segmentation", splits[config.train_split], splits[config.val_split], class_names)


# ---------------------------------------------------------------------------
# tfds:NAME
# ---------------------------------------------------------------------------

class TfdsSplit:
  """One split of a prepared TFDS dataset, read in file order (no shuffling), never downloaded."""

  def __init__(self, builder, split, image_key, label_key, task):
    self.builder, self.name, self.image_key, self.label_key, self.task = builder, split, image_key, label_key, task
    self._len = int(builder.info.splits[split].num_examples)

  def __len__(self):
    return self._len

  def keys(self) -> List[str]:
    return [f"{self.builder.info.full_name}/{self.name}/{i}" for i in range(self._len)]

  def iterate(self):
    import tensorflow_datasets as tfds
    ds = self.builder.as_dataset(split=self.name, shuffle_files=False)
    for i, ex in enumerate(tfds.as_numpy(ds)):
      image = np.asarray(ex[self.image_key])
      if image.ndim == 2:
        image = image[..., None]
      if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
      target = ex[self.label_key]
      if self.task == "segmentation":
        target = np.asarray(target).astype(np.int32)
        if target.ndim == 3:
          target = target[..., 0]
        if target.shape != image.shape[:2]:
          raise DatasetError(f"tfds {self.builder.info.full_name} {self.name}[{i}]: mask {target.shape} and image "
                             f"{image.shape[:2]} differ in size")
      else:
        target = int(target)
      yield image.astype(np.uint8), target


def _tfds(name, spec, task, config) -> Dataset:
  import tensorflow_datasets as tfds  # slow import: only for tfds:
  data_dir = config.tfds_data_dir or None
  where = data_dir or "TFDS's default data_dir"
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # DatasetNotFoundError and friends
    raise DatasetError(f"config.dataset {spec!r}: no prepared TFDS dataset {name!r} under {where} "
                       f"({type(e).__name__}); eval.py never downloads: prepare it with `tfds build` first") from None
  if not builder.is_prepared():
    raise DatasetError(f"config.dataset {spec!r}: {name} is not prepared under {where}; eval.py never downloads: "
                       "prepare it with `tfds build` first")
  splits = {}
  for split in (config.train_split, config.val_split):
    if split not in builder.info.splits:
      raise DatasetError(f"config.{'train' if split == config.train_split else 'val'}_split {split!r}: tfds {name} "
                         f"has the splits {sorted(builder.info.splits)}")
  for key in (config.tfds_image_key, config.tfds_label_key):
    if key not in builder.info.features:
      raise DatasetError(f"config.tfds_{'image' if key == config.tfds_image_key else 'label'}_key {key!r}: tfds {name} "
                         f"has the features {sorted(builder.info.features)}")
  label = builder.info.features[config.tfds_label_key]
  if hasattr(label, "names"):
    class_names = tuple(label.names)
  elif config.num_classes > 0:
    class_names = tuple(str(i) for i in range(int(config.num_classes)))
  else:
    raise DatasetError(f"config.num_classes: tfds {name}'s {config.tfds_label_key!r} has no class names; set "
                       "config.num_classes")
  for split in (config.train_split, config.val_split):
    splits[split] = TfdsSplit(builder, split, config.tfds_image_key, config.tfds_label_key, task)
  return Dataset(spec, task, splits[config.train_split], splits[config.val_split], class_names)


# ---------------------------------------------------------------------------

def open_dataset(spec: str, task: str, config, log=print) -> Dataset:
  """Parses `spec`, checks the layout and every file (file-based schemes), returns the two splits.

  config supplies train_split, val_split, ignore_label, num_classes (-1: from the data) and, for tfds:,
  tfds_data_dir, tfds_image_key, tfds_label_key. `log` receives the progress lines of the checks.
  """
  if task not in TASKS:
    raise DatasetError(f"config.task {task!r}: must be one of {TASKS}")
  scheme, arg = parse_spec(spec)
  if scheme == "tfds":
    return _tfds(arg, spec, task, config)
  root = os.path.abspath(os.path.expanduser(arg))
  if scheme == "voc":
    return _voc(root, spec, task, config, log)
  if not os.path.isdir(root):
    raise DatasetError(f"config.dataset {spec!r}: {root} does not exist")
  if task == "classification":
    return _folder_classification(root, spec, config, log)
  return _folder_segmentation(root, spec, config, log)


def split_fingerprint(split) -> List[Tuple[str, int, int]]:
  """What identifies a split's content for the feature cache: (path, size, mtime) per file, or TFDS keys."""
  if isinstance(split, FileSplit):
    out = []
    for i, path in enumerate(split.images):
      paths = [path] + ([split.targets[i]] if split.task == "segmentation" else [])
      for p in paths:
        st = os.stat(p)
        out.append((os.path.abspath(p), int(st.st_size), int(st.st_mtime_ns)))
      if split.task == "classification":
        out.append(("label", int(split.targets[i]), 0))
    return out
  return [(split.builder.info.full_name, split.name, len(split))]
