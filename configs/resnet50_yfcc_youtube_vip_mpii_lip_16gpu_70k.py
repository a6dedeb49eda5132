"""ResNet-50 CMP on YFCC + YouTube9K + VIP + MPII, 16 GPUs, 70k iterations (LIP hyperparameters).

Original: experiments/rep_learning/resnet50_yfcc+youtube+vip+mpii_lip_16gpu_70k/config.yaml (reference §5).
Paper Table D, CMP (4.57M): 40.2 / 52.9 mIoU on LIP single / multi-person.

Full scale (16 accelerators, per-device batch 10, global batch 160):
  python train.py --config configs/resnet50_yfcc_youtube_vip_mpii_lip_16gpu_70k.py --workdir runs/resnet50_yfcc_youtube_vip_mpii_lip_16gpu_70k
Data: YFCC + YouTube9K + VIP + MPII lists (only YFCC was released; make the rest with python -m cmp_jax.data.prepare). Paths relative to data/.
"""

from cmp_jax import config_lib


def get_config():
  c = config_lib.base()
  c.batch_size = 10  # per device; the original ran 16 GPUs
  c.data.crop_size = (320, 320)
  c.data.data_root = 'data'
  c.data.max_num_guide = -1
  c.data.nms_ks = 15
  c.data.train_source = ('data/yfcc/lists/train.txt', 'data/youtube9000/lists/train.txt',
                         'data/VIP/lists/train.txt', 'data/MPII/lists/train.txt')
  c.model.image_encoder = 'resnet50'
  c.model.sparse_encoder = 'shallownet8x'
  return c
