"""AlexNet-BN CMP on YFCC, 16 GPUs, 70k iterations (PASCAL VOC hyperparameters).

Original: experiments/rep_learning/alexnet_yfcc_voc_16gpu_70k/config.yaml (reference §5).
Paper Table A, CMP (1.26M): 42.9% mIoU on VOC2012 after fine-tuning.

Full scale (16 accelerators, per-device batch 12, global batch 192):
  python train.py --config configs/alexnet_yfcc_voc_16gpu_70k.py --workdir runs/alexnet_yfcc_voc_16gpu_70k
Data: YFCC frames + LiteFlowNet flows in the original layout, data/yfcc/{UnsupVideo_Frames,flow_origin,lists}.
"""

from cmp_jax import config_lib


def get_config():
  c = config_lib.base()
  c.model.image_encoder = "alexnet_fcn_32x"
  c.model.sparse_encoder = "shallownet32x"
  c.model.flow_decoder = "MotionDecoderPlain"
  c.model.skip_layer = False
  c.model.decoder_combo = (1, 2, 4)

  c.data.data_root = "data/yfcc"
  c.data.train_source = ("data/yfcc/lists/train.txt",)
  c.data.val_source = ("data/yfcc/lists/val.txt",)
  c.data.flow_file_type = "jpg"
  c.data.short_size = 416
  c.data.crop_size = (384, 384)
  c.data.sample_strategy = ("grid", "watershed")
  c.data.sample_bg_ratio = 0.00015625
  c.data.nms_ks = 41
  c.data.max_num_guide = 150

  c.batch_size = 12  # per device; the original ran 16 GPUs
  c.total_iter = 70000
  c.optimizer.lr = 0.1
  c.optimizer.lr_steps = (40000, 60000)
  c.optimizer.lr_mults = (0.1, 0.1)
  c.val_freq = 10000
  c.save_freq = 10000
  c.tensorboard = True
  return c
