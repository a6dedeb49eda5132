"""The PyTorch definitions of the original networks: parameter counts, key layout, shapes."""

import pytest

torch = pytest.importorskip("torch")

from cmp_jax import config_lib  # noqa: E402
from cmp_jax import torch_models as tm  # noqa: E402

torch.set_num_threads(1)


# Reference Appendix B: weights, biases and BN gamma/beta, no running statistics.
@pytest.mark.parametrize("build, count", [
    (lambda: tm.alexnet_fcn_32x(256), 31_037_760),
    (lambda: tm.resnet50(256), 24_032_576),
    (lambda: tm.shallownet8x(16), 4_000),
    (lambda: tm.shallownet32x(16), 4_000),
    (lambda: tm.MotionDecoderPlain(272, 198, (1, 2, 4)), 1_460_934),
    (lambda: tm.MotionDecoderSkipLayer(272, 198), 4_479_846),
    (lambda: tm.build_torch_model(config_lib.model_config("alexnet_fcn_32x", "shallownet32x")), 32_502_694),
    (lambda: tm.build_torch_model(config_lib.model_config("resnet50", "shallownet8x")), 25_497_510),
    (lambda: tm.build_torch_model(config_lib.model_config("resnet50", "shallownet8x", "MotionDecoderSkipLayer")), 28_516_422),
], ids=["alexnet", "resnet50", "shallownet8x", "shallownet32x", "plain", "skiplayer", "alexnet+plain",
        "r50+plain", "r50+skiplayer"])
def test_parameter_counts(build, count):
  assert tm.count_parameters(build()) == count


def test_state_dict_keys_match_the_original_layout():
  sd = tm.build_torch_model(config_lib.model_config("alexnet_fcn_32x", "shallownet32x")).state_dict()
  keys = set(sd)
  for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"):
    assert {f"image_encoder.{name}.0.weight", f"image_encoder.{name}.0.bias",
            f"image_encoder.{name}.1.running_var", f"image_encoder.{name}.1.num_batches_tracked"} <= keys
  assert {"image_encoder.conv8.weight", "image_encoder.conv8.bias"} <= keys
  assert {f"flow_encoder.features.{i}.weight" for i in (0, 1, 4, 5)} <= keys
  assert {f"flow_decoder.decoder1.{i}.weight" for i in (0, 1, 3, 4)} <= keys
  assert {f"flow_decoder.decoder{c}.{i}.weight" for c in (2, 4) for i in (1, 2, 4, 5)} <= keys
  assert not any(k.startswith("flow_decoder.decoder8") for k in keys)
  assert sd["image_encoder.conv1.0.weight"].shape == (96, 3, 11, 11)
  assert sd["image_encoder.fc6.0.weight"].shape == (4096, 256, 3, 3)

  sd = tm.build_torch_model(config_lib.model_config("resnet50", "shallownet8x", "MotionDecoderSkipLayer")).state_dict()
  keys = set(sd)
  assert {"image_encoder.conv1.weight", "image_encoder.bn1.running_mean", "image_encoder.layer1.0.downsample.0.weight",
          "image_encoder.layer4.2.bn3.weight", "image_encoder.conv5.weight", "image_encoder.conv5.bias"} <= keys
  assert "image_encoder.conv1.bias" not in keys and "image_encoder.fc.weight" not in keys
  assert {f"flow_decoder.decoder1.{i}.weight" for i in (0, 1, 3, 4, 6, 7)} <= keys
  assert {f"flow_decoder.decoder{c}.{i}.weight" for c in (2, 4, 8) for i in (1, 2, 4, 5, 7, 8)} <= keys
  for name in ("fusion8", "skipconv4", "fusion4", "skipconv2", "fusion2"):
    assert {f"flow_decoder.{name}.0.weight", f"flow_decoder.{name}.1.weight"} <= keys
  # The released demo checkpoint: 72 BN layers (its 72 missing num_batches_tracked keys, reference §4.5).
  assert sum(k.endswith("num_batches_tracked") for k in keys) == 72


def test_resnet50_is_dilated_to_stride_8():
  enc = tm.resnet50()
  for blk in enc.layer3:
    assert blk.conv2.dilation == (2, 2) and blk.conv2.padding == (2, 2) and blk.conv2.stride == (1, 1)
  for blk in enc.layer4:
    assert blk.conv2.dilation == (4, 4) and blk.conv2.padding == (4, 4) and blk.conv2.stride == (1, 1)
  assert enc.layer3[0].downsample[0].stride == (1, 1) and enc.layer4[0].downsample[0].stride == (1, 1)
  assert enc.layer2[0].conv2.stride == (2, 2) and enc.layer2[0].downsample[0].stride == (2, 2)


@pytest.mark.parametrize("image_encoder, sparse_encoder, decoder, size, out", [
    ("alexnet_fcn_32x", "shallownet32x", "MotionDecoderPlain", 128, 4),
    ("alexnet_fcn_8x", "shallownet8x", "MotionDecoderPlain", 64, 8),
    ("resnet18", "shallownet8x", "MotionDecoderPlain", 64, 8),
    ("resnet34", "shallownet8x", "MotionDecoderPlain", 64, 8),
    ("resnet50", "shallownet8x", "MotionDecoderSkipLayer", 64, 32),
])
def test_forward_shapes(image_encoder, sparse_encoder, decoder, size, out):
  torch.manual_seed(0)
  model = tm.build_torch_model(config_lib.model_config(image_encoder, sparse_encoder, decoder)).eval()
  with torch.no_grad():
    logits = model(torch.randn(2, 3, size, size), torch.randn(2, 4, size, size))
  assert logits.shape == (2, 198, out, out)


def test_resnet_skip_features():
  enc = tm.resnet50().eval()
  img = torch.randn(1, 3, 64, 64)
  with torch.no_grad():
    out, (i, c1, l1) = enc(img, ret_feat=True)
  assert out.shape == (1, 256, 8, 8) and c1.shape == (1, 64, 32, 32) and l1.shape == (1, 256, 16, 16)
  assert i is img


def test_build_accepts_a_whole_config():
  c = config_lib.base()
  assert tm.count_parameters(tm.build_torch_model(c)) == 32_502_694
