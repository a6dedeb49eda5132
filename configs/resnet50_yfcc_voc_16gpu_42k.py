"""ResNet-50 CMP on YFCC, 16 GPUs, 42k iterations (PASCAL VOC hyperparameters).

Original: experiments/rep_learning/resnet50_yfcc_voc_16gpu_42k/config.yaml (reference §5).
Paper Table B: 59.0% mIoU on VOC2012.

Full scale (16 accelerators, per-device batch 10, global batch 160):
  python train.py --config configs/resnet50_yfcc_voc_16gpu_42k.py --workdir runs/resnet50_yfcc_voc_16gpu_42k
Data: YFCC frames + LiteFlowNet flows in the original layout, data/yfcc/{UnsupVideo_Frames,flow_origin,lists}.
"""

from cmp_jax import config_lib


def get_config():
  c = config_lib.base()
  c.batch_size = 10  # per device; the original ran 16 GPUs
  c.data.crop_size = (320, 320)
  c.data.max_num_guide = -1
  c.data.nms_ks = 67
  c.data.sample_bg_ratio = 3.629e-05
  c.model.image_encoder = 'resnet50'
  c.model.sparse_encoder = 'shallownet8x'
  c.optimizer.lr_steps = (24000, 36000)
  c.total_iter = 42000
  return c
