"""train.py, cmp_jax.trainer, cmp_jax.train_lib and the flow evaluator: start-up checks, metrics, NaN stop,
bf16, SIGKILL + resume.

Subprocess runs use 2 simulated CPU devices, a tiny ResNet-18 model on 32x32 crops of a fixture dataset in
the original's layout (tests/train_fixture.py, the `train_dataset` fixture of conftest.py), and a persistent
compilation cache under /tmp.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import train_fixture
from cmp_jax import checkpoint, config_lib, losses, models, optim, train_lib, trainer
from cmp_jax.evaluators import flow as flow_eval

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_cmd(data_root, workdir, *overrides):
  return [sys.executable, os.path.join(ROOT, "train.py"), "--config",
          f"{os.path.join(ROOT, 'tests', 'train_fixture.py')}:{data_root}", "--workdir", str(workdir), *overrides]


# ---------------------------------------------------------------------------------------------------------
# Start-up: a bad config fails at once, naming the key, before jax compiles or reads data.
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("--config.no_such_key=1", "config.no_such_key"),
    ("--config.data.crop_size=(100,100)", "config.data.crop_size"),
    ("--config.data.val_source=('/nonexistent/val.txt',)", "config.data.val_source"),
    ("--config.global_batch_size=5", "config.global_batch_size"),
])
def test_bad_config_fails_at_startup_naming_the_key(train_dataset, subprocess_env, tmp_path, override, key):
  t0 = time.time()
  r = subprocess.run(train_cmd(train_dataset, tmp_path / "wd", override), env=subprocess_env(),
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 2, r.stdout + r.stderr
  assert key in r.stderr, r.stderr
  assert "Traceback" not in r.stderr
  assert not (tmp_path / "wd" / "checkpoints").exists()
  assert time.time() - t0 < 60


# ---------------------------------------------------------------------------------------------------------
# Metrics and baselines
# ---------------------------------------------------------------------------------------------------------

def test_nearest_guidance_baseline_by_hand():
  sparse = np.zeros((4, 5, 4), np.float32)
  sparse[0, 0] = [1, 2, 1, 1]
  sparse[3, 4] = [-3, 5, 1, 1]
  got = flow_eval.nearest_guidance_flow(sparse)
  np.testing.assert_array_equal(got[0, 1], [1, 2])      # next to (0, 0)
  np.testing.assert_array_equal(got[3, 3], [-3, 5])     # next to (3, 4)
  np.testing.assert_array_equal(got[0, 0], [1, 2])
  np.testing.assert_array_equal(flow_eval.nearest_guidance_flow(np.zeros((3, 3, 4))), np.zeros((3, 3, 2)))
  flow = np.zeros((1, 4, 5, 2), np.float32)
  flow[0, 3, 4] = [-3, 5]  # the only moving pixel; the prediction there is exact
  all_sum, moving_sum = flow_eval.nearest_guidance_sums(sparse[None], flow)
  # Every pixel but (3,4) and its copy's error: pixels nearer (0,0) predict (1,2) -> sqrt(5) each.
  pred = flow_eval.nearest_guidance_flow(sparse)
  want = np.sqrt(np.sum(np.square(pred - flow[0]), -1)).sum()
  assert all_sum[0] == pytest.approx(want) and moving_sum[0] == 0.0


def test_smooth_guidance_fills():
  # An affine field sampled at four points: linear interpolation reproduces it inside their hull.
  gy, gx = np.mgrid[:20, :30].astype(np.float32)
  field = np.stack([0.3 * gx - 0.1 * gy + 2, 0.05 * gx + 0.2 * gy - 1], -1)
  sparse = np.zeros((20, 30, 4), np.float32)
  for y, x in ((2, 3), (2, 27), (17, 3), (17, 27)):
    sparse[y, x] = [*field[y, x], 1, 1]
  lin = flow_eval.linear_guidance_flow(sparse)
  np.testing.assert_allclose(lin[2:18, 3:28], field[2:18, 3:28], atol=1e-4)
  np.testing.assert_array_equal(lin[0, 0], field[2, 3])  # outside the hull: the nearest point
  # Points on one line have no triangle: nearest guidance.
  line = np.zeros_like(sparse)
  line[5, 2:30:9] = [1, 2, 1, 1]
  np.testing.assert_array_equal(flow_eval.linear_guidance_flow(line), flow_eval.nearest_guidance_flow(line))
  idw = flow_eval.idw_guidance_flow(sparse)
  np.testing.assert_allclose(idw[2, 3], field[2, 3], atol=1e-4)  # a guidance pixel keeps its vector
  lo, hi = field[[2, 2, 17, 17], [3, 27, 3, 27]].min(0), field[[2, 2, 17, 17], [3, 27, 3, 27]].max(0)
  assert (idw >= lo - 1e-4).all() and (idw <= hi + 1e-4).all()  # a weighted mean of the vectors
  np.testing.assert_array_equal(flow_eval.idw_guidance_flow(np.zeros((3, 3, 4))), np.zeros((3, 3, 2)))


def test_val_metrics_pool_pixels_and_ignore_padding():
  m = flow_eval.ValMetrics()
  keys = ("loss", "epe", "epe_moving", "moving", "zero_epe", "zero_epe_moving", "nearest_epe",
          "nearest_epe_moving", "points")
  m.add({k: np.array([1.0, 3.0, 100.0]) for k in keys}, pixels_per_sample=10, weight=np.array([1, 1, 0]))
  r = m.result()
  assert r["samples"] == 2
  assert r["loss"] == pytest.approx(2.0) and r["points"] == pytest.approx(2.0)  # means over samples
  assert r["epe"] == pytest.approx(4.0 / 20)          # sum over pixels / pixels
  assert r["epe_moving"] == pytest.approx(4.0 / 4.0)  # sum over moving pixels / moving pixels
  assert r["moving_fraction"] == pytest.approx(4.0 / 20)


def test_eval_fn_epe_of_a_perfect_and_a_zero_prediction():
  """Logits that put all mass on the target's bin centre decode to that flow (EPE 0 at bin centres)."""
  class Fixed:
    def apply(self, variables, image, sparse, train=False):
      return variables["logits"]

  centres = np.asarray(jax.device_get(jax.numpy.asarray(losses.bin_centres())))
  b, h, w = 2, 8, 8
  ku, kv = 60, 40
  logits = np.full((b, h, w, 198), -1e4, np.float32)
  logits[..., ku] = 0
  logits[..., 99 + kv] = 0
  flow = np.broadcast_to(np.array([centres[ku], centres[kv]], np.float32), (b, h, w, 2)).copy()
  batch = {"image": np.zeros((b, h, w, 3)), "sparse": np.zeros((b, h, w, 4)), "flow": flow}
  stats, pred = flow_eval.make_eval_fn(Fixed(), 99, 50.0)({"logits": logits}, batch)
  np.testing.assert_allclose(pred, flow, atol=1e-4)
  np.testing.assert_allclose(stats["epe"], 0, atol=1e-2)
  np.testing.assert_allclose(stats["moving"], h * w)
  np.testing.assert_allclose(stats["zero_epe"], h * w * np.hypot(centres[ku], centres[kv]), rtol=1e-5)
  np.testing.assert_allclose(stats["loss"], 0, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------
# A NaN loss stops the run, naming the step, before a checkpoint holds it.
# ---------------------------------------------------------------------------------------------------------

def test_nan_loss_stops_before_saving(train_dataset, tmp_path):
  c = train_fixture.tiny_config(train_dataset)
  c.batch_size = 1           # x 8 simulated devices
  c.optimizer.lr = 1e30      # diverges within a few steps
  c.save_freq = 1
  c.val_freq = 100
  c.tensorboard = False
  with pytest.raises(trainer.NonFiniteLossError, match=r"at step (\d+)") as err:
    trainer.train_and_evaluate(c, str(tmp_path))
  bad_step = int(err.value.args[0].split("at step ")[1].split()[0])
  saved = checkpoint.train_manager(str(tmp_path), 10).all_steps()
  # Checkpoint k holds the state after k updates; the state after the NaN step (bad_step + 1) is never saved.
  assert all(s <= bad_step for s in saved), (saved, bad_step)
  if saved:
    variables, _ = checkpoint.load_variables(str(tmp_path))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))


# ---------------------------------------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------------------------------------

def _one_step_setup(root, seed):
  """The tiny config, its optimiser and schedule, a random batch (2 samples, 32 x 32, 5 % guidance), and a
  fresh train state of the float32 model on the host."""
  c = train_fixture.tiny_config(root)
  tx, schedule = optim.from_config(c.optimizer)
  rng = np.random.default_rng(seed)
  flow = rng.normal(scale=3.0, size=(2, 32, 32, 2)).astype(np.float32)
  mask = (rng.random((2, 32, 32, 1)) < 0.05).astype(np.float32)
  batch = {"image": rng.normal(size=(2, 32, 32, 3)).astype(np.float32),
           "sparse": np.concatenate([flow * mask, mask, mask], -1), "flow": flow}
  model = models.build_model(c.model)
  state = jax.jit(lambda r: train_lib.init_state(model, tx, r, 32, 32))(train_lib.init_key(0))
  return c, tx, schedule, batch, model, jax.tree.map(np.asarray, state)


def test_bfloat16_step_runs_and_its_loss_is_close_to_float32(train_dataset):
  c, tx, schedule, batch, _, state = _one_step_setup(train_dataset, 0)
  results = {}
  for dtype in ("float32", "bfloat16"):
    c.model.dtype = dtype
    model = models.build_model(c.model)
    update = jax.jit(train_lib.make_update_fn(model, tx, schedule, 99, 50.0))
    s, losses = jax.tree.map(jnp.asarray, state), []
    for _ in range(2):
      s, m = update(s, batch, train_lib.dropout_key(0))
      losses.append(float(m["loss"]))
    results[dtype] = (losses, s)
  (l32, s32), (l16, s16) = results["float32"], results["bfloat16"]
  assert all(np.isfinite(l16))
  np.testing.assert_allclose(l16, l32, rtol=2e-2)
  # Parameters stay float32 under bf16 compute.
  assert {x.dtype for x in jax.tree.leaves(s16["params"])} == {jnp.dtype("float32")}


def test_freeze_bn_trains_in_eval_mode_and_keeps_the_statistics(train_dataset):
  _, tx, schedule, batch, model, state = _one_step_setup(train_dataset, 1)
  # Statistics that differ from any batch's, so eval mode and train mode give different gradients.
  state["batch_stats"] = stats_before = jax.tree.map(lambda x: 3.0 * x + 2.0, state["batch_stats"])

  def eval_mode_loss(params):
    logits = model.apply({"params": params, "batch_stats": state["batch_stats"]}, batch["image"], batch["sparse"],
                         train=False)
    return losses.discrete_loss(logits, batch["flow"], 99, 50.0)

  updates, _ = tx.update(jax.grad(eval_mode_loss)(state["params"]), state["opt"], state["params"])
  expected = jax.tree.map(np.asarray, optax.apply_updates(state["params"], updates))
  results = {}
  for freeze in (True, False):
    update = jax.jit(train_lib.make_update_fn(model, tx, schedule, 99, 50.0, freeze_bn=freeze))
    results[freeze] = jax.tree.map(np.asarray, update(jax.tree.map(jnp.asarray, state), batch,
                                                      train_lib.dropout_key(0))[0])
  frozen, unfrozen = results[True], results[False]
  jax.tree.map(np.testing.assert_array_equal, frozen["batch_stats"], stats_before)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), frozen["params"], expected)
  gap = max(np.abs(x - y).max() for x, y in zip(jax.tree.leaves(unfrozen["params"]), jax.tree.leaves(expected)))
  assert gap > 1e-4  # train mode (batch statistics) takes another step


def test_freeze_bn_is_refused_for_alexnet():
  c = config_lib.base()
  c.model.freeze_bn = True
  with pytest.raises(config_lib.ConfigError, match="model.freeze_bn"):
    config_lib.validate(c, check_paths=False)


def test_init_from_starts_a_new_run_with_the_given_weights(train_dataset, tmp_path):
  c = train_fixture.tiny_config(train_dataset)
  c.tensorboard, c.val_freq = False, 100
  # Weights as an earlier run leaves them: another init than the run's own, and BatchNorm statistics that
  # no init has.
  variables = models.build_model(c.model).init(jax.random.PRNGKey(3), np.zeros((1, 32, 32, 3)),
                                               np.zeros((1, 32, 32, 4)), train=False)
  variables = {"params": jax.tree.map(np.asarray, variables["params"]),
               "batch_stats": jax.tree.map(lambda x: 1.5 * np.asarray(x) + 0.1, variables["batch_stats"])}
  checkpoint.save_variables(str(tmp_path / "first"), variables, step=7)
  checkpoint.write_run_config(str(tmp_path / "first"), c)
  # A run from those weights that cannot move them: lr 0, BatchNorm frozen.
  c.init_from, c.model.freeze_bn, c.optimizer.lr, c.total_iter = str(tmp_path / "first"), True, 0.0, 1
  state, _ = trainer.train_and_evaluate(c, str(tmp_path / "second"))
  assert int(state["step"]) == 1
  for part in ("params", "batch_stats"):
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state[part]), variables[part])
  # Weights of another model are refused before the new run writes anything.
  c.model.decoder_combo = (1, 2)
  with pytest.raises(checkpoint.CheckpointError, match="model.decoder_combo"):
    trainer.train_and_evaluate(c, str(tmp_path / "third"))
  assert not (tmp_path / "third").exists()


# ---------------------------------------------------------------------------------------------------------
# Checkpoints: SIGKILL mid-run, restart, same final parameters as an uninterrupted run.
# ---------------------------------------------------------------------------------------------------------

def _committed_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def test_sigkilled_run_resumes_bit_exactly(train_dataset, subprocess_env, tmp_path):
  total = 16
  args = [f"--config.total_iter={total}", "--config.save_freq=4", "--config.print_freq=4",
          "--config.val_freq=1000", "--config.keep_checkpoints=3", "--config.tensorboard=False"]
  env = subprocess_env()
  ref, wd = tmp_path / "uninterrupted", tmp_path / "killed"

  # The uninterrupted reference and the run to kill go side by side.
  ref_proc = subprocess.Popen(train_cmd(train_dataset, ref, *args), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
  proc = subprocess.Popen(train_cmd(train_dataset, wd, *args), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 300
    while not _committed_steps(wd) and proc.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    ref_out = ref_proc.communicate(timeout=300)[0]
  finally:
    proc.wait(timeout=60)
    if ref_proc.poll() is None:
      ref_proc.kill()
  assert ref_proc.returncode == 0, ref_out[-3000:]
  assert _committed_steps(ref) == [8, 12, 16]  # keep_checkpoints=3
  assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  killed_at = _committed_steps(wd)[-1]
  assert 0 < killed_at < total
  # A save interrupted by a crash leaves a temporary folder: it must be ignored and cleaned up.
  junk = wd / "checkpoints" / f"{total - 1}.orbax-checkpoint-tmp"
  junk.mkdir()
  (junk / "half_written").write_text("x")

  r = subprocess.run(train_cmd(train_dataset, wd, *args), env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert f"resumed from {wd / 'checkpoints' / str(killed_at)}" in r.stdout
  assert not junk.exists()

  a, step_a = checkpoint.load_variables(str(ref))
  b, step_b = checkpoint.load_variables(str(wd))
  assert step_a == step_b == total
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=f"not bit-exact after resume: {jax.tree_util.keystr(path)}")

  # Outputs of a run.
  lines = [json.loads(l) for l in open(ref / "metrics.jsonl")]
  assert any("train/loss" in l and "img_per_s" in l for l in lines)
  val = [l for l in lines if "val/epe" in l]
  assert val and val[-1]["step"] == total and val[-1]["val/samples"] == 5
  assert os.path.isfile(ref / "vis" / f"val_{total:07d}.png")
  assert "ETA" in r.stdout and "img/s" in r.stdout
