"""cmp_jax.models: parameter counts, names, shapes, init, BatchNorm, resizing, input checks.

Everything large runs under jax.eval_shape (no compute); the two real forwards are small.
"""

import functools
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmp_jax import config_lib, losses, models
from cmp_jax.models import layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = jax.random.PRNGKey(0)


def _spec(*shape, dtype=jnp.float32):
  return jax.ShapeDtypeStruct(shape, dtype)


def _shapes(module, *inputs, **kw):
  """(variables, output) shapes of module.init / module.apply, computed with eval_shape."""
  variables = jax.eval_shape(functools.partial(module.init, **kw), KEY, *inputs)
  out = jax.eval_shape(functools.partial(module.apply, **kw), variables, *inputs)
  return variables, out


def _cheap_variables(module, *inputs, **kw):
  """Variables for tests that need values but not the real init (no RNG compile: ~1 s less per layer on CPU)."""
  rng = np.random.RandomState(0)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return jnp.asarray(rng.randn(*leaf.shape).astype(np.float32) / math.sqrt(np.prod(leaf.shape[:-1])))
    value = {"scale": 1.0, "var": 1.0}.get(name, 0.0)
    return jnp.full(leaf.shape, value, leaf.dtype)

  shapes = jax.eval_shape(functools.partial(module.init, **kw), KEY, *inputs)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.lru_cache(maxsize=None)
def _model_shapes(image_encoder, decoder, size, batch=2):
  model = models.build_model(config_lib.model_config(image_encoder, flow_decoder=decoder))
  return _shapes(model, _spec(batch, size, size, 3), _spec(batch, size, size, 4))


def _resnet_count(block, stages, output_dim=256):
  """Parameter count of the dilated ResNet + conv5, from the architecture (torchvision layout)."""
  bn = lambda c: 2 * c
  total = 3 * 64 * 49 + bn(64)  # stem
  inplanes, expansion = 64, (1 if block == "basic" else 4)
  for planes, blocks, stride in zip((64, 128, 256, 512), stages, (1, 2, 1, 1)):
    for b in range(blocks):
      if block == "basic":
        total += inplanes * planes * 9 + bn(planes) + planes * planes * 9 + bn(planes)
      else:
        total += (inplanes * planes + bn(planes) + planes * planes * 9 + bn(planes)
                  + planes * planes * 4 + bn(planes * 4))
      if b == 0 and (stride != 1 or inplanes != planes * expansion):
        total += inplanes * planes * expansion + bn(planes * expansion)
      inplanes = planes * expansion
  return total + inplanes * output_dim + output_dim


# --------------------------------------------------------------------------------------------------
# Parameter counts (reference Appendix B)
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("build, inputs, count", [
    (lambda: models.alexnet_fcn_32x(256), (_spec(1, 64, 64, 3),), 31_037_760),
    (lambda: models.alexnet_fcn_8x(256), (_spec(1, 64, 64, 3),), 31_037_760),
    (lambda: models.resnet50(256), (_spec(1, 64, 64, 3),), 24_032_576),
    (lambda: models.resnet18(256), (_spec(1, 64, 64, 3),), _resnet_count("basic", (2, 2, 2, 2))),
    (lambda: models.resnet34(256), (_spec(1, 64, 64, 3),), _resnet_count("basic", (3, 4, 6, 3))),
    (lambda: models.resnet101(256), (_spec(1, 64, 64, 3),), _resnet_count("bottleneck", (3, 4, 23, 3))),
    (lambda: models.resnet152(256), (_spec(1, 64, 64, 3),), _resnet_count("bottleneck", (3, 8, 36, 3))),
    (lambda: models.shallownet8x(16), (_spec(1, 64, 64, 4),), 4_000),
    (lambda: models.shallownet32x(16), (_spec(1, 64, 64, 4),), 4_000),
    (lambda: models.MotionDecoderPlain(198, (1, 2, 4)), (_spec(1, 12, 12, 272),), 1_460_934),
    (lambda: models.MotionDecoderSkipLayer(198), (_spec(1, 8, 8, 272), (_spec(1, 64, 64, 3), _spec(1, 32, 32, 64),
                                                                          _spec(1, 16, 16, 256))), 4_479_846),
], ids=["alexnet32x", "alexnet8x", "resnet50", "resnet18", "resnet34", "resnet101", "resnet152", "shallownet8x",
        "shallownet32x", "plain124", "skiplayer"])
def test_module_parameter_counts(build, inputs, count):
  variables, _ = _shapes(build(), *inputs)
  assert models.count_params(variables["params"]) == count


def test_resnet_count_formula_matches_appendix_b():
  assert _resnet_count("bottleneck", (3, 4, 6, 3)) == 24_032_576
  # Known torchvision totals without fc, plus conv5 512 -> 256.
  assert _resnet_count("basic", (2, 2, 2, 2)) == 11_176_512 + 512 * 256 + 256
  assert _resnet_count("basic", (3, 4, 6, 3)) == 21_284_672 + 512 * 256 + 256


@pytest.mark.parametrize("image_encoder, decoder, count", [
    ("alexnet_fcn_32x", "MotionDecoderPlain", 32_502_694),
    ("resnet50", "MotionDecoderPlain", 25_497_510),
    ("resnet50", "MotionDecoderSkipLayer", 28_516_422),
])
def test_full_model_parameter_counts(image_encoder, decoder, count):
  variables, _ = _model_shapes(image_encoder, decoder, 128)
  assert models.count_params(variables["params"]) == count
  assert set(variables["params"]) == {"image_encoder", "flow_encoder", "flow_decoder"}


# One branch: conv 272->128 (3x3) + BN + conv 128->128 (3x3) + BN; the 1x1 head takes 128 channels per branch.
BRANCH = (272 * 128 * 9 + 128) + 2 * 128 + (128 * 128 * 9 + 128) + 2 * 128


@pytest.mark.parametrize("combo", [(1,), (1, 2, 4), (1, 2, 4, 8), (2, 8), (8, 2)])
def test_plain_decoder_combo_subsets(combo):
  variables, out = _shapes(models.MotionDecoderPlain(198, combo), _spec(1, 16, 16, 272))
  count = len(combo) * (BRANCH + 128 * 198) + 198
  assert models.count_params(variables["params"]) == count
  assert out.shape == (1, 16, 16, 198)
  assert sorted(variables["params"]) == sorted([f"decoder{c}_{i}" for c in combo
                                                for i in ((0, 1, 3, 4) if c == 1 else (1, 2, 4, 5))] + ["head"])
  if combo == (1, 2, 4):
    assert count == 1_460_934


def test_plain_decoder_concatenates_in_1_2_4_8_order():
  dec_a, dec_b = models.MotionDecoderPlain(198, (2, 8)), models.MotionDecoderPlain(198, (8, 2))
  x = jax.random.normal(KEY, (1, 8, 8, 272))
  variables = _cheap_variables(dec_a, x)
  np.testing.assert_array_equal(dec_a.apply(variables, x), dec_b.apply(variables, x))


def test_bn_layer_count_of_the_demo_model():
  variables, _ = _model_shapes("resnet50", "MotionDecoderSkipLayer", 128)
  n_bn = sum(1 for path, _ in jax.tree_util.tree_leaves_with_path(variables["batch_stats"])
             if path[-1].key == "mean")
  assert n_bn == 72  # the released demo checkpoint's BN layers


# --------------------------------------------------------------------------------------------------
# Parameter names (the contract's naming, mirroring the PyTorch state_dict)
# --------------------------------------------------------------------------------------------------

def test_parameter_names_alexnet_plain():
  variables, _ = _model_shapes("alexnet_fcn_32x", "MotionDecoderPlain", 128)
  p, s = variables["params"], variables["batch_stats"]
  assert p["image_encoder"]["conv1_0"]["kernel"].shape == (11, 11, 3, 96)
  assert p["image_encoder"]["conv1_0"]["bias"].shape == (96,)
  assert set(p["image_encoder"]["conv1_1"]) == {"scale", "bias"}
  assert set(s["image_encoder"]["conv1_1"]) == {"mean", "var"}
  assert p["image_encoder"]["fc6_0"]["kernel"].shape == (3, 3, 256, 4096)
  assert p["image_encoder"]["fc7_0"]["kernel"].shape == (1, 1, 4096, 4096)
  assert p["image_encoder"]["conv8"]["kernel"].shape == (1, 1, 4096, 256)
  assert "conv8" not in s["image_encoder"]
  assert sorted(p["image_encoder"]) == sorted([f"{n}_{i}" for n in ("conv1", "conv2", "conv3", "conv4", "conv5",
                                                                       "fc6", "fc7") for i in (0, 1)] + ["conv8"])
  assert sorted(p["flow_encoder"]) == ["features_0", "features_1", "features_4", "features_5"]
  assert p["flow_encoder"]["features_0"]["kernel"].shape == (5, 5, 4, 16)
  assert p["flow_decoder"]["decoder2_1"]["kernel"].shape == (3, 3, 272, 128)
  assert p["flow_decoder"]["decoder1_0"]["kernel"].shape == (3, 3, 272, 128)
  assert p["flow_decoder"]["head"]["kernel"].shape == (1, 1, 384, 198)


def test_parameter_names_resnet50_skiplayer():
  variables, _ = _model_shapes("resnet50", "MotionDecoderSkipLayer", 128)
  enc, dec = variables["params"]["image_encoder"], variables["params"]["flow_decoder"]
  assert set(enc) == {"conv1", "bn1", "conv5"} | {f"layer{i}_{j}" for i, n in zip((1, 2, 3, 4), (3, 4, 6, 3))
                                                   for j in range(n)}
  assert "bias" not in enc["conv1"] and enc["conv1"]["kernel"].shape == (7, 7, 3, 64)
  assert set(enc["conv5"]) == {"kernel", "bias"}
  assert set(enc["layer1_0"]) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample_0", "downsample_1"}
  assert set(enc["layer3_5"]) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3"}
  assert set(variables["batch_stats"]["image_encoder"]["layer3_5"]["bn2"]) == {"mean", "var"}
  assert enc["layer3_0"]["downsample_0"]["kernel"].shape == (1, 1, 512, 1024)
  assert set(dec) == ({f"decoder1_{i}" for i in (0, 1, 3, 4, 6, 7)}
                      | {f"decoder{c}_{i}" for c in (2, 4, 8) for i in (1, 2, 4, 5, 7, 8)}
                      | {f"{n}_{i}" for n in ("fusion8", "skipconv4", "fusion4", "skipconv2", "fusion2")
                         for i in (0, 1)} | {"head"})
  assert dec["fusion4_0"]["kernel"].shape == (3, 3, 384, 128)
  assert dec["fusion2_0"]["kernel"].shape == (3, 3, 160, 64)
  assert dec["head"]["kernel"].shape == (1, 1, 64, 198)


# --------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------

def _load_config(name):
  return config_lib.load_config(os.path.join(ROOT, "configs", name + ".py"))



CONFIGS = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py"))
# Decoder output side at 384 / 320 / 256 (Appendix B).
EXPECTED_LOGITS = {"alexnet_fcn_32x": {384: 12, 320: 10, 256: 8},
                   "resnet50": {384: 48, 320: 40, 256: 32},
                   "resnet18": {384: 48, 320: 40, 256: 32}}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_output_shapes(name):
  c = _load_config(name)
  model = models.build_model(c.model)
  variables = jax.eval_shape(functools.partial(model.init, train=False), KEY, _spec(1, 128, 128, 3),
                             _spec(1, 128, 128, 4))
  for size in (384, 320, 256):
    out = jax.eval_shape(model.apply, variables, _spec(2, size, size, 3), _spec(2, size, size, 4))
    side = size // 2 if c.model.flow_decoder == "MotionDecoderSkipLayer" else EXPECTED_LOGITS[c.model.image_encoder][size]
    assert out.shape == (2, side, side, 198) and out.dtype == jnp.dtype(c.model.dtype)  # the compute dtype
  h, w = c.data.crop_size
  out = jax.eval_shape(model.apply, variables, _spec(1, h, w, 3), _spec(1, h, w, 4))
  assert out.shape[0] == 1 and out.shape[-1] == 198


@pytest.mark.parametrize("build, side", [
    (models.alexnet_fcn_32x, 12), (models.alexnet_fcn_8x, 48), (models.resnet50, 48), (models.resnet18, 48),
    (models.resnet34, 48), (models.resnet101, 48)])
def test_image_encoder_feature_sizes_at_384(build, side):
  _, out = _shapes(build(256), _spec(1, 384, 384, 3))
  assert out.shape == (1, side, side, 256)


@pytest.mark.parametrize("build, side", [(models.shallownet8x, 48), (models.shallownet32x, 12)])
def test_sparse_encoder_feature_sizes_at_384(build, side):
  _, out = _shapes(build(16), _spec(1, 384, 384, 4))
  assert out.shape == (1, side, side, 16)


@pytest.mark.parametrize("size, branches", [(384, (48, 24, 12)), (320, (40, 20, 10)), (256, (32, 16, 8))])
def test_resnet_branch_sizes(size, branches):
  # Decoder branch resolutions (reference §1.6): pooled by 1, 2, 4 from the 1/8 features.
  _, feat = _shapes(models.resnet50(256), _spec(1, size, size, 3))
  sides = [(feat.shape[1] - c) // c + 1 for c in (1, 2, 4)]
  assert tuple(sides) == branches
  pooled = jax.eval_shape(lambda x: layers.max_pool(x, 4, 4), feat)
  assert pooled.shape[1] == branches[2]


def test_resnet_ret_feat():
  variables, (out, (img, conv1, layer1)) = _shapes(models.resnet50(256), _spec(2, 64, 96, 3), ret_feat=True)
  assert out.shape == (2, 8, 12, 256)
  assert img.shape == (2, 64, 96, 3) and conv1.shape == (2, 32, 48, 64) and layer1.shape == (2, 16, 24, 256)
  _, (out, (_, conv1, layer1)) = _shapes(models.resnet18(256), _spec(2, 64, 64, 3), ret_feat=True)
  assert out.shape == (2, 8, 8, 256) and conv1.shape == (2, 32, 32, 64) and layer1.shape == (2, 16, 16, 64)


def test_resnet_ret_feat_returns_the_input_image():
  enc = models.ResNet(models.resnet.BasicBlock, (1, 1, 1, 1), 8)
  x = jax.random.normal(KEY, (1, 16, 16, 3))
  variables = _cheap_variables(enc, x)
  _, (img, _, _) = jax.jit(functools.partial(enc.apply, ret_feat=True))(variables, x)
  np.testing.assert_array_equal(img, x)


@pytest.mark.parametrize("image_encoder", ["resnet18", "resnet34", "resnet101", "resnet152", "alexnet_fcn_8x"])
def test_other_encoders_build_into_cmp(image_encoder):
  model = models.build_model(config_lib.model_config(image_encoder))
  _, out = _shapes(model, _spec(2, 64, 64, 3), _spec(2, 64, 64, 4))
  assert out.shape == (2, 8, 8, 198)


def test_resnet18_skiplayer_works():
  _, out = _shapes(models.build_model(config_lib.model_config("resnet18", flow_decoder="MotionDecoderSkipLayer")), _spec(1, 64, 64, 3),
                   _spec(1, 64, 64, 4))
  assert out.shape == (1, 32, 32, 198)


def test_bfloat16_compute_keeps_float32_params():
  model = models.build_model(config_lib.model_config("resnet50", flow_decoder="MotionDecoderSkipLayer", dtype="bfloat16"))
  variables, out = _shapes(model, _spec(1, 64, 64, 3), _spec(1, 64, 64, 4))
  assert out.dtype == jnp.bfloat16 and out.shape == (1, 32, 32, 198)
  dtypes = {x.dtype for x in jax.tree_util.tree_leaves(variables)}
  assert dtypes == {jnp.dtype(jnp.float32)}


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------

def test_alexnet_needs_multiples_of_32():
  model = models.build_model(config_lib.model_config("alexnet_fcn_32x"))
  with pytest.raises(ValueError, match=r"400x384.*multiples of 32"):
    jax.eval_shape(model.init, KEY, _spec(1, 400, 384, 3), _spec(1, 400, 384, 4))
  with pytest.raises(ValueError, match="32"):
    jax.eval_shape(models.alexnet_fcn_32x().init, KEY, _spec(1, 100, 96, 3))


@pytest.mark.parametrize("image_encoder", ["resnet50", "alexnet_fcn_8x"])
def test_stride8_encoders_need_multiples_of_8(image_encoder):
  model = models.build_model(config_lib.model_config(image_encoder))
  with pytest.raises(ValueError, match=r"252x256.*multiples of 8"):
    jax.eval_shape(model.init, KEY, _spec(1, 252, 256, 3), _spec(1, 252, 256, 4))
  model.check_input((1, 256, 256, 3), (1, 256, 256, 4))  # fine


def test_too_small_inputs_and_mismatched_guidance_are_named():
  model = models.build_model(config_lib.model_config("alexnet_fcn_32x"))
  with pytest.raises(ValueError, match=r"64x64.*at least 128"):
    model.check_input((1, 64, 64, 3), (1, 64, 64, 4))
  with pytest.raises(ValueError, match="same batch size, height and width"):
    model.check_input((1, 128, 128, 3), (1, 128, 96, 4))
  with pytest.raises(ValueError, match=r"\[B, H, W, 4\]"):
    model.check_input((1, 128, 128, 3), (1, 128, 128, 2))
  with pytest.raises(ValueError, match="NHWC"):
    model.check_input((1, 3, 128, 128), (1, 128, 128, 4))
  skip = models.build_model(config_lib.model_config("resnet50", flow_decoder="MotionDecoderSkipLayer"))
  with pytest.raises(ValueError, match="at least 64"):
    skip.check_input((1, 32, 32, 3), (1, 32, 32, 4))


def test_build_model_rejects_inconsistent_configs():
  with pytest.raises(ValueError, match="ResNet"):
    models.build_model(config_lib.model_config("alexnet_fcn_32x", flow_decoder="MotionDecoderSkipLayer"))
  with pytest.raises(ValueError, match="downsamples by 8"):
    models.build_model(config_lib.model_config("alexnet_fcn_32x", sparse_encoder="shallownet8x"))
  with pytest.raises(ValueError, match="model.image_encoder"):
    models.build_model(config_lib.model_config("vgg16"))
  with pytest.raises(ValueError, match="combo"):
    jax.eval_shape(models.MotionDecoderPlain(198, (1, 3)).init, KEY, _spec(1, 8, 8, 272))


def test_alexnet_has_no_skip_features():
  with pytest.raises(ValueError, match="ResNet"):
    jax.eval_shape(functools.partial(models.alexnet_fcn_32x().init, ret_feat=True), KEY, _spec(1, 64, 64, 3))


# --------------------------------------------------------------------------------------------------
# Initialisation and the initial loss (reference §1.2)
# --------------------------------------------------------------------------------------------------

def test_conv_init_is_xavier_normal_gain_002():
  conv = layers.Conv(256, 3, padding=1)
  params = conv.init(KEY, jnp.zeros((1, 4, 4, 128)))["params"]
  k = np.asarray(params["kernel"])
  expected = 0.02 * math.sqrt(2.0 / (128 * 9 + 256 * 9))
  assert abs(k.std() / expected - 1) < 0.02 and abs(k.mean()) < 3 * expected / math.sqrt(k.size)
  np.testing.assert_array_equal(params["bias"], 0)


def test_batchnorm_init():
  variables = layers.BatchNorm(use_running_average=False).init(KEY, jnp.zeros((2, 4, 4, 4096)))
  scale = np.asarray(variables["params"]["scale"])
  assert abs(scale.mean() - 1) < 2e-3 and abs(scale.std() - 0.02) < 2e-3
  np.testing.assert_array_equal(variables["params"]["bias"], 0)
  np.testing.assert_array_equal(variables["batch_stats"]["mean"], 0)
  np.testing.assert_array_equal(variables["batch_stats"]["var"], 1)


@pytest.fixture(scope="module")
def initialised():
  """{image_encoder: (model, init_variables(...))} for the two families, shared by the tests below."""
  cache = {}

  def get(image_encoder, size):
    if image_encoder not in cache:
      model = models.build_model(config_lib.model_config(image_encoder))
      cache[image_encoder] = model, models.init_variables(model, jax.random.PRNGKey(3), size, size)
    return cache[image_encoder]
  return get


def test_fast_init_has_model_init_structure_and_distributions(initialised):
  model, fast = initialised("resnet50", 64)
  reference = jax.eval_shape(functools.partial(model.init, train=False), KEY, _spec(1, 64, 64, 3),
                             _spec(1, 64, 64, 4))
  assert jax.tree_util.tree_structure(fast) == jax.tree_util.tree_structure(reference)
  assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), fast) == \
      jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), reference)
  for path, leaf in jax.tree_util.tree_leaves_with_path(fast):
    name, leaf = path[-1].key, np.asarray(leaf)
    if name == "kernel":
      kh, kw, cin, cout = leaf.shape
      std = 0.02 * math.sqrt(2.0 / ((cin + cout) * kh * kw))
      assert abs(leaf.std() / std - 1) < 6 / math.sqrt(leaf.size) + 0.01, jax.tree_util.keystr(path)
    elif name == "scale":
      assert abs(leaf.mean() - 1) < 0.02 and 0.01 < leaf.std() < 0.03, jax.tree_util.keystr(path)
    else:
      np.testing.assert_array_equal(leaf, 1.0 if name == "var" else 0.0)
  # Every leaf draws its own numbers.
  a = np.asarray(fast["params"]["flow_decoder"]["decoder1_1"]["scale"])
  b = np.asarray(fast["params"]["flow_decoder"]["decoder4_2"]["scale"])
  assert not np.allclose(a, b)


def test_initial_value_rejects_unknown_leaves():
  with pytest.raises(ValueError, match="embedding"):
    layers.initial_value("embedding", (3, 4), jnp.zeros((3, 4)))


@pytest.mark.parametrize("image_encoder, size", [("alexnet_fcn_32x", 128), ("resnet50", 64)])
def test_initial_loss_is_2_ln_99(image_encoder, size, initialised):
  model, variables = initialised(image_encoder, size)
  k1, k2, k4 = jax.random.split(jax.random.PRNGKey(1), 3)
  image = jax.random.normal(k1, (2, size, size, 3))
  sparse = jnp.zeros((2, size, size, 4)).at[:, ::16, ::16, :2].set(5.0).at[:, ::16, ::16, 2:].set(1.0)
  flow = 10.0 * jax.random.normal(k2, (2, size, size, 2))
  # The one-draw init (same distributions as model.init, see the test above; the module initialisers are
  # checked in test_conv_init_* / test_batchnorm_init, and model.init itself compiles ~15 s here).

  @jax.jit
  def loss_fn(variables):
    logits, _ = model.apply(variables, image, sparse, train=True, mutable=["batch_stats"], rngs={"dropout": k4})
    return losses.discrete_loss(logits, flow)

  assert abs(float(loss_fn(variables)) / (2 * math.log(99)) - 1) < 0.01


# --------------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------------

def test_dropout_only_with_train_and_rng(initialised):
  model, cmp_variables = initialised("alexnet_fcn_32x", 128)
  enc = model.image_encoder
  variables = {k: v["image_encoder"] for k, v in cmp_variables.items()}
  x = jax.random.normal(KEY, (2, 32, 32, 3))
  apply = jax.jit(enc.apply, static_argnames=("train", "mutable"))
  eval_out = apply(variables, x)
  train_a, _ = apply(variables, x, train=True, mutable=("batch_stats",))
  train_b, _ = apply(variables, x, train=True, mutable=("batch_stats",))
  drop_1, _ = apply(variables, x, train=True, mutable=("batch_stats",), rngs={"dropout": jax.random.PRNGKey(1)})
  drop_2, _ = apply(variables, x, train=True, mutable=("batch_stats",), rngs={"dropout": jax.random.PRNGKey(2)})
  np.testing.assert_array_equal(train_a, train_b)
  assert not np.allclose(drop_1, drop_2)
  assert not np.allclose(drop_1, train_a)
  assert eval_out.shape == (2, 1, 1, 256)


def test_half_dropout_keeps_independent_halves_doubled():
  class Drop(nn.Module):
    @nn.compact
    def __call__(self, x):
      return layers.half_dropout(self, x, deterministic=False)

  x = jnp.arange(1, 1 + 8 * 16 * 16 * 64, dtype=jnp.float32).reshape(8, 16, 16, 64)
  y = np.asarray(Drop().apply({}, x, rngs={"dropout": jax.random.PRNGKey(3)}))
  kept = y != 0
  np.testing.assert_array_equal(y[kept], 2 * np.asarray(x)[kept])
  assert abs(kept.mean() - 0.5) < 0.01
  # Independent decisions: neighbouring channels (bits of one draw) and pixels (different draws).
  assert abs((kept[..., 1:] & kept[..., :-1]).mean() - 0.25) < 0.01
  assert abs((kept[:, 1:] & kept[:, :-1]).mean() - 0.25) < 0.01
  other = np.asarray(Drop().apply({}, x, rngs={"dropout": jax.random.PRNGKey(4)})) != 0
  assert abs((kept & other).mean() - 0.25) < 0.01
  with pytest.raises(ValueError, match="multiple of 32"):
    Drop().apply({}, x[..., :48], rngs={"dropout": jax.random.PRNGKey(3)})


# --------------------------------------------------------------------------------------------------
# BatchNorm semantics (reference §1.9)
# --------------------------------------------------------------------------------------------------

def _hand_bn(x, scale, bias, eps=1e-5):
  mean = x.mean(axis=(0, 1, 2))
  var = x.var(axis=(0, 1, 2))
  return (x - mean) / np.sqrt(var + eps) * scale + bias, mean, var


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_batchnorm_groups_and_unbiased_running_var(groups):
  rng = np.random.RandomState(0)
  x = (rng.randn(8, 3, 5, 6) * np.array([1, 2, 3, 4, 5, 6]) + np.arange(6)).astype(np.float32)
  x[4:] += 7.0  # the second half of the batch has other statistics
  bn = layers.BatchNorm(use_running_average=False, groups=groups)
  variables = bn.init(KEY, jnp.asarray(x))
  scale, bias = np.asarray(variables["params"]["scale"]), np.asarray(variables["params"]["bias"]) + 0.25
  variables = {"params": {"scale": scale, "bias": bias}, "batch_stats": variables["batch_stats"]}
  y, updates = bn.apply(variables, jnp.asarray(x), mutable=["batch_stats"])

  chunk = 8 // groups
  for g in range(groups):
    expected, _, _ = _hand_bn(x[g * chunk:(g + 1) * chunk].astype(np.float64), scale, bias)
    np.testing.assert_allclose(np.asarray(y)[g * chunk:(g + 1) * chunk], expected, rtol=1e-5, atol=1e-5)
  # Running statistics: chunk 0 only, momentum 0.1 (PyTorch) = 0.9 (Flax), unbiased variance n / (n - 1).
  _, mean0, var0 = _hand_bn(x[:chunk].astype(np.float64), scale, bias)
  n = chunk * 3 * 5
  np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.1 * mean0, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(updates["batch_stats"]["var"], 0.9 + 0.1 * var0 * n / (n - 1), rtol=1e-5)

  # Eval normalises with the running statistics.
  stats = {"mean": np.full(6, 0.5, np.float32), "var": np.full(6, 4.0, np.float32)}
  bn_eval = layers.BatchNorm(use_running_average=True, groups=groups)
  y_eval = bn_eval.apply({"params": variables["params"], "batch_stats": stats}, jnp.asarray(x))
  np.testing.assert_allclose(y_eval, (x - 0.5) / np.sqrt(4.0 + 1e-5) * scale + bias, rtol=1e-5, atol=1e-5)


def test_batchnorm_groups_must_divide_batch():
  bn = layers.BatchNorm(use_running_average=False, groups=4)
  variables = bn.init(KEY, jnp.zeros((3, 2, 2, 4)))  # init is exempt
  with pytest.raises(ValueError, match="not divisible by bn_groups=4"):
    bn.apply(variables, jnp.zeros((6, 2, 2, 4)), mutable=["batch_stats"])


@pytest.mark.parametrize("groups,relu", [(1, False), (2, True)])
def test_batchnorm_backward_equals_autodiff(groups, relu):
  """The training-mode backward (a custom VJP that keeps only the input) against autodiff of the formula."""
  rng = np.random.RandomState(1)
  x = jnp.asarray(rng.randn(4, 3, 5, 6) * 2 + 1, jnp.float32)
  w = jnp.asarray(rng.randn(4, 3, 5, 6), jnp.float32)  # a loss that weighs every output differently
  bn = layers.BatchNorm(use_running_average=False, groups=groups, relu=relu)
  params = {"scale": jnp.asarray(rng.randn(6), jnp.float32), "bias": jnp.asarray(rng.randn(6), jnp.float32)}
  stats = bn.init(KEY, x)["batch_stats"]

  def ours(x, p):
    return jnp.sum(bn.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"])[0] * w)

  def formula(x, p):
    xg = x.reshape((groups, -1) + x.shape[1:])
    mean = xg.mean(axis=(1, 2, 3), keepdims=True)
    var = jnp.square(xg - mean).mean(axis=(1, 2, 3), keepdims=True)
    y = ((xg - mean) / jnp.sqrt(var + 1e-5) * p["scale"] + p["bias"]).reshape(x.shape)
    return jnp.sum((nn.relu(y) if relu else y) * w)

  np.testing.assert_allclose(ours(x, params), formula(x, params), rtol=1e-5, atol=1e-5)
  got, want = jax.grad(ours, (0, 1))(x, params), jax.grad(formula, (0, 1))(x, params)
  for g, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(e))))
  # bfloat16 compute: the gradient comes back in the input's dtype.
  assert jax.grad(ours)(x.astype(jnp.bfloat16), params).dtype == jnp.bfloat16


def test_relu_backward_equals_nn_relu():
  x = jnp.asarray([-1.0, 0.0, 2.0, 3.0])
  np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(layers.relu(v) * x))(x),
                                jax.grad(lambda v: jnp.sum(nn.relu(v) * x))(x))


def test_remat_gives_the_same_values_and_keeps_less():
  """model.remat: the same parameter tree, loss, gradients and BatchNorm statistics as without it, and fewer
  bytes kept for the backward (what jax.checkpoint saves); only ResNet encoders offer it."""
  image, sparse = jnp.asarray(np.random.RandomState(0).randn(2, 32, 32, 3), jnp.float32), jnp.zeros((2, 32, 32, 4))
  flow = jnp.asarray(np.random.RandomState(1).randn(2, 32, 32, 2) * 3, jnp.float32)
  runs = []
  for remat in (False, True):
    model = models.build_model(config_lib.model_config("resnet18", sparse_encoder="shallownet8x", remat=remat))
    variables = models.init_variables(model, KEY, 32, 32, batch=2)

    def loss(params):
      logits, new = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, image, sparse,
                                train=True, mutable=["batch_stats"])
      return losses.discrete_loss(logits, flow), new

    value, backward, new = jax.vjp(loss, variables["params"], has_aux=True)  # backward: a pytree of what it keeps
    (grads,) = backward(jnp.ones_like(value))
    nbytes = lambda tree: sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(tree))
    kept = nbytes(backward) - nbytes(variables)  # activations (the weights are kept either way)
    runs.append((value, grads, new, kept))
  (v0, g0, s0, kept0), (v1, g1, s1, kept1) = runs
  assert jax.tree_util.tree_structure(g0) == jax.tree_util.tree_structure(g1)
  np.testing.assert_allclose(v1, v0, rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves((g1, s1)), jax.tree_util.tree_leaves((g0, s0))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(b))))
  assert 0 < kept1 < 0.6 * kept0, (kept1, kept0)
  with pytest.raises(ValueError, match="model.remat"):
    models.build_model(config_lib.model_config("alexnet_fcn_32x", remat=True))


def test_bn_groups_reach_every_batchnorm():
  model = models.build_model(config_lib.model_config("alexnet_fcn_32x"), bn_groups=2)
  found = []

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, layers.BatchNorm) and context.method_name == "__call__":
      found.append(context.module.groups)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    jax.eval_shape(model.init, KEY, _spec(2, 128, 128, 3), _spec(2, 128, 128, 4))
  assert len(found) == 7 + 2 + 2 * 3 and set(found) == {2}


# --------------------------------------------------------------------------------------------------
# Layers: align-corners resize (against PyTorch), pooling
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size_in, size_out", [((12, 12), (384, 384)), ((3, 5), (7, 1)), ((1, 1), (4, 4)),
                                               ((1, 4), (1, 9)), ((48, 40), (24, 20)), ((5, 7), (1, 1)),
                                               ((6, 6), (6, 6)), ((2, 3), (5, 3))])
def test_resize_matches_torch_align_corners(size_in, size_out):
  torch = pytest.importorskip("torch")
  x = np.random.RandomState(0).randn(2, 3, *size_in).astype(np.float32)
  expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=size_out, mode="bilinear",
                                             align_corners=True).numpy()
  got = layers.resize_bilinear_align_corners(jnp.asarray(x.transpose(0, 2, 3, 1)), size_out)
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), expected, rtol=0, atol=2e-6)


def test_resize_keeps_corners_and_is_differentiable():
  x = jax.random.normal(KEY, (1, 5, 4, 2))
  y = layers.resize_bilinear_align_corners(x, (9, 7))
  np.testing.assert_allclose(y[0, [0, 0, -1, -1], [0, -1, 0, -1]], x[0, [0, 0, -1, -1], [0, -1, 0, -1]], rtol=1e-6)
  grad = jax.jit(jax.grad(lambda x: layers.resize_bilinear_align_corners(x, (9, 7)).sum()))(x)
  assert grad.shape == x.shape and np.isclose(float(grad.sum()), 9 * 7 * 2, rtol=1e-5)
  with pytest.raises(ValueError, match="positive"):
    layers.resize_bilinear_align_corners(x, (0, 3))


def test_pooling_matches_pytorch_floor_mode():
  x = jnp.arange(2 * 7 * 7, dtype=jnp.float32).reshape(1, 7, 7, 2) - 200.0  # all negative: -inf padding matters
  y = layers.max_pool(x, 3, 2, 1)
  assert y.shape == (1, 4, 4, 2)
  np.testing.assert_array_equal(y[0, 0, 0], x[0, 1, 1])
  assert layers.max_pool(x, 2, 2).shape == (1, 3, 3, 2)
  a = layers.avg_pool(x, 2)
  assert a.shape == (1, 3, 3, 2)
  np.testing.assert_allclose(a[0, 0, 0], x[0, :2, :2].mean(axis=(0, 1)))


@pytest.mark.parametrize("h,w,k,s,d", [(9, 11, 3, 2, 1), (23, 22, 11, 4, 1), (14, 15, 3, 1, 4), (9, 9, 2, 2, 1),
                                       (13, 13, 3, 3, 1)])
def test_untaps_is_the_transpose_of_taps(h, w, k, s, d):
  oh, ow = (h - d * (k - 1) - 1) // s + 1, (w - d * (k - 1) - 1) // s + 1
  keys = jax.random.split(KEY, k * k)
  values = [jax.random.normal(key, (2, oh, ow, 3)) for key in keys]
  # jitted: op by op, each of the k*k differently placed slices and pads would be compiled on its own (~30 s at 11x11)
  taps_vjp = jax.jit(lambda vs: jax.vjp(lambda x: layers._taps(x, k, s, d, oh, ow), jnp.zeros((2, h, w, 3)))[1](vs)[0])
  untaps = jax.jit(lambda vs: layers._untaps(vs, k, s, d, h, w))
  want = taps_vjp(values)
  np.testing.assert_allclose(untaps(values), want, atol=2e-6)
  np.testing.assert_allclose(untaps([v[0] for v in values]), want[0], atol=2e-6)


@pytest.mark.parametrize("size, kernel, stride, padding", [((9, 9), 3, 2, 1), ((10, 12), 3, 2, 1), ((8, 8), 2, 2, 0),
                                                          ((7, 9), 4, 4, 0), ((6, 6), 3, 1, 1)])
def test_max_pool_gradient_goes_to_the_first_maximum_as_pytorch(size, kernel, stride, padding):
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(sum(size) + kernel)
  x = np.round(rng.normal(size=(2, *size, 3)) * 1.5).astype(np.float32) - 1.0  # many ties, many negatives
  y, vjp = jax.vjp(lambda a: layers.max_pool(a, kernel, stride, padding), jnp.asarray(x))
  dy = rng.normal(size=y.shape).astype(np.float32)
  xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
  yt = torch.nn.functional.max_pool2d(xt, kernel, stride, padding)
  yt.backward(torch.tensor(dy.transpose(0, 3, 1, 2)))
  np.testing.assert_array_equal(np.asarray(y), yt.detach().numpy().transpose(0, 2, 3, 1))
  np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(dy))[0]), xt.grad.numpy().transpose(0, 2, 3, 1), atol=1e-6)


def test_float64_mode_for_parity_checks():
  # dtype 'float64' (under jax x64) runs everything, BN statistics and resize weights included, in float64.
  torch = pytest.importorskip("torch")
  with jax.enable_x64(True):
    x = np.random.RandomState(0).randn(1, 2, 5, 7)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=(11, 13), mode="bilinear",
                                               align_corners=True).numpy()
    got = layers.resize_bilinear_align_corners(jnp.asarray(x.transpose(0, 2, 3, 1)), (11, 13))
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), expected, rtol=0, atol=1e-14)
    bn = layers.BatchNorm(use_running_average=False, dtype=jnp.float64)
    xb = jnp.asarray(np.random.RandomState(1).randn(4, 3, 3, 2) * 1e3 + 1e6)
    variables = bn.init(KEY, xb)
    y, upd = bn.apply(variables, xb, mutable=["batch_stats"])
    assert {a.dtype for a in jax.tree_util.tree_leaves((variables, y, upd))} == {jnp.dtype(jnp.float64)}
    xn = np.asarray(xb)
    n = xn[..., 0].size
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * xn.var(axis=(0, 1, 2)) * n / (n - 1),
                               rtol=1e-12)
