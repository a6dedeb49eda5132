"""ResNet-50 + skip-layer decoder on VIP + MPII: the demo / semi-automatic annotation model.

Original: experiments/semiauto_annot/resnet50_vip+mpii_liteflow/config.yaml (reference §5).
The released ckpt_iter_42000.pth.tar was trained with this config; load it with python -m cmp_jax.convert from-torch.

Full scale (8 accelerators, per-device batch 8, global batch 64):
  python train.py --config configs/resnet50_vip_mpii_liteflow.py --workdir runs/resnet50_vip_mpii_liteflow
Data: VIP + MPII frames with LiteFlowNet flows (lists never released; make them with python -m cmp_jax.data.prepare). Paths relative to data/.
"""

from cmp_jax import config_lib


def get_config():
  c = config_lib.base()
  c.batch_size = 8  # per device; the original ran 8 GPUs
  c.data.data_root = 'data'
  c.data.max_num_guide = -1
  c.data.sample_bg_ratio = 5.74e-05
  c.data.train_source = ('data/VIP/lists/train.txt', 'data/MPII/lists/train.txt')
  c.data.val_source = ('data/VIP/lists/randval.txt',)
  c.model.flow_decoder = 'MotionDecoderSkipLayer'
  c.model.image_encoder = 'resnet50'
  c.model.sparse_encoder = 'shallownet8x'
  c.optimizer.lr_steps = (24000, 36000)
  c.save_freq = 5000
  c.total_iter = 42000
  c.val_freq = 5000
  return c
