"""AlexNet-BN CMP on YFCC + YouTube9K, 16 GPUs, 140k iterations.

Original: experiments/rep_learning/alexnet_yfcc+youtube_voc_16gpu_140k/config.yaml (reference §5).
Paper Table A, CMP (3.22M): 44.5% mIoU on VOC2012. The paper's K=81, G=200 sampler.

Full scale (16 accelerators, per-device batch 12, global batch 192):
  python train.py --config configs/alexnet_yfcc_youtube_voc_16gpu_140k.py --workdir runs/alexnet_yfcc_youtube_voc_16gpu_140k
Data: YFCC + YouTube9K lists (YouTube9K was never released; make it with python -m cmp_jax.data.prepare). Paths in the lists are relative to data/.
"""

from cmp_jax import config_lib


def get_config():
  c = config_lib.base()
  c.data.data_root = 'data'
  c.data.nms_ks = 81
  c.data.sample_bg_ratio = 2.5e-05
  c.data.train_source = ('data/yfcc/lists/train.txt', 'data/youtube9000/lists/train.txt')
  c.optimizer.lr_steps = (80000, 120000)
  c.total_iter = 140000
  return c
