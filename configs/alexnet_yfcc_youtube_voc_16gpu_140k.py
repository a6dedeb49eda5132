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
  c.model.image_encoder = "alexnet_fcn_32x"
  c.model.sparse_encoder = "shallownet32x"
  c.model.flow_decoder = "MotionDecoderPlain"
  c.model.skip_layer = False
  c.model.decoder_combo = (1, 2, 4)

  c.data.data_root = "data"
  c.data.train_source = ("data/yfcc/lists/train.txt", "data/youtube9000/lists/train.txt")
  c.data.val_source = ("data/yfcc/lists/val.txt",)
  c.data.flow_file_type = "jpg"
  c.data.short_size = 416
  c.data.crop_size = (384, 384)
  c.data.sample_strategy = ("grid", "watershed")
  c.data.sample_bg_ratio = 2.5e-05
  c.data.nms_ks = 81
  c.data.max_num_guide = 150

  c.batch_size = 12  # per device; the original ran 16 GPUs
  c.total_iter = 140000
  c.optimizer.lr = 0.1
  c.optimizer.lr_steps = (80000, 120000)
  c.optimizer.lr_mults = (0.1, 0.1)
  c.val_freq = 10000
  c.save_freq = 10000
  c.tensorboard = True
  return c
