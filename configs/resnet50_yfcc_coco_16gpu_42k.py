"""ResNet-50 CMP on YFCC, 16 GPUs, 42k iterations (COCO hyperparameters: 333 -> 256 crops).

Original: experiments/rep_learning/resnet50_yfcc_coco_16gpu_42k/config.yaml (reference §5).
Paper Table C: 32.3 det / 29.8 seg mAP on COCO 2017.

Full scale (16 accelerators, per-device batch 16, global batch 256):
  python train.py --config configs/resnet50_yfcc_coco_16gpu_42k.py --workdir runs/resnet50_yfcc_coco_16gpu_42k
Data: YFCC frames + LiteFlowNet flows in the original layout, data/yfcc/{UnsupVideo_Frames,flow_origin,lists}.
"""

from cmp_jax import config_lib


def get_config():
  c = config_lib.base()
  c.batch_size = 16  # per device; the original ran 16 GPUs
  c.data.crop_size = (256, 256)
  c.data.max_num_guide = -1
  c.data.nms_ks = 49
  c.data.sample_bg_ratio = 5.632e-05
  c.data.short_size = 333
  c.model.image_encoder = 'resnet50'
  c.model.sparse_encoder = 'shallownet8x'
  c.optimizer.lr_steps = (24000, 36000)
  c.total_iter = 42000
  return c
