"""Each user-facing tool on each kind of bad input, as a user runs it: a subprocess that must exit with code 2
and one line on stderr naming the file or setting, with no traceback and nothing half-written."""

import os
import resource
import signal
import subprocess
import sys

import pytest

import train_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(args, env, timeout=300, preexec_fn=None):
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout, preexec_fn=preexec_fn)


def assert_refused(r, *words):
  """Exit code 2, stderr one line (after any library noise) with `error:` and every word, no traceback."""
  assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-4000:]
  assert "Traceback" not in r.stderr, r.stderr
  lines = [line for line in r.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error:")]
  assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
  for w in words:
    assert w in errors[0], (w, errors[0])
  return errors[0]


def train(data, workdir, *overrides):
  return ["train.py", "--config", f"tests/train_fixture.py:{data}", "--workdir", str(workdir), *overrides]


@pytest.mark.parametrize("override, words", [
    ("--config.batch_size=abc", ("config.batch_size", "abc")),
    ("--config.data.crop_sise=(32,32)", ("config.data.crop_sise", "no such key")),
    ("--bogus=1", ("--bogus",)),
])
def test_train_bad_flags(train_dataset, subprocess_env, tmp_path, override, words):
  assert_refused(run_tool(train(train_dataset, tmp_path / "wd", override), subprocess_env()), *words)
  assert not (tmp_path / "wd").exists()


def test_train_workdir_is_a_file(train_dataset, subprocess_env, tmp_path):
  (tmp_path / "wd").write_text("not a folder")
  assert_refused(run_tool(train(train_dataset, tmp_path / "wd"), subprocess_env()), str(tmp_path / "wd"))


def test_train_all_bad_validation_set_fails_instead_of_scoring(train_dataset, subprocess_env, tmp_path):
  root = tmp_path / "data"
  names = ["frames/broken_1.jpg", "frames/broken_2.jpg", "flows/broken_x.jpg", "flows/broken_y.jpg"]
  for n in names:  # files that exist but are not images: found only when decoded
    (root / n).parent.mkdir(parents=True, exist_ok=True)
    (root / n).write_bytes(b"not a jpeg")
  (root / "val.txt").write_text(" ".join(str(root / n) for n in names) + "\n")  # absolute: data_root is not used
  r = run_tool(train(train_dataset, tmp_path / "wd", f"--config.data.val_source=('{root / 'val.txt'}',)",
                     "--config.data.skip_bad_samples=True", "--config.total_iter=2", "--config.val_freq=2",
                     "--config.save_freq=100"), subprocess_env())
  assert_refused(r, "every sample", "broken_1.jpg")


def test_train_bad_val_entry_is_found_before_training(train_dataset, subprocess_env, tmp_path):
  lines = open(os.path.join(train_dataset, "lists", "val.txt")).read().splitlines()
  bad_list = tmp_path / "val.txt"
  bad_list.write_text("\n".join(lines[:2] + [lines[2].replace("_1.jpg", "_9.jpg", 1)] + lines[3:]) + "\n")
  r = run_tool(train(train_dataset, tmp_path / "wd", f"--config.data.val_source=('{bad_list}',)"),
               subprocess_env())
  assert_refused(r, f"{bad_list}:3", "_9.jpg")
  assert "training steps" not in r.stdout


def _small_files_only():
  # A full disk, as root sees one too: writes past 1 MB fail with EFBIG instead of killing the process.
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_train_failed_save_stops_at_once(train_dataset, subprocess_env, tmp_path):
  env = dict(subprocess_env(), JAX_COMPILATION_CACHE_DIR="")
  r = run_tool(train(train_dataset, tmp_path / "wd", "--compilation_cache=", "--config.total_iter=4",
                     "--config.save_freq=2"), env, timeout=240, preexec_fn=_small_files_only)
  assert_refused(r, "could not save step 2")
  assert "step 4/4" not in r.stdout  # stopped at the first failed save, not at the end
  assert not [d for d in os.listdir(tmp_path / "wd" / "checkpoints") if d.isdigit()]


def test_train_resume_with_another_model_keeps_the_config(train_dataset, subprocess_env, tmp_path):
  wd = tmp_path / "wd"
  (wd / "checkpoints").mkdir(parents=True)
  from cmp_jax import checkpoint
  checkpoint.write_run_config(str(wd), train_fixture.tiny_config(train_dataset))
  before = (wd / "config.json").read_text()
  r = run_tool(train(train_dataset, wd, "--config.model.image_encoder=resnet34"), subprocess_env())
  assert_refused(r, "model.image_encoder", "resnet34")
  assert (wd / "config.json").read_text() == before


# ---------------------------------------------------------------------------------------------------------
# convert, propagate, prepare
# ---------------------------------------------------------------------------------------------------------

QUICKSTART = "configs/quickstart.py"


@pytest.fixture(scope="module")
def quickstart_zeros(tmp_path_factory):
  """A checkpoint folder of the quick-start model (all weights zero) with its config.json."""
  from cmp_jax import checkpoint, config_lib, models
  import jax
  import numpy as np
  d = str(tmp_path_factory.mktemp("qs"))
  config = config_lib.load_config(QUICKSTART)
  checkpoint.save_variables(d, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                                            models.variable_shapes(config.model)), step=3)
  checkpoint.write_run_config(d, config)
  return d


@pytest.mark.parametrize("args, words", [
    (["sideways", "--config", QUICKSTART, "--out", "x"], ("from-torch, to-torch or pack", "sideways")),
    (["to-torch", "--config", QUICKSTART, "--checkpoint", "/nonexistent/run", "--out", "x.pth"],
     ("/nonexistent/run", "does not exist")),
    (["to-torch", "--config", QUICKSTART, "--checkpoint", "QS", "--out", "x.pth",
      "--config.model.image_encoder=resnet34"], ("model.image_encoder is 'resnet18' there but 'resnet34'",)),
    (["to-torch", "--config", QUICKSTART, "--checkpoint", "QS", "--out", "OUTDIR"], ("OUTDIR",)),
    (["from-torch", "/nonexistent/ckpt.pth", "--config", QUICKSTART, "--out", "x"], ("/nonexistent/ckpt.pth",)),
])
def test_convert(quickstart_zeros, subprocess_env, tmp_path, args, words):
  subst = {"QS": quickstart_zeros, "OUTDIR": str(tmp_path)}
  args = [subst.get(a, a) for a in args]
  assert_refused(run_tool(["-m", "cmp_jax.convert", *args], subprocess_env()), *[subst.get(w, w) for w in words])


def test_propagate(quickstart_zeros, subprocess_env, tmp_path):
  from PIL import Image
  import numpy as np
  image = tmp_path / "photo.png"
  Image.fromarray(np.full((100, 140, 3), 128, np.uint8)).save(image)
  (tmp_path / "broken.jpg").write_bytes(b"not an image")
  base = ["-m", "cmp_jax.propagate", "--config", QUICKSTART, "--checkpoint", quickstart_zeros,
          "--out_png", str(tmp_path / "f.png")]
  for args, words in (
      (["--image", str(image), "--guide", "5;5;1;1"], ("--guide '5;5;1;1'",)),
      (["--image", str(image), "--guide", "500,5,1,1"], ("outside the 140x100 image",)),
      (["--image", str(tmp_path / "missing.jpg")], ("missing.jpg",)),
      (["--image", str(tmp_path / "broken.jpg")], ("broken.jpg",)),
      (["--image", str(image), "--config.model.image_encoder=resnet34"], ("model.image_encoder",)),
  ):
    assert_refused(run_tool(base + args, subprocess_env()), *words)
  assert not (tmp_path / "f.png").exists()


def test_prepare(subprocess_env, tmp_path):
  out = tmp_path / "ds"
  out.mkdir()
  (out / "old.txt").write_text("x")
  video = os.path.join(ROOT, "data", "sample", "frames", "bikes")  # a folder of frames
  for args, words in (
      (["--videos", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "new")], ("none.mp4",)),
      (["--videos", video, "--out", str(out)], ("is not empty", "--overwrite", "--append")),
      (["--videos", video, "--out", str(out / "old.txt")], ("not a folder",)),
  ):
    r = run_tool(["-m", "cmp_jax.data.prepare", *args], subprocess_env())
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = [x for x in r.stderr.splitlines() if "error:" in x]
    assert len(line) == 1 and all(w in line[0] for w in words), r.stderr
  assert sorted(os.listdir(out)) == ["old.txt"]
