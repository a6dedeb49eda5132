"""Quick start: CMP (AlexNet-BN + Plain decoder) on the small real sample shipped in data/sample.

Small enough to train on a 2-core CPU in minutes. Same architecture, loss and
sampler as the original AlexNet configs; only the data, crop, batch and
schedule are scaled down (the training issue tunes these).

  python train.py --config configs/quickstart.py --workdir runs/quickstart
"""

from cmp_jax import config_lib


def get_config():
  c = config_lib.base()
  c.model.image_encoder = "alexnet_fcn_32x"
  c.model.sparse_encoder = "shallownet32x"
  c.model.flow_decoder = "MotionDecoderPlain"
  c.model.skip_layer = False
  c.model.decoder_combo = (1, 2, 4)

  c.data.data_root = "data/sample"
  c.data.train_source = ("data/sample/lists/train.txt",)
  c.data.val_source = ("data/sample/lists/val.txt",)
  c.data.flow_file_type = "jpg"
  c.data.short_size = 160
  c.data.crop_size = (128, 128)
  c.data.sample_strategy = ("grid", "watershed")
  c.data.sample_bg_ratio = 1.5625e-4
  c.data.nms_ks = 15
  c.data.max_num_guide = 150

  c.batch_size = 8
  c.total_iter = 600
  c.optimizer.lr = 0.1
  c.optimizer.lr_steps = (400, 500)
  c.optimizer.lr_mults = (0.1, 0.1)
  c.print_freq = 20
  c.val_freq = 200
  c.save_freq = 200
  c.vis_num = 4
  return c
