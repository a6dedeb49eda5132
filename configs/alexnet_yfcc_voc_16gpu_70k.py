"""AlexNet-BN CMP on YFCC, 16 GPUs, 70k iterations (PASCAL VOC hyperparameters).

Original: experiments/rep_learning/alexnet_yfcc_voc_16gpu_70k/config.yaml (reference §5).
Paper Table A, CMP (1.26M): 42.9% mIoU on VOC2012 after fine-tuning.

Full scale (16 accelerators, per-device batch 12, global batch 192):
  python train.py --config configs/alexnet_yfcc_voc_16gpu_70k.py --workdir runs/alexnet_yfcc_voc_16gpu_70k
Data: YFCC frames + LiteFlowNet flows in the original layout, data/yfcc/{UnsupVideo_Frames,flow_origin,lists}.
"""

from cmp_jax import config_lib


def get_config():
  return config_lib.base()  # base() is this experiment
