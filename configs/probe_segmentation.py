r"""Linear probe for semantic segmentation (eval.py): a 1x1 head on the frozen image encoder, mIoU.

  # PASCAL VOC 2012 (train 1,464 / val 1,449 images), the quick start's encoder against random init:
  python eval.py --config configs/probe_segmentation.py --workdir runs/probe_voc_quickstart \
      --config.dataset=voc:data/VOCdevkit/VOC2012 --config.checkpoint=runs/quickstart
  # the shipped fixtures (5 street-video frames with car/truck masks), seconds on a CPU:
  python eval.py --config configs/probe_segmentation.py:fixture --workdir /tmp/probe_seg \
      --config.checkpoint=runs/quickstart

The encoder's architecture (config.model.*), its input normalisation (data.image_mean/std) and its
training crop (data.crop_size, the default image size) come from the checkpoint's config.json when there
is one; a `--config.model.KEY=...` on the command line wins over it. Unless config.checkpoint is 'random',
the same probe also runs on a random initialisation of the same architecture (seed config.seed).

Protocol: images resized to image_size x image_size (PIL bicubic, small images upscaled), features of
`layers` from the frozen encoder in eval mode (stop_gradient), cached in WORKDIR/features/; per-channel
standardisation; a 1x1 linear layer whose logits are upsampled (bilinear) to the label resolution
(label_size x label_size, masks resized with nearest neighbour), cross-entropy ignoring label 255; AdamW,
cosine decay, zero init; mIoU from one confusion matrix summed over the whole val split.
"""

import ml_collections

from cmp_jax import config_lib


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.task = "segmentation"
  # voc:PATH (VOC 2012 devkit folder), folder:PATH ({train,val}/images + {train,val}/masks), tfds:NAME.
  c.dataset = "voc:data/VOCdevkit/VOC2012"
  # A training workdir, a `convert from-torch` output folder (or their checkpoints/ or a step folder), or 'random'.
  c.checkpoint = "random"
  c.train_split = "train"
  c.val_split = "val"
  c.num_classes = -1          # -1: VOC's 21, a folder's class_names.txt, else max label + 1
  c.ignore_label = 255
  c.tfds_data_dir = ""        # tfds: only; '' = TFDS's default data_dir. Never downloads.
  c.tfds_image_key = "image"
  c.tfds_label_key = "segmentation_mask"

  c.image_size = -1           # side of the square input; -1: the checkpoint's training crop (data.crop_size[0])
  c.label_size = -1           # side of the label grid the metrics are computed on; -1: image_size
  c.layers = ("out",)         # ResNet: stem layer1..layer4 out; AlexNet: conv1..conv5 fc6 fc7 out
  c.batch_size = 16           # feature extraction and evaluation batch
  c.seed = 0                  # random init of the encoder and the probe's data order

  c.probe = ml_collections.ConfigDict()
  c.probe.epochs = 20
  c.probe.batch_size = 16
  c.probe.lr = 1e-2
  c.probe.weight_decay = 0.0

  # The encoder when no config.json comes with the checkpoint (and for 'random'): the quick start's.
  base = config_lib.base()
  c.model = base.model
  c.model.image_encoder = "resnet18"
  c.model.sparse_encoder = "shallownet8x"
  c.data = ml_collections.ConfigDict()
  c.data.image_mean = base.data.image_mean
  c.data.image_std = base.data.image_std
  c.data.crop_size = (128, 128)

  if arg == "fixture":  # the 5 street-video frames shipped for the tests (tests/fixtures/README.md)
    c.dataset = "folder:tests/fixtures/street_seg"
    c.probe.epochs = 100
    c.probe.batch_size = 3
  elif arg:
    raise ValueError(f"configs/probe_segmentation.py: unknown argument {arg!r} (only 'fixture')")
  return c
