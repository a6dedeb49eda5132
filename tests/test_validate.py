"""cmp_jax.validate: a model's EPE on the val list beside both baselines, whole and per clip."""

import json

import jax
import numpy as np
import pytest

from cmp_jax import checkpoint, config_lib, models, validate

CONFIG = "configs/quickstart.py"  # the shipped sample's val list: 17 realshort + 5 tree pairs, 128 crops


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
  """A packed quick-start model with random weights."""
  c = config_lib.load_config(CONFIG)
  model = models.build_model(c.model)
  variables = models.init_variables(model, jax.random.key(0), 128, 128)
  out = str(tmp_path_factory.mktemp("packed"))
  checkpoint.pack(out, jax.tree.map(np.asarray, variables), c, step=3)
  return out


def test_table_and_record_per_clip(random_model, tmp_path, capsys):
  argv = ["validate", "--config", CONFIG, "--checkpoint", random_model, "--paper_density", "--out", str(tmp_path),
          "--config.vis_num=2"]
  assert validate.main(argv) == 0
  out = capsys.readouterr().out
  assert "(step 3) on 22 val pairs, 128x128 centre crops, guidance from the paper's density" in out
  rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
  assert set(rows) >= {"all", "realshort", "tree"} and "| 17 |" in rows["realshort"] and "| 5 |" in rows["tree"]
  record = json.loads((tmp_path / "validation.json").read_text())
  r = record["results"]
  assert record["step"] == 3 and record["paper_density"] and r["samples"] == 22
  # The whole list is the pixel-weighted mean of its clips (same crop size).
  for key in ("epe", "zero_epe", "nearest_epe"):
    assert r[key] == pytest.approx((17 * r[f"realshort/{key}"] + 5 * r[f"tree/{key}"]) / 22, rel=1e-6)
  # Paper density: about 17.6 points per 128 crop (benchmarks/LEARNING.md), far fewer than the config's ~96.
  assert 8 < r["points"] < 30 and r["nearest_epe"] < r["zero_epe"]
  assert (tmp_path / "validation.png").stat().st_size > 0


def test_checkpoint_of_another_model_is_one_line(random_model, capsys):
  argv = ["validate", "--config", CONFIG, "--config.model.image_encoder=resnet34", "--checkpoint", random_model]
  assert validate.main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "model.image_encoder is 'resnet18' there but 'resnet34'" in err, err
