"""One training sample as the original loads it (`dataset.py` / `utils/data_utils.py` of CMP, reference §3.2-§3.4).

A reference, not for use (see `cmp_jax.original`): tests/test_pipeline.py checks `cmp_jax.data.pipeline`
against it (same frames, same RandomState: same crop, same flow, same guidance), and
benchmarks/data_pipeline.py times the pipeline against it. It does what the original's
McImageFlowDataset.__getitem__ does for files on disk with jpg flows and no augmentation: decodes both
frames and both flow planes with PIL, resizes the whole frames (PIL bicubic) and the whole flow (cv2), pads
and crops, normalises both frames, and samples guidance with the original's sampler
(`cmp_jax.original.sampler`).
"""

import cv2
import numpy as np
from PIL import Image, ImageOps

from cmp_jax.original import sampler

# torchvision Normalize of the original's configs, in 0..255 units.
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def load_sample(entry, rs, train=True, short_size=416, crop_size=(384, 384), strategy=("grid", "watershed"),
                bg_ratio=1.5625e-4, nms_ks=41, max_num_guide=150):
  """One sample as the original's McImageFlowDataset.__getitem__ (file system, jpg flows, no aug).

  Args:
    entry: a `cmp_jax.data.formats.ListEntry` of a jpg list (img1, img2, flow = (flow_x, flow_y) paths).
    rs: the np.random.RandomState for the crop offsets and the sampler, drawn in the original's order.

  Returns (img1, sparse_flow, mask, flow, img2) as HWC numpy arrays (the original returns CHW tensors).
  """
  flowx = np.array(Image.open(entry.flow[0])).astype(np.float32) / 255 * 100 - 50
  flowy = np.array(Image.open(entry.flow[1])).astype(np.float32) / 255 * 100 - 50
  flow = np.concatenate((flowx[:, :, None], flowy[:, :, None]), axis=2)
  with Image.open(entry.img1) as im:
    img1 = im.convert("RGB")
  with Image.open(entry.img2) as im:
    img2 = im.convert("RGB")
  assert img1.height == flow.shape[0] and img1.width == flow.shape[1]
  # image_flow_resize
  w, h = img1.width, img1.height
  if w < h:
    neww, newh = short_size, int(short_size / float(w) * h)
  else:
    neww, newh = int(short_size / float(h) * w), short_size
  img1 = img1.resize((neww, newh), Image.BICUBIC)
  img2 = img2.resize((neww, newh), Image.BICUBIC)
  flow = cv2.resize(flow.copy(), (neww, newh), interpolation=cv2.INTER_LINEAR) * (float(newh) / h)
  # image_flow_crop
  ch, cw = crop_size
  pad_h, pad_w = max(ch - img1.height, 0), max(cw - img1.width, 0)
  if pad_h > 0 or pad_w > 0:
    ph2, pw2 = int(pad_h / 2), int(pad_w / 2)
    expand = np.zeros((img1.height + pad_h, img1.width + pad_w, 2), dtype=np.float32)
    expand[ph2:ph2 + img1.height, pw2:pw2 + img1.width, :] = flow
    flow = expand
    border = (pw2, ph2, pad_w - pw2, pad_h - ph2)
    img1 = ImageOps.expand(img1, border=border, fill=(0, 0, 0))
    img2 = ImageOps.expand(img2, border=border, fill=(0, 0, 0))
  if train:
    hoff = int(rs.rand() * (img1.height - ch))
    woff = int(rs.rand() * (img1.width - cw))
  else:
    hoff, woff = (img1.height - ch) // 2, (img1.width - cw) // 2
  img1 = img1.crop((woff, hoff, woff + cw, hoff + ch))
  img2 = img2.crop((woff, hoff, woff + cw, hoff + ch))
  flow = flow[hoff:hoff + ch, woff:woff + cw, :]
  # to tensor + Normalize
  img1 = (np.array(img1).astype(np.float32) - MEAN) / STD
  img2 = (np.array(img2).astype(np.float32) - MEAN) / STD
  sparse, mask = sampler.flow_sampler(flow, strategy, bg_ratio, nms_ks, max_num_guide, rs)
  return img1, sparse, mask.astype(np.float32), flow, img2
