"""eval.py end to end as a subprocess: both protocols on the fixtures, a checkpoint against 'random', bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from probe_fixture import bad_cases, truncated_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
FAST = ["--config.image_size=32", "--config.batch_size=50"]


def run_eval(config, workdir, *overrides, timeout=300):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
  cmd = [sys.executable, os.path.join(ROOT, "eval.py"), "--config", os.path.join(ROOT, config),
         "--workdir", str(workdir), *overrides]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A ResNet-18 image-encoder checkpoint with its config.json, as `convert from-torch` writes one (step 7).

  Its weights are the original's init drawn with seed 1, so they differ from the probe's random init (seed 0).
  """
  from cmp_jax import checkpoint as ckpt_lib
  from cmp_jax import config_lib
  from cmp_jax.probe import features
  out = tmp_path_factory.mktemp("ckpt")
  cfg = config_lib.load_config(os.path.join(ROOT, "configs", "quickstart.py"))
  enc = features.build_encoder(cfg.model)
  v = features.random_variables(enc, 32, seed=1)
  ckpt_lib.save_variables(str(out), {"params": {"image_encoder": v["params"]},
                                     "batch_stats": {"image_encoder": v["batch_stats"]}}, step=7)
  (out / "config.json").write_text(cfg.to_json_best_effort(indent=2))
  return out


def test_classification_checkpoint_then_random(checkpoint, tmp_path):
  wd = tmp_path / "cls"
  r = run_eval("configs/probe_classification.py:fixture", wd, f"--config.checkpoint={checkpoint}", *FAST,
               "--config.probe.epochs=10")
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads((wd / "results.json").read_text())
  assert set(res) == {"trained", "random_init", "settings"}
  assert res["trained"]["step"] == 7 and res["trained"]["checkpoint"] == str(checkpoint)
  assert res["settings"]["encoder"] == "resnet18" and res["settings"]["config_source"].endswith("config.json")
  for name in ("trained", "random_init"):
    assert 0.1 < res[name]["top1"] <= 1.0  # chance is 0.1; the probe on random ResNet features beats it
    assert res[name]["samples"] == 80 and len(res[name]["confusion"]) == 10
  assert "top-1" in r.stdout and "random init" in r.stdout and "trained (step 7)" in r.stdout
  assert "ETA" in r.stdout or "done in" in r.stdout
  assert res["trained"]["top1"] != res["random_init"]["top1"] or res["trained"]["confusion"] != res["random_init"]["confusion"]

  # 'random' alone, in the same workdir: the same random-init figures, its features read from the cache.
  r2 = run_eval("configs/probe_classification.py:fixture", wd, "--config.checkpoint=random", *FAST,
                "--config.probe.epochs=10")
  assert r2.returncode == 0, r2.stderr[-3000:]
  res2 = json.loads((wd / "results.json").read_text())
  assert set(res2) == {"random_init", "settings"}
  assert res2["random_init"]["top1"] == res["random_init"]["top1"]
  assert res2["random_init"]["confusion"] == res["random_init"]["confusion"]
  assert "from the cache" in r2.stdout
  assert not [f for f in os.listdir(wd) if f.startswith(".tmp")]


def test_segmentation_on_voc_layout(checkpoint, tmp_path):
  wd = tmp_path / "seg"
  r = run_eval("configs/probe_segmentation.py", wd, f"--config.dataset=voc:{FIX}/voc_mini",
               f"--config.checkpoint={checkpoint}/checkpoints/7", *FAST, "--config.label_size=64",
               "--config.probe.epochs=20", "--config.probe.batch_size=2")
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads((wd / "results.json").read_text())
  for name in ("trained", "random_init"):
    m = res[name]
    assert 0 <= m["miou"] <= 1 and m["pixels"] > 0.9 * 64 * 64
    assert m["iou/person"] is not None and m["iou/cat"] is None  # val: background, bottle, person
  assert "mIoU" in r.stdout and "IoU person" in r.stdout


def _check_error(r, wd, expected):
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
  assert len(lines) == 1, r.stderr
  assert "Traceback" not in r.stderr and lines[0].startswith("error: ")
  assert expected in lines[0], lines[0]
  assert not os.path.exists(wd), os.listdir(wd)


def test_bad_datasets_exit_2_in_one_line(tmp_path):
  for name, spec, task, expected in bad_cases(tmp_path / "data"):
    wd = tmp_path / f"wd_{name}"
    r = run_eval(f"configs/probe_{task}.py", wd, f"--config.dataset={spec}")
    _check_error(r, wd, expected)


def test_truncated_image_found_while_decoding(tmp_path):
  """Only decoding finds a truncated image: one line, exit 2, and the new workdir is removed again."""
  wd = tmp_path / "wd"
  r = run_eval("configs/probe_classification.py", wd, f"--config.dataset=folder:{truncated_tree(tmp_path)}", *FAST)
  _check_error(r, wd, "cut.jpg: not a readable image (image file is truncated")


def test_checkpoint_of_another_architecture(checkpoint, tmp_path):
  wd = tmp_path / "arch"
  r = run_eval("configs/probe_classification.py:fixture", wd, f"--config.checkpoint={checkpoint}",
               "--config.model.image_encoder=resnet34", *FAST)
  _check_error(r, wd, "model.image_encoder is 'resnet18' there but 'resnet34'")  # its config.json
  bare = tmp_path / "bare"  # without config.json: the variables themselves are compared
  shutil.copytree(checkpoint, bare, ignore=shutil.ignore_patterns("config.json"))
  r = run_eval("configs/probe_classification.py:fixture", wd, f"--config.checkpoint={bare}",
               "--config.model.image_encoder=resnet34", *FAST)
  _check_error(r, wd, "does not match the model")
  r = run_eval("configs/probe_classification.py:fixture", wd, "--config.checkpoint=/nonexistent/run")
  _check_error(r, wd, "config.checkpoint '/nonexistent/run': no such folder")
  r = run_eval("configs/probe_classification.py:fixture", wd, "--config.layers=('layer9',)")
  _check_error(r, wd, "'layer9' is not a layer of resnet18")
  r = run_eval("configs/probe_classification.py:fixture", wd, "--config.no_such_key=1")
  _check_error(r, wd, "no_such_key")


def test_evaluator_interface_and_progress():
  from cmp_jax.evaluators import common
  with pytest.raises(ValueError, match="no evaluator 'nope'"):
    common.from_config("nope", None)
  lines = []
  p = common.Progress("features x/train", 4, "images", log=lines.append, every_s=0)
  p.update(1)
  p.update(1)
  assert lines[1].startswith("features x/train: 2/4 images (50%) | ") and "ETA" in lines[1]
  p.update(2)
  assert "4/4 images (100%) | done in" in lines[-1]
  assert common.format_seconds(3725) == "1h02m" and common.format_seconds(75) == "1m15s"
