"""Training and validation of CMP as a config says, on every device of every process; `train.py` is its
command line.

    state, val = trainer.train_and_evaluate(config, workdir)

The workdir holds the whole state of a run, and a run started on a workdir that has checkpoints resumes
from the latest:

  checkpoints/<step>/   orbax train state (params, batch_stats, SGD momentum, step), the last keep_checkpoints
  metrics.jsonl         one JSON object per line: train loss / lr / img/s every print_freq, val metrics
  events/               TensorBoard events (scalars and validation pictures)
  vis/val_<step>.png    validation pictures: input + guidance crosses | predicted flow | target flow
  vis/val_sparse_<step>.png  the same with guidance at the paper's density (config.sparse_val)
  log.txt               the progress lines printed to the terminal
  config.json           the config the run was started with

Sections: config and start-up, devices and mesh, model and optimiser, train state (init or resume),
input pipeline, compiled step and evaluators, train loop.
"""

import os
import time

import jax
import numpy as np

from cmp_jax import checkpoint, config_lib, flowviz, models, optim, parallel, train_lib
from cmp_jax.evaluators import common
from cmp_jax.evaluators import flow as flow_eval


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


class NoValidSamplesError(ValueError):
  """Every sample of the validation set was bad (and skipped): there is nothing to score."""


def _all_finite(tree):
  return jax.tree.reduce(lambda a, b: a & b, jax.tree.map(lambda x: jax.numpy.isfinite(x).all(), tree))


def train_and_evaluate(config, workdir):
  """Trains (or resumes) the run in `workdir`; returns the final host train state and val metrics."""
  from cmp_jax.data import pipeline  # imports TensorFlow: only once the config is known to be good

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

  if os.path.isdir(os.path.join(workdir, "checkpoints")):  # a resume: refused before anything is written
    checkpoint.check_model_config(workdir, config, f"the run in {workdir}")
  elif config.init_from:  # so is a start from weights that do not fit
    init_variables, init_step = checkpoint.load_checked(config.init_from, config)
  primary = jax.process_index() == 0  # logs, metrics, pictures; every process trains and checkpoints
  os.makedirs(workdir, exist_ok=True)
  log = _log_to(os.path.join(workdir, "log.txt")) if primary else (lambda msg: None)
  if primary:
    checkpoint.write_run_config(workdir, config)

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

  # ---------------------------------------------------------------------------------------------------------
  # Train state: shapes from eval_shape, replicated; a fresh init, or the latest checkpoint in the workdir.
  # ---------------------------------------------------------------------------------------------------------
  rep = parallel.replicated(mesh)
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
    if config.init_from:
      state = dict(state, **parallel.replicate({k: init_variables[k] for k in ("params", "batch_stats")}, mesh))
      log(f"initialised a new run with the weights of {config.init_from} (step {init_step})")
    else:
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
  missing = val_iter.check_files()  # a bad val entry is found now, not after hours of training
  if missing:
    log(f"validation: {missing} entries name missing files and are skipped (config.data.skip_bad_samples)")
  log(f"data: {train_iter.num_samples} training samples, {val_iter.num_samples} validation samples "
      f"({len(val_iter)} batches of {val_iter.global_batch_size})")
  # Validation sets: 'val' with the config's own guidance; 'val_sparse' with the paper's density.
  val_sets = {"val": (config, val_iter)}
  if config.sparse_val:
    sparse_config = config_lib.with_paper_density(config)
    val_sets["val_sparse"] = (sparse_config, pipeline.make_val_iterator(
        sparse_config, max_batches=int(config.val_iter), **host))
    ratio, nms = sparse_config.data.sample_bg_ratio, sparse_config.data.nms_ks
    log(f"val_sparse: the val list again with guidance at the paper's density (grid stride "
        f"{int(ratio ** -0.5)} px, watershed nms_ks {nms})")

  # ---------------------------------------------------------------------------------------------------------
  # Compiled step and evaluators.
  # ---------------------------------------------------------------------------------------------------------
  update = jax.jit(train_lib.make_update_fn(model, tx, schedule, int(config.model.nbins),
                                            float(config.model.fmax), bool(config.model.freeze_bn)),
                   donate_argnums=(0,), out_shardings=(rep, rep))
  evaluate = flow_eval.jit_eval_fn(model, config, mesh)
  evaluators = {prefix: common.from_config("flow", c, model=model, mesh=mesh, val_iter=it, evaluate=evaluate)
                for prefix, (c, it) in val_sets.items()}
  writer = train_lib.MetricWriter(workdir, tensorboard=bool(config.tensorboard), enabled=primary)

  def validate(step):
    """Runs every evaluator; returns the 'val' results."""
    results = {}
    for prefix, evaluator in evaluators.items():
      t0 = time.time()
      res, pictures = {}, {}
      for name, value in evaluator.run({"params": state["params"], "batch_stats": state["batch_stats"]}):
        (pictures if np.ndim(value) == 3 else res)[name] = value
      bad, first = evaluator.val_iter.bad_samples.first()
      if not res["samples"]:
        raise NoValidSamplesError(f"validation: every sample of config.data.val_source is bad ({bad} skipped; "
                                  f"first: {'; '.join(first)}): nothing to score")
      log(f"{prefix} step {step}: {flow_eval.summary(res, time.time() - t0)}" +
          (f" | {bad} bad samples skipped (first: {'; '.join(first)})" if bad else ""))
      writer.scalars(step, {**{f"{prefix}/{k}": v for k, v in res.items()},
                            **({f"{prefix}/bad_samples": bad} if bad else {})})
      for name, picture in pictures.items():
        flowviz.save_png(os.path.join(workdir, "vis", f"{prefix}_{step:07d}.png"), picture)
        writer.image(step, f"{prefix}/{name}", picture)
      results[prefix] = res
    writer.flush()
    return results["val"]

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
  pending, window, bad_reported = None, [], 0
  params_finite = jax.jit(_all_finite)
  def next_batch():
    return parallel.shard_batch({k: v for k, v in next(train_iter).items() if k in ("image", "sparse", "flow")},
                                mesh)

  if start_step < total:
    # The step is compiled ahead and every process starts its loop together: on a loaded machine one process
    # can finish compiling much later than another, longer than a collective waits for its peers.
    t0, first = time.time(), next_batch()
    update = update.lower(state, first, dropout_rng).compile()
    log(f"compiled the train step in {time.time() - t0:.0f}s")
    parallel.barrier(f"cmp_jax_train_start_{start_step}_{total}")
  log(f"training steps {start_step} -> {total}")
  try:
    for step in range(start_step, total):
      batch = first if step == start_step else next_batch()
      state, metrics = update(state, batch, dropout_rng)
      if pending is not None:
        window.append(check(*pending))
      pending, done = (step, metrics), step + 1
      report = train_lib.itstime(done, config.print_freq, total)
      save = train_lib.itstime(done, config.save_freq, total)
      val = train_lib.itstime(done, config.val_freq, total)
      if report or save or val:
        window.append(check(*pending))
        pending = None
      if report:
        host_metrics = parallel.to_host(metrics)
        speed = chrono.report(done)
        row = {"train/loss": float(np.mean(window)), "train/lr": float(host_metrics["lr"]),
               "train/npts": float(host_metrics["npts"]), "img_per_s": speed["img_per_s"]}
        log(f"step {done}/{total} | loss {row['train/loss']:.4f} | lr {row['train/lr']:.3g} | "
            f"{speed['img_per_s']:.1f} img/s | ETA {common.format_seconds(speed['eta_s'])}")
        bad, first = train_iter.bad_samples.first()
        if bad > bad_reported:  # skip_bad_samples=True: say so as soon as it happens
          log(f"skipped {bad} bad training samples so far (first: {'; '.join(first)})")
          row.update({"data/bad_samples": bad, "data/bad_sample_files": first})
          bad_reported = bad
        writer.scalars(done, row)
        window = []
      if save:
        if not bool(params_finite(state["params"])):  # a finite loss can still leave inf/NaN weights
          raise NonFiniteLossError(
              f"the parameters are not finite after step {done - 1} (0-based; the loss was still finite). "
              f"Stopped before saving them; the last checkpoint in {os.path.join(workdir, 'checkpoints')} (if "
              "any) is from before. Lower config.optimizer.lr or check the data.")
        checkpoint.save_state(mngr, done, state)
      if val:
        val_res = validate(done)
  finally:
    mngr.wait_until_finished()
    writer.close()
  if start_step < total or latest is None:
    bad = [f"{it.bad_samples.count} {name}" for name, it in (("training", train_iter), ("validation", val_iter))
           if it.bad_samples.count]
    log(f"done: checkpoints in {os.path.join(workdir, 'checkpoints')} (latest {mngr.latest_step()}), "
        f"metrics in {os.path.join(workdir, 'metrics.jsonl')}, pictures in {os.path.join(workdir, 'vis')}" +
        (f"; bad samples skipped: {', '.join(bad)}" if bad else ""))
  mngr.close()
  return parallel.to_host(state), val_res
