"""Every experiment config carries the original's settings (reference §5) and validates."""

import math
import os

import numpy as np
import pytest

from cmp_jax import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (image enc, sparse enc, decoder, short, crop, batch/device, iters, lr steps, nms_ks, bg_ratio,
#        max_num_guide, val/save freq, grid stride)  -- reference §5 table.
TABLE = {
    "alexnet_yfcc_voc_16gpu_70k": ("alexnet_fcn_32x", "shallownet32x", "MotionDecoderPlain", 416, 384, 12,
                                   70000, (40000, 60000), 41, 1.5625e-4, 150, 10000, 80),
    "alexnet_yfcc_voc_8gpu_140k": ("alexnet_fcn_32x", "shallownet32x", "MotionDecoderPlain", 416, 384, 12,
                                   140000, (80000, 120000), 41, 1.5625e-4, 150, 10000, 80),
    "alexnet_yfcc_youtube_voc_16gpu_140k": ("alexnet_fcn_32x", "shallownet32x", "MotionDecoderPlain", 416, 384,
                                            12, 140000, (80000, 120000), 81, 2.5e-5, 150, 10000, 200),
    "resnet50_yfcc_voc_16gpu_42k": ("resnet50", "shallownet8x", "MotionDecoderPlain", 416, 320, 10, 42000,
                                    (24000, 36000), 67, 3.629e-5, -1, 10000, 165),
    "resnet50_yfcc_coco_16gpu_42k": ("resnet50", "shallownet8x", "MotionDecoderPlain", 333, 256, 16, 42000,
                                     (24000, 36000), 49, 5.632e-5, -1, 10000, 133),
    "resnet50_yfcc_youtube_vip_mpii_lip_16gpu_70k": ("resnet50", "shallownet8x", "MotionDecoderPlain", 416, 320,
                                                     10, 70000, (40000, 60000), 15, 1.5625e-4, -1, 10000, 80),
    "resnet50_vip_mpii_liteflow": ("resnet50", "shallownet8x", "MotionDecoderSkipLayer", 416, 384, 8, 42000,
                                   (24000, 36000), 41, 5.74e-5, -1, 5000, 131),
}


def load(name):
  return config_lib.load_config(os.path.join(ROOT, "configs", name + ".py"))


def test_every_original_experiment_has_a_config():
  names = {f[:-3] for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py")}
  assert set(TABLE) <= names
  assert "quickstart" in names


@pytest.mark.parametrize("name", sorted(TABLE))
def test_config_matches_reference_table(name):
  c = load(name)
  (ienc, senc, dec, short, crop, bs, iters, steps, nms, bg, maxg, freq, stride) = TABLE[name]
  assert (c.model.image_encoder, c.model.sparse_encoder, c.model.flow_decoder) == (ienc, senc, dec)
  assert "skip_layer" not in c.model  # derived from the decoder
  assert (c.model.img_enc_dim, c.model.sparse_enc_dim, c.model.output_dim) == (256, 16, 198)
  assert tuple(c.model.decoder_combo) == (1, 2, 4)
  assert (c.model.nbins, c.model.fmax) == (99, 50.0)
  assert c.data.short_size == short and tuple(c.data.crop_size) == (crop, crop)
  assert c.batch_size == bs and c.total_iter == iters
  assert tuple(c.optimizer.lr_steps) == steps and tuple(c.optimizer.lr_mults) == (0.1, 0.1)
  assert (c.optimizer.lr, c.optimizer.momentum, c.optimizer.weight_decay) == (0.1, 0.9, 1e-4)
  assert not c.optimizer.warmup_steps
  assert c.data.nms_ks == nms and c.data.sample_bg_ratio == bg and c.data.max_num_guide == maxg
  assert int(math.sqrt(1 / c.data.sample_bg_ratio)) == stride
  assert tuple(c.data.sample_strategy) == ("grid", "watershed")
  assert c.data.flow_file_type == "jpg"
  assert not any((c.data.aug_flip, c.data.aug_reverse, c.data.aug_scale, c.data.aug_rotate))
  assert c.val_freq == freq and c.save_freq == freq
  assert tuple(c.data.image_mean) == (123.675, 116.28, 103.53)
  assert tuple(c.data.image_std) == (58.395, 57.12, 57.375)
  config_lib.validate(c, check_paths=False)


@pytest.mark.parametrize("key,value,message", [
    ("data.crop_size", (100, 100), "multiples of 8"),
    ("model.image_encoder", "vgg16", "model.image_encoder"),
    ("model.nbins", 98, "nbins odd"),
    ("data.nms_ks", 40, "odd"),
    ("optimizer.lr_mults", (0.1,), "lr_steps"),
    ("model.sparse_encoder", "shallownet32x", "must match"),
])
def test_bad_values_name_the_key(key, value, message):
  c = load("resnet50_yfcc_voc_16gpu_42k")
  section, field = key.split(".")
  c[section][field] = value
  with pytest.raises(config_lib.ConfigError, match=message) as err:
    config_lib.validate(c, check_paths=False)
  assert key.split(".")[0] in str(err.value)


def test_missing_list_file_is_named(tmp_path):
  c = load("alexnet_yfcc_voc_16gpu_70k")
  c.data.data_root = str(tmp_path)
  c.data.train_source = (str(tmp_path / "nope.txt"),)
  with pytest.raises(config_lib.ConfigError, match="nope.txt"):
    config_lib.validate(c)


def test_alexnet_crop_must_be_multiple_of_32():
  c = load("alexnet_yfcc_voc_16gpu_70k")
  c.data.crop_size = (384, 360)
  with pytest.raises(config_lib.ConfigError, match="multiples of 32"):
    config_lib.validate(c, check_paths=False)


@pytest.mark.parametrize("crop, stride, nms_ks", [(384, 200, 81), (320, 167, 67), (160, 83, 33), (128, 67, 27)])
def test_paper_density_scales_with_the_crop(crop, stride, nms_ks):
  ratio, ks = config_lib.paper_density((crop, crop))
  assert int(math.sqrt(1 / ratio)) == stride and ks == nms_ks  # the sampler's grid stride is int(sqrt(1/r))
  c = config_lib.with_paper_density(load("quickstart"))
  assert tuple(c.data.sample_strategy) == ("grid", "watershed") and c.data.max_num_guide == -1
  assert load("quickstart").data.nms_ks == 15  # the original config is left as it was


def test_paper_density_gives_about_13_points_per_crop():
  """The paper's ~13.5 points per 384x384 image, at the quick start's 128 crop, on the shipped sample."""
  from cmp_jax import sampling
  from cmp_jax.data import formats
  sample = os.path.join(ROOT, "data", "sample")
  ratio, ks = config_lib.paper_density((128, 128))
  counts = []
  for e in formats.read_list_files(os.path.join(sample, "lists", "val.txt"), sample, "jpg"):
    flow = formats.read_jpg_flow(*e.flow)[16:144, 16:144]
    rows, _ = sampling.guidance_points(flow, ("grid", "watershed"), ratio, ks, -1, np.random.RandomState(0))
    counts.append(len(rows))
  assert 5 <= np.mean(counts) <= 30, counts


def test_motion_curriculum_stages_validate_and_chain():
  path = os.path.join(ROOT, "configs", "motion_cpu.py")
  stages = [config_lib.load_config(path + (f":{s}" if s else "")) for s in ("stage1", "stage2", "stage3", None, "smoke")]
  for c in stages:
    config_lib.validate(c, check_paths=False)
  # One architecture throughout, so each stage can start from the previous one's weights.
  assert len({tuple(map(str, (c.model[k] for k in ("image_encoder", "sparse_encoder", "flow_decoder", "fmax"))))
              for c in stages}) == 1
  assert [c.model.freeze_bn for c in stages[:3]] == [False, True, True]
  assert stages[3].to_dict() == stages[2].to_dict()  # no arg: the last stage
  assert stages[4].total_iter == 20 and stages[4].data.train_source == stages[2].data.train_source
  with pytest.raises(ValueError, match="unknown variant"):
    config_lib.load_config(path + ":stage4")
