"""AlexNet-BN CMP on YFCC, 8 GPUs, 140k iterations (same samples as the 16-GPU 70k run at half the batch).

Original: experiments/rep_learning/alexnet_yfcc_voc_8gpu_140k/config.yaml (reference §5).
Paper Table A, CMP (1.26M): 42.9% mIoU on VOC2012 after fine-tuning.

Full scale (8 accelerators, per-device batch 12, global batch 96):
  python train.py --config configs/alexnet_yfcc_voc_8gpu_140k.py --workdir runs/alexnet_yfcc_voc_8gpu_140k
Data: YFCC frames + LiteFlowNet flows in the original layout, data/yfcc/{UnsupVideo_Frames,flow_origin,lists}.
"""

from cmp_jax import config_lib


def get_config():
  c = config_lib.base()
  c.optimizer.lr_steps = (80000, 120000)
  c.total_iter = 140000
  return c
