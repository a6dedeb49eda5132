"""cmp_jax.checkpoint: a checkpoint is loaded only into the model it was made for.

Each case here was once accepted silently: a ResNet-34 checkpoint converted with a ResNet-18 config (a
truncated model, exit 0), an architecture that differs only where the shapes agree (fmax), and a resume
with another model's config that overwrote the workdir's config.json.
"""

import json

import jax
import numpy as np
import pytest

import train_fixture
from cmp_jax import checkpoint, config_lib, convert, models, trainer


def _zeros(model_cfg):
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), models.variable_shapes(model_cfg))


def _config(**model):
  c = config_lib.base()
  c.model = config_lib.model_config(**model)
  return c


@pytest.fixture(scope="module")
def resnet34_run(tmp_path_factory):
  """A from-torch-like folder holding ResNet-34 CMP variables, without and with its config.json."""
  bare = str(tmp_path_factory.mktemp("bare"))
  with_config = str(tmp_path_factory.mktemp("with_config"))
  c = _config(image_encoder="resnet34")
  variables = _zeros(c.model)
  for d in (bare, with_config):
    checkpoint.save_variables(d, variables, step=5)
  checkpoint.write_run_config(with_config, c)
  return bare, with_config


def test_leftover_variables_are_refused(resnet34_run):
  bare, _ = resnet34_run
  with pytest.raises(checkpoint.CheckpointError, match=r"unexpected keys(.|\n)*params/image_encoder/layer1_2/"):
    checkpoint.load_checked(bare, _config(image_encoder="resnet18"))
  variables, step = checkpoint.load_checked(bare, _config(image_encoder="resnet34"))
  assert step == 5 and models.count_params(variables) > 0


def test_saved_config_of_another_architecture_is_named(resnet34_run):
  _, with_config = resnet34_run
  with pytest.raises(checkpoint.CheckpointError, match="model.image_encoder is 'resnet34' there but 'resnet18'"):
    checkpoint.load_checked(with_config, _config(image_encoder="resnet18"))
  # Same shapes, other meaning: the bins span +-40 px instead of +-50 px.
  with pytest.raises(checkpoint.CheckpointError, match="model.fmax is 50.0 there but 40.0"):
    checkpoint.load_checked(with_config, _config(image_encoder="resnet34", fmax=40.0))


def test_image_encoder_part_ignores_the_rest(resnet34_run):
  bare, _ = resnet34_run
  variables, _ = checkpoint.load_checked(bare, _config(image_encoder="resnet34"), part="image_encoder")
  assert set(variables["params"]) == {"image_encoder"}


def test_to_torch_with_a_smaller_config_is_refused(resnet34_run, tmp_path, capsys):
  bare, _ = resnet34_run
  cfg_file = tmp_path / "r18.py"
  cfg_file.write_text("from cmp_jax import config_lib\n\ndef get_config():\n  c = config_lib.base()\n"
                      "  c.model = config_lib.model_config('resnet18')\n  return c\n")
  out = tmp_path / "x.pth"
  assert convert.main(["convert", "to-torch", "--config", str(cfg_file), "--checkpoint", bare,
                       "--out", str(out)]) == 2
  assert "unexpected keys" in capsys.readouterr().err
  assert not out.exists()


def test_resume_with_another_model_is_refused_and_keeps_the_config(train_dataset, tmp_path):
  workdir = tmp_path / "run"
  (workdir / "checkpoints").mkdir(parents=True)
  saved = train_fixture.tiny_config(train_dataset)
  checkpoint.write_run_config(str(workdir), saved)
  before = (workdir / "config.json").read_text()
  other = train_fixture.tiny_config(train_dataset)
  other.model.image_encoder = "resnet34"
  with pytest.raises(checkpoint.CheckpointError, match="model.image_encoder is 'resnet18' there but 'resnet34'"):
    trainer.train_and_evaluate(other, str(workdir))
  assert (workdir / "config.json").read_text() == before
  assert json.loads(before)["model"]["image_encoder"] == "resnet18"


def test_packed_model_loads_like_a_checkpoint(resnet34_run, tmp_path):
  """`convert pack`: one bf16 file + config.json, loaded and checked like any checkpoint."""
  bare, _ = resnet34_run
  c = _config(image_encoder="resnet34")
  variables, _ = checkpoint.load_checked(bare, c)
  variables = jax.tree.map(lambda v: v + np.float32(1 / 3), variables)  # not exactly bf16-representable
  out = str(tmp_path / "packed")
  path = checkpoint.pack(out, variables, c, step=7)
  loaded, step = checkpoint.load_checked(out, c)
  assert step == 7
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(loaded)):
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, rtol=2 ** -8)  # bf16 keeps 8 significant bits
  assert checkpoint.sha256(path) == checkpoint.sha256(checkpoint.pack(str(tmp_path / "again"), variables, c, 7))
  with pytest.raises(checkpoint.CheckpointError, match="model.image_encoder is 'resnet34' there but 'resnet18'"):
    checkpoint.load_checked(out, _config(image_encoder="resnet18"))
  with open(path, "r+b") as f:  # a cut download
    f.truncate(1000)
  with pytest.raises(checkpoint.CheckpointError, match="could not read packed weights"):
    checkpoint.load_checked(out, c)


def test_pack_command(resnet34_run, tmp_path, capsys):
  bare, _ = resnet34_run
  out = str(tmp_path / "packed")
  assert convert.main(["convert", "pack", "--config", "configs/alexnet_yfcc_voc_16gpu_70k.py",
                       "--config.model.image_encoder=resnet34", "--config.model.sparse_encoder=shallownet8x",
                       "--checkpoint", bare, "--out", out]) == 0
  printed = capsys.readouterr().out
  assert f"sha256 {checkpoint.sha256(out + '/weights.msgpack')}" in printed and "step 5" in printed
  assert convert.main(["convert", "pack", "--config", "configs/alexnet_yfcc_voc_16gpu_70k.py", "--out", out]) == 2
  assert "pack needs --checkpoint" in capsys.readouterr().err
