r"""Trains CMP as a config says, on every device of every process, and resumes from --workdir on its own.

  python train.py --config configs/quickstart.py --workdir runs/quickstart
  python train.py --config configs/alexnet_yfcc_voc_16gpu_70k.py --workdir runs/a70k --config.batch_size=8

One process drives all of its local devices. Several hosts: start one process per host with
`--coordinator_address=HOST0:PORT --num_processes=N --process_id=I` (or the environment variables
CMP_COORDINATOR, CMP_NUM_PROCESSES, CMP_PROCESS_ID; or CMP_AUTO_DISTRIBUTED=1 where JAX finds the
cluster itself: TPU pod slices, SLURM). Each process reads only its own part of every global batch.

config.batch_size is PER DEVICE, as in the original (global batch = batch_size x devices); or set
config.global_batch_size. The workdir holds the whole state of a run:

  checkpoints/<step>/   orbax train state (params, batch_stats, SGD momentum, step), the last keep_checkpoints
  metrics.jsonl         one JSON object per line: train loss / lr / img/s every print_freq, val metrics
  events/               TensorBoard events (scalars and validation pictures)
  vis/val_<step>.png    validation pictures: input + guidance crosses | predicted flow | target flow
  log.txt               the progress lines printed to the terminal
  config.json           the config the run was started with

Sections: config and start-up, devices and mesh, model and optimiser, train state (init or resume),
input pipeline, compiled steps, validation, train loop.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # tf.data's start-up banners

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cmp_jax import config_lib

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                          lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, pictures; a run resumes from it.")
flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0 (or CMP_COORDINATOR).")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes (or CMP_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index (or CMP_PROCESS_ID).")
flags.DEFINE_string("compilation_cache", os.path.join(os.path.expanduser("~"), ".cache", "cmp_jax", "xla"),
                    "Persistent XLA compilation cache directory ('' to disable; JAX_COMPILATION_CACHE_DIR wins).")


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite; the message names the step."""


def _log_to(path):
  def log(msg):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if path:
      with open(path, "a") as f:
        f.write(line + "\n")
  return log


def train_and_evaluate(config, workdir):
  """Trains (or resumes) the run in `workdir`; returns the final host train state and val metrics."""
  # Heavy imports here, so that a bad config or flag fails in a second.
  import jax
  import numpy as np

  from cmp_jax import checkpoint, flowviz, models, optim, parallel, train_lib
  from cmp_jax.data import pipeline

  # ---------------------------------------------------------------------------------------------------------
  # Config and start-up: everything that can be wrong with the config fails here, before any compile or I/O.
  # ---------------------------------------------------------------------------------------------------------
  config_lib.validate(config)
  ndev = jax.device_count()
  if config.global_batch_size > 0:
    if config.global_batch_size % ndev:
      raise config_lib.ConfigError(
          f"config.global_batch_size: {config.global_batch_size} does not divide by the {ndev} devices")
    with config.unlocked():
      config.batch_size = config.global_batch_size // ndev
  crop_h, crop_w = (int(s) for s in config.data.crop_size)
  try:
    models.build_model(config.model).check_input((1, crop_h, crop_w, 3), (1, crop_h, crop_w, 4))
  except ValueError as e:
    raise config_lib.ConfigError(f"config.data.crop_size: {e}") from None

  primary = jax.process_index() == 0  # logs, metrics, pictures; every process trains and checkpoints
  os.makedirs(workdir, exist_ok=True)
  log = _log_to(os.path.join(workdir, "log.txt")) if primary else (lambda msg: None)
  if primary:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  # ---------------------------------------------------------------------------------------------------------
  # Devices and mesh: batch on the 'data' axis, everything else replicated; BatchNorm per device by default.
  # ---------------------------------------------------------------------------------------------------------
  mesh = parallel.make_mesh()
  per_device = int(config.batch_size)
  global_batch = per_device * mesh.size
  groups = parallel.bn_groups(config, mesh)
  log(f"{jax.process_count()} process(es), {mesh.size} device(s) ({jax.devices()[0].platform}); batch "
      f"{per_device} per device, {global_batch} global; BatchNorm statistics over "
      f"{'each device' if config.model.bn_stats == 'per_device' else 'the global batch'}; crop {crop_h}x{crop_w}; "
      f"model dtype {config.model.dtype}")

  # ---------------------------------------------------------------------------------------------------------
  # Model and optimiser.
  # ---------------------------------------------------------------------------------------------------------
  model = models.build_model(config.model, bn_groups=groups)
  tx, schedule = optim.from_config(config.optimizer)
  nbins, fmax = int(config.model.nbins), float(config.model.fmax)

  # ---------------------------------------------------------------------------------------------------------
  # Train state: shapes from eval_shape, replicated; a fresh init, or the latest checkpoint in the workdir.
  # ---------------------------------------------------------------------------------------------------------
  rep, batch_sh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  init_rng = train_lib.init_key(config.seed)
  dropout_rng = parallel.replicate(np.asarray(train_lib.dropout_key(config.seed)), mesh)
  init_fn = lambda rng: train_lib.init_state(model, tx, rng, crop_h, crop_w)  # noqa: E731
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                          jax.eval_shape(init_fn, init_rng))
  log(f"model: {config.model.image_encoder} + {config.model.sparse_encoder} + {config.model.flow_decoder}, "
      f"{models.count_params(abstract['params']):,} parameters")
  mngr = checkpoint.train_manager(workdir, int(config.keep_checkpoints))
  latest = mngr.latest_step()
  if latest is None:
    state = jax.jit(init_fn, out_shardings=rep)(init_rng)
    log("initialised a new run")
  else:
    state = checkpoint.restore_state(mngr, latest, abstract)
    log(f"resumed from {os.path.join(workdir, 'checkpoints', str(latest))}")
  start_step = int(parallel.to_host(state["step"]))
  total = int(config.total_iter)

  # ---------------------------------------------------------------------------------------------------------
  # Input pipeline: this process's share of each global batch, restarted at the resumed step.
  # ---------------------------------------------------------------------------------------------------------
  host = dict(process_index=jax.process_index(), process_count=jax.process_count(),
              local_devices=jax.local_device_count())
  train_iter = pipeline.make_train_iterator(config, start_step=start_step, **host)
  val_iter = pipeline.make_val_iterator(config, max_batches=int(config.val_iter), **host)
  log(f"data: {train_iter.num_samples} training samples, {val_iter.num_samples} validation samples "
      f"({len(val_iter)} batches of {val_iter.global_batch_size})")

  def to_device(batch):
    return parallel.shard_batch({k: batch[k] for k in ("image", "sparse", "flow")}, mesh)

  # ---------------------------------------------------------------------------------------------------------
  # Compiled steps.
  # ---------------------------------------------------------------------------------------------------------
  update = jax.jit(train_lib.make_update_fn(model, tx, schedule, nbins, fmax), donate_argnums=(0,),
                   out_shardings=(rep, rep))
  evaluate = jax.jit(train_lib.make_eval_fn(model, nbins, fmax), out_shardings=(batch_sh, batch_sh))

  writer = train_lib.MetricWriter(workdir, tensorboard=bool(config.tensorboard), enabled=primary)
  mean, std = np.asarray(config.data.image_mean), np.asarray(config.data.image_std)

  # ---------------------------------------------------------------------------------------------------------
  # Validation over the whole val list: loss, EPE (all / moving pixels) and two baselines, pictures.
  # ---------------------------------------------------------------------------------------------------------
  def validate(step):
    t0 = time.time()
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    acc, vis = train_lib.ValMetrics(), []
    for batch in val_iter:
      stats, pred = evaluate(variables, to_device(batch))
      stats, pred = parallel.local_rows(stats), parallel.local_rows(pred)
      stats["nearest_epe"], stats["nearest_epe_moving"] = train_lib.nearest_guidance_sums(
          batch["sparse"], batch["flow"])
      acc.add(stats, crop_h * crop_w, weight=batch["valid"])
      if primary and len(vis) < config.vis_num:
        for i in np.flatnonzero(batch["valid"])[:config.vis_num - len(vis)]:
          vis.append((batch["image"][i], batch["sparse"][i], pred[i], batch["flow"][i]))
    acc.merge(parallel.sum_over_processes(acc.sums))
    res = acc.result()
    log(f"val step {step}: loss {res['loss']:.4f} | EPE {res['epe']:.3f} px (moving {res['epe_moving']:.3f}) | "
        f"zero flow {res['zero_epe']:.3f} ({res['zero_epe_moving']:.3f}) | nearest guidance "
        f"{res['nearest_epe']:.3f} ({res['nearest_epe_moving']:.3f}) | {res['samples']} samples, "
        f"{100 * res['moving_fraction']:.1f}% moving px, {time.time() - t0:.1f}s")
    writer.scalars(step, {f"val/{k}": v for k, v in res.items()})
    if vis:
      picture = train_lib.visualise(*[np.stack(x) for x in zip(*vis)], mean=mean, std=std)
      flowviz.save_png(os.path.join(workdir, "vis", f"val_{step:07d}.png"), picture)
      writer.image(step, "val/input_pred_target", picture)
    writer.flush()
    return res

  # ---------------------------------------------------------------------------------------------------------
  # Train loop. The loss of each step is read one step late (so the host never waits on the device), and at
  # once before a checkpoint, a validation or a report: a NaN/inf stops the run before anything is saved.
  # ---------------------------------------------------------------------------------------------------------
  def check(step, metrics):
    loss = float(parallel.to_host(metrics["loss"]))
    if not np.isfinite(loss):
      raise NonFiniteLossError(
          f"the training loss is {loss} at step {step} (0-based; lr {float(parallel.to_host(metrics['lr'])):g}). "
          f"Stopped before saving anything; the last checkpoint in {os.path.join(workdir, 'checkpoints')} "
          "(if any) is from before. Lower config.optimizer.lr or check the data.")
    return loss

  val_res = None
  if config.initial_val and start_step == 0:
    val_res = validate(0)
  chrono = train_lib.Chrono(start_step, total, global_batch)
  pending, window, last_metrics = None, [], None
  log(f"training steps {start_step} -> {total}")
  try:
    for step in range(start_step, total):
      batch = to_device(next(train_iter))
      state, metrics = update(state, batch, dropout_rng)
      if pending is not None:
        window.append(check(*pending))
      pending, done = (step, metrics), step + 1
      report = done % config.print_freq == 0 or done == total
      save = done % config.save_freq == 0 or done == total
      val = done % config.val_freq == 0 or done == total
      if report or save or val:
        window.append(check(*pending))
        pending, last_metrics = None, parallel.to_host(metrics)
      if report:
        speed = chrono.report(done)
        row = {"train/loss": float(np.mean(window)), "train/lr": float(last_metrics["lr"]),
               "train/npts": float(last_metrics["npts"]), "img_per_s": speed["img_per_s"]}
        log(f"step {done}/{total} | loss {row['train/loss']:.4f} | lr {row['train/lr']:.3g} | "
            f"{speed['img_per_s']:.1f} img/s | ETA {train_lib.format_seconds(speed['eta_s'])}")
        writer.scalars(done, row)
        window = []
      if save:
        checkpoint.save_state(mngr, done, state)
      if val:
        val_res = validate(done)
  finally:
    mngr.wait_until_finished()
    writer.close()
  if start_step < total or latest is None:
    log(f"done: checkpoints in {os.path.join(workdir, 'checkpoints')} (latest {mngr.latest_step()}), "
        f"metrics in {os.path.join(workdir, 'metrics.jsonl')}, pictures in {os.path.join(workdir, 'vis')}")
  mngr.close()
  return parallel.to_host(state), val_res


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.workdir is None:
    raise app.UsageError("--workdir is required")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required (e.g. --config configs/quickstart.py)")
  try:
    config_lib.validate(config)  # before jax touches a device
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)

  logging.set_verbosity(logging.WARNING)  # orbax and jax log every save and backend probe at INFO
  import jax

  from cmp_jax import parallel
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or FLAGS.compilation_cache
  if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
  parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  try:
    train_and_evaluate(config, FLAGS.workdir)
  except (config_lib.ConfigError, NonFiniteLossError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2 if isinstance(e, config_lib.ConfigError) else 1)


def parse_flags(argv):
  """absl's flag parsing, with an unknown `--config.KEY` reported by name instead of a traceback."""
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError) as e:
    bad = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    name = str(e).strip("'\"")
    key = next((b for b in bad if b.rsplit(".", 1)[-1] == name), f"--config.{name}")
    print(f"error: {key[2:]}: no such key in the config ({argv_config(argv)}); see cmp_jax/config_lib.py "
          "base() for the keys", file=sys.stderr)
    sys.exit(2)


def argv_config(argv):
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return "no --config given"


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=parse_flags)
