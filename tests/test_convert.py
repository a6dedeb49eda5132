"""Weight conversion: exported weights load strictly into the PyTorch model and give the Flax outputs,
original-style checkpoints import, round trips are bit-exact, the CLI works, bad files are listed.

The model is the semi-automatic annotation / demo architecture (ResNet-50 + SkipLayer, 72 BatchNorms).
"""

import collections
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402

from cmp_jax import checkpoint, config_lib, convert, models  # noqa: E402
from cmp_jax import torch_models as tm  # noqa: E402

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "resnet50_vip_mpii_liteflow.py")
SIZE = 64


@pytest.fixture(scope="module")
def cfg():
  return config_lib.load_config(DEMO_CONFIG)


@pytest.fixture(scope="module")
def flax_model(cfg):
  return models.build_model(cfg.model)


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  image = rng.standard_normal((2, SIZE, SIZE, 3)).astype(np.float32)
  sparse = np.zeros((2, SIZE, SIZE, 4), np.float32)
  ys, xs = rng.integers(0, SIZE, 10), rng.integers(0, SIZE, 10)
  sparse[:, ys, xs, :2] = 8 * rng.standard_normal((2, 10, 2))
  sparse[:, ys, xs, 2:] = 1
  return image, sparse


@pytest.fixture(scope="module")
def flax_apply(flax_model):
  return jax.jit(lambda v, i, s: flax_model.apply(v, i, s, train=False))


@pytest.fixture(scope="module")
def flax_variables(cfg):
  """Random, non-trivial Flax variables drawn directly on the Flax side (independent of the converter)."""
  shapes = convert.variable_shapes(cfg)
  rng = np.random.default_rng(1)

  def draw(path, sds):
    leaf = path[-1].key
    if leaf == "kernel":
      fan_in = sds.shape[0] * sds.shape[1] * sds.shape[2]
      return (rng.standard_normal(sds.shape) * np.sqrt(1.0 / fan_in)).astype(np.float32)
    if leaf == "scale":
      return (1 + 0.1 * rng.standard_normal(sds.shape)).astype(np.float32)
    if leaf == "var":
      return rng.uniform(0.5, 1.5, sds.shape).astype(np.float32)
    return (0.1 * rng.standard_normal(sds.shape)).astype(np.float32)  # bias, mean

  return jax.tree_util.tree_map_with_path(draw, shapes)


def torch_forward(model, image, sparse):
  with torch.no_grad():
    out = model.eval()(torch.from_numpy(image.transpose(0, 3, 1, 2).copy()),
                       torch.from_numpy(sparse.transpose(0, 3, 1, 2).copy()))
  return out.numpy().transpose(0, 2, 3, 1)


def rel(a, ref):
  return float(np.abs(np.asarray(a) - ref).max() / np.abs(ref).max())


def random_torch_model(cfg, seed=0):
  torch.manual_seed(seed)
  model = tm.build_torch_model(cfg)
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for mod in model.modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        mod.weight.copy_(1 + 0.1 * torch.randn(mod.num_features, generator=g))
        mod.bias.copy_(0.1 * torch.randn(mod.num_features, generator=g))
        mod.running_mean.copy_(0.1 * torch.randn(mod.num_features, generator=g))
        mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=g))
  return model


def demo_style_file(model, path, step=42000):
  """Like the released ckpt_iter_42000.pth.tar: `module.` keys, no num_batches_tracked, an optimizer."""
  sd = collections.OrderedDict(("module." + k, v.clone()) for k, v in model.state_dict().items()
                               if not k.endswith("num_batches_tracked"))
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  torch.save({"step": step, "state_dict": sd, "optimizer": opt.state_dict()}, path)
  return sd


# --------------------------------------------------------------------------------------------------
# The key map


def test_key_map_matches_the_torch_models_state_dict(cfg):
  with torch.device("meta"):
    model = tm.build_torch_model(cfg)
  for part, module in (("full", model), ("image_encoder", model.image_encoder)):
    km = convert.KeyMap(cfg, part)
    sd = module.state_dict()
    assert km.keys() == list(sd)  # same keys, same order (the original's registration order)
    for key, (_, _, shape) in km.entries.items():
      assert shape == tuple(sd[key].shape), key


@pytest.mark.parametrize("enc, sparse_enc, dec", [
    ("alexnet_fcn_32x", "shallownet32x", "MotionDecoderPlain"),
    ("alexnet_fcn_8x", "shallownet8x", "MotionDecoderPlain"),
    ("resnet18", "shallownet8x", "MotionDecoderPlain"),
    ("resnet101", "shallownet8x", "MotionDecoderPlain"),
])
def test_key_map_other_architectures(enc, sparse_enc, dec):
  m = config_lib.model_config(enc, sparse_enc, dec, decoder_combo=(1, 2, 4, 8) if enc == "resnet101" else (1, 2, 4))
  with torch.device("meta"):
    sd = tm.build_torch_model(m).state_dict()
  km = convert.KeyMap(m)
  assert km.keys() == list(sd)
  assert all(km.entries[k][2] == tuple(sd[k].shape) for k in km.entries)


# --------------------------------------------------------------------------------------------------
# Flax -> PyTorch


def test_flax_to_torch_strict_load_same_outputs(cfg, flax_variables, flax_apply, inputs):
  image, sparse = inputs
  sd = convert.flax_to_torch_state_dict(flax_variables, cfg, num_batches_tracked=7)
  model = tm.build_torch_model(cfg)
  model.load_state_dict(sd, strict=True)
  assert int(sd["image_encoder.bn1.num_batches_tracked"]) == 7
  assert sd["image_encoder.conv1.weight"].dtype == torch.float32
  ref = np.asarray(flax_apply(flax_variables, image, sparse))
  assert rel(torch_forward(model, image, sparse), ref) <= 1e-5


def test_round_trips_are_bit_exact(cfg, flax_variables):
  sd = convert.flax_to_torch_state_dict(flax_variables, cfg, prefix="module.")
  back = convert.torch_state_dict_to_flax(sd, cfg)
  flat_a = jax.tree_util.tree_leaves_with_path(flax_variables)
  flat_b = dict(jax.tree_util.tree_leaves_with_path(back))
  assert len(flat_a) == len(flat_b)
  for path, a in flat_a:
    assert np.array_equal(np.asarray(a), flat_b[path]), jax.tree_util.keystr(path)
  sd2 = convert.flax_to_torch_state_dict(back, cfg, prefix="module.")
  assert list(sd2) == list(sd)
  assert all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_image_encoder_part(cfg, flax_variables):
  sd = convert.flax_to_torch_state_dict(flax_variables, cfg, part="image_encoder")
  assert "conv1.weight" in sd and "conv5.bias" in sd and "layer4.2.bn3.num_batches_tracked" in sd
  assert not any(k.startswith(("image_encoder.", "module.", "fc.")) for k in sd)
  enc = tm.resnet50(256)
  enc.load_state_dict(sd, strict=True)
  back = convert.torch_state_dict_to_flax(sd, cfg, part="image_encoder")
  assert set(back["params"]) == {"image_encoder"}
  np.testing.assert_array_equal(back["params"]["image_encoder"]["layer3_5"]["conv2"]["kernel"],
                                flax_variables["params"]["image_encoder"]["layer3_5"]["conv2"]["kernel"])


def test_extra_flax_collections_are_ignored_and_missing_ones_listed(cfg, flax_variables):
  state = {"params": flax_variables["params"], "batch_stats": flax_variables["batch_stats"], "opt": {"x": 1}}
  convert.flax_to_torch_state_dict(state, cfg)
  broken = jax.tree_util.tree_map(lambda x: x, flax_variables)
  del broken["batch_stats"]["flow_decoder"]["fusion2_1"]
  with pytest.raises(convert.ConversionError, match=r"missing keys(.|\n)*fusion2\.1\.running_mean"):
    convert.flax_to_torch_state_dict(broken, cfg)


# --------------------------------------------------------------------------------------------------
# PyTorch -> Flax


def test_from_demo_style_checkpoint_same_outputs(cfg, flax_apply, inputs, tmp_path):
  image, sparse = inputs
  model = random_torch_model(cfg)
  path = tmp_path / "ckpt_iter_42000.pth.tar"
  demo_style_file(model, path)
  state_dict, step = convert.load_torch_checkpoint(str(path))
  assert step == 42000 and not any(k.endswith("num_batches_tracked") for k in state_dict)
  variables = convert.torch_state_dict_to_flax(state_dict, cfg)
  out = np.asarray(flax_apply(variables, image, sparse))
  assert rel(out, torch_forward(model, image, sparse)) <= 1e-5


def test_accepts_all_key_styles(cfg):
  model = random_torch_model(cfg, seed=3)
  plain = model.state_dict()
  ref = convert.torch_state_dict_to_flax(plain, cfg)
  variants = [
      {"module." + k: v for k, v in plain.items()},
      {k: v for k, v in plain.items() if not k.endswith("num_batches_tracked")},
      {"state_dict": {"module." + k: v for k, v in plain.items()}, "step": 5},
  ]
  for sd in variants:
    got = convert.torch_state_dict_to_flax(sd, cfg)
    for (pa, a), (pb, b) in zip(jax.tree_util.tree_leaves_with_path(ref), jax.tree_util.tree_leaves_with_path(got)):
      assert pa == pb and np.array_equal(a, b)


def _check_listing(msg, missing=(), unexpected=(), misshaped=()):
  for title, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", misshaped)):
    if keys:
      section = msg.split(title, 1)[1]
      for k in keys:
        assert k in section, (k, msg)
    else:
      assert title not in msg, msg


def test_bad_state_dicts_list_every_problem(cfg):
  sd = collections.OrderedDict(random_torch_model(cfg, seed=4).state_dict())
  sd.pop("flow_decoder.fusion4.1.running_var")
  sd.pop("image_encoder.layer2.0.conv2.weight")
  sd["flow_decoder.extra.weight"] = torch.zeros(3)
  sd["image_encoder.conv5.bias"] = torch.zeros(255)
  sd["image_encoder.conv1.weight"] = torch.zeros(64, 3, 3, 3)
  with pytest.raises(convert.ConversionError) as exc:
    convert.torch_state_dict_to_flax(sd, cfg)
  msg = str(exc.value)
  assert "2 missing keys" in msg and "1 unexpected keys" in msg and "2 mis-shaped keys" in msg
  _check_listing(msg, missing=["flow_decoder.fusion4.1.running_var", "image_encoder.layer2.0.conv2.weight"],
                 unexpected=["flow_decoder.extra.weight"],
                 misshaped=["image_encoder.conv5.bias: (255,) -> (256,)",
                            "image_encoder.conv1.weight: (64, 3, 3, 3) -> (64, 3, 7, 7)"])


def test_wrong_architecture_is_listed(cfg):
  alex = config_lib.base().model  # AlexNet + Plain weights given to the ResNet-50 + SkipLayer config
  with torch.device("meta"):
    sd = tm.build_torch_model(alex).state_dict()
  sd = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in sd.items() if "flow_decoder" not in k}
  with pytest.raises(convert.ConversionError, match=r"missing keys(.|\n)*image_encoder\.layer1\.0\.conv1\.weight"
                     r"(.|\n)*unexpected keys(.|\n)*image_encoder\.fc6\.0\.weight"):
    convert.torch_state_dict_to_flax(sd, cfg)


# --------------------------------------------------------------------------------------------------
# Command line


def test_cli_from_torch(cfg, flax_apply, inputs, tmp_path, capsys):
  image, sparse = inputs
  model = random_torch_model(cfg, seed=5)
  ckpt = tmp_path / "ckpt_iter_42000.pth.tar"
  demo_style_file(model, ckpt)
  out = tmp_path / "imported"
  assert convert.main(["convert", "from-torch", str(ckpt), "--config", DEMO_CONFIG, "--out", str(out)]) == 0
  assert str(out / "checkpoints" / "42000") in capsys.readouterr().out
  assert json.loads((out / "config.json").read_text())["model"]["image_encoder"] == cfg.model.image_encoder
  variables, step = checkpoint.load_variables(str(out))
  assert step == 42000
  assert rel(np.asarray(flax_apply(variables, image, sparse)), torch_forward(model, image, sparse)) <= 1e-5


def test_cli_to_torch_both_parts(cfg, flax_variables, flax_apply, inputs, tmp_path, capsys):
  image, sparse = inputs
  workdir = tmp_path / "run"
  checkpoint.save_variables(str(workdir), flax_variables, step=300)
  ref = np.asarray(flax_apply(flax_variables, image, sparse))

  full = tmp_path / "full.pth.tar"
  assert convert.main(["convert", "to-torch", "--config", DEMO_CONFIG, "--checkpoint", str(workdir),
                       "--out", str(full), "--part", "full"]) == 0
  obj = torch.load(full, map_location="cpu", weights_only=True)
  assert set(obj) == {"step", "state_dict"} and obj["step"] == 300
  assert all(k.startswith("module.") for k in obj["state_dict"])
  model = tm.build_torch_model(cfg)
  model.load_state_dict(convert.strip_prefix(obj["state_dict"], "module."), strict=True)
  assert rel(torch_forward(model, image, sparse), ref) <= 1e-5

  enc_file = tmp_path / "encoder.pth"
  assert convert.main(["convert", "to-torch", "--config", DEMO_CONFIG, "--checkpoint", str(workdir),
                       "--out", str(enc_file)]) == 0
  assert "image_encoder" in capsys.readouterr().out
  sd = torch.load(enc_file, map_location="cpu", weights_only=True)
  assert isinstance(sd, collections.OrderedDict) and "conv1.weight" in sd
  assert int(sd["bn1.num_batches_tracked"]) == 300
  enc = tm.resnet50(256)
  enc.load_state_dict(sd, strict=True)
  model.image_encoder.load_state_dict(sd, strict=True)  # same weights again
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # atomic writes leave nothing behind


def test_cli_errors(tmp_path, capsys):
  alex_ckpt = tmp_path / "alex.pth"
  with torch.device("meta"):
    sd = tm.build_torch_model(config_lib.base().model).state_dict()
  sd = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in list(sd.items())[:6]}
  torch.save(sd, alex_ckpt)
  assert convert.main(["convert", "from-torch", str(alex_ckpt), "--config", DEMO_CONFIG,
                       "--out", str(tmp_path / "x")]) == 2
  err = capsys.readouterr().err
  assert str(alex_ckpt) in err  # the error names the file
  assert "missing keys" in err and "unexpected keys" in err and "image_encoder.conv1.0.weight" in err
  assert not (tmp_path / "x").exists()
  assert convert.main(["convert", "to-torch", "--config", DEMO_CONFIG, "--checkpoint", str(tmp_path / "nothing"),
                       "--out", str(tmp_path / "y.pth")]) == 2
  assert "does not exist" in capsys.readouterr().err
