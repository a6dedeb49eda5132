"""A tiny dataset in the original's layout and a tiny config, for the training tests.

Frames are smooth random textures; the second frame is not used by CMP. Each flow is a smooth field (a few
Gaussian blobs moving by up to 8 px plus a global drift), stored as the original's two 8-bit JPEG planes.
"""

import os

import numpy as np

from cmp_jax import config_lib
from cmp_jax.data import formats

HEIGHT, WIDTH = 40, 48


def _smooth(rng, h, w, c, cells=4):
  import cv2
  small = rng.uniform(0, 1, size=(cells, cells, c)).astype(np.float32)
  return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, c)


def write_dataset(root, n_train=12, n_val=5, seed=0):
  """Writes frames, jpg flows and lists/{train,val}.txt under `root`; returns `root`."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
  lines = {"train": [], "val": []}
  for split, n in (("train", n_train), ("val", n_val)):
    for i in range(n):
      name = f"{split}_{i:03d}"
      img = (255 * np.clip(_smooth(rng, HEIGHT, WIDTH, 3, 6), 0, 1)).astype(np.uint8)
      flow = np.zeros((HEIGHT, WIDTH, 2), np.float32) + rng.uniform(-2, 2, size=2).astype(np.float32)
      for _ in range(3):
        cy, cx = rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 8.0 ** 2))
        flow += blob[..., None] * rng.uniform(-8, 8, size=2).astype(np.float32)
      px, py = formats.encode_jpg_flow(flow)
      files = {f"frames/{name}_1.jpg": formats.encode_jpeg(img), f"frames/{name}_2.jpg": formats.encode_jpeg(img),
               f"flows/{name}_x.jpg": formats.encode_jpeg(px), f"flows/{name}_y.jpg": formats.encode_jpeg(py)}
      for rel, data in files.items():
        formats.atomic_write_bytes(os.path.join(root, rel), data)
      lines[split].append(formats.format_list_line(*list(files)[:2], list(files)[2:]))
  for split in lines:
    formats.write_list_file(os.path.join(root, "lists", f"{split}.txt"), lines[split])
  return root


def tiny_config(root, crop=32):
  """ResNet-18 + ShallowNet-8x + Plain decoder on 32x32 crops: the smallest model the decoder takes."""
  c = config_lib.base()
  c.model.image_encoder = "resnet18"
  c.model.sparse_encoder = "shallownet8x"
  c.model.decoder_combo = (1, 2, 4)
  c.data.data_root = root
  c.data.train_source = (os.path.join(root, "lists", "train.txt"),)
  c.data.val_source = (os.path.join(root, "lists", "val.txt"),)
  c.data.short_size = crop
  c.data.crop_size = (crop, crop)
  c.data.sample_strategy = ("grid",)
  c.data.sample_bg_ratio = 1.0 / 64  # a guidance point every 8 px
  c.data.nms_ks = 5
  c.data.num_threads = 1
  c.batch_size = 2
  c.total_iter = 6
  c.optimizer.lr = 0.05
  c.optimizer.lr_steps = (4,)
  c.optimizer.lr_mults = (0.1,)
  c.print_freq = 2
  c.val_freq = 3
  c.save_freq = 2
  c.keep_checkpoints = 2
  c.vis_num = 2
  c.initial_val = False
  return c


def overrides(config, prefix="--config."):
  """Command-line overrides that turn the named config file's settings into `config`'s (flat keys)."""
  out = []

  def walk(node, path):
    for k, v in node.items():
      key = f"{path}{k}"
      if hasattr(v, "items"):
        walk(v, key + ".")
      else:
        if isinstance(v, (tuple, list)):
          v = "(" + ",".join(repr(x) for x in v) + ("," if len(v) == 1 else "") + ")"
        out.append(f"{prefix}{key}={v}")

  walk(config, "")
  return out


def get_config(root):
  """`--config tests/train_fixture.py:DATA_ROOT` on the command line."""
  return tiny_config(root)
