r"""Linear probing of the learned image encoder (segmentation or classification), beside random init.

  python eval.py --config configs/probe_segmentation.py --workdir runs/probe_voc \
      --config.dataset=voc:data/VOCdevkit/VOC2012 --config.checkpoint=runs/quickstart
  python eval.py --config configs/probe_classification.py --workdir runs/probe_cls \
      --config.dataset=folder:path/to/tree --config.checkpoint=runs/quickstart

config.dataset: voc:PATH, folder:PATH or tfds:NAME (cmp_jax/probe/datasets.py). config.checkpoint: a
training workdir, a folder written by `python -m cmp_jax.convert from-torch` (or their checkpoints/ or one
step folder), or 'random'. The encoder's architecture, input normalisation and training crop come from
the checkpoint's config.json (`<workdir>/config.json`) when there is one; `--config.model.KEY=VALUE` on
the command line wins. Unless the checkpoint is 'random', the same probe then runs on a random
initialisation of the same architecture.

The workdir receives:
  results.json   {"trained": {...}, "random_init": {...}, "settings": {...}}: top1 (classification) or
                 miou, pixel_acc and iou/<class> (segmentation), the same on the train split as train_*,
                 and the settings the run used. Written atomically (temporary file, then os.replace).
  features/      the cached features of each split (reused by a later run with the same inputs)

Bad input (an unknown dataset scheme, a layout that is not the expected one, an image without its mask, a
mask whose size differs from its image, labels outside the class range, an empty class folder, an
unreadable image, a checkpoint of another architecture) stops the run with one line naming the file or
setting and exit code 2, before anything is written to the workdir.
"""

import json
import os
import shutil
import time

from absl import flags
from absl import logging
from ml_collections import config_flags

from cmp_jax import cli, fileio

# Taken from the checkpoint's config.json unless given on the command line: every `model` key, and these.
FROM_CHECKPOINT_DATA = ("image_mean", "image_std", "crop_size")


class EvalError(ValueError):
  """A setting eval.py cannot use; the message names it."""


def _log(msg):
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -------------------------------------------------------------------------------------------------------------
# Config: the probe file, then the checkpoint's config.json, then the command line.
# -------------------------------------------------------------------------------------------------------------

def resolve_config(config, overridden=()):
  """Fills the encoder's settings from the checkpoint's config.json; returns a description of the source."""
  ckpt = str(config.checkpoint)
  if ckpt == "random":
    source = "config file (checkpoint 'random')"
  else:
    if not os.path.isdir(os.path.expanduser(ckpt)):
      raise EvalError(f"config.checkpoint {ckpt!r}: no such folder (give a training workdir, a `convert "
                      "from-torch` output folder, or 'random')")
    from cmp_jax import checkpoint
    try:
      cfg_path, saved = checkpoint.read_run_config(checkpoint.run_dir(os.path.expanduser(ckpt)))
    except checkpoint.CheckpointError as e:
      raise EvalError(f"config.checkpoint: {e}") from None
    if saved is not None:
      keys = [("model", k) for k in saved.get("model", {}) if k in config.model]
      keys += [("data", k) for k in FROM_CHECKPOINT_DATA if k in saved.get("data", {})]
      for section, key in keys:
        if f"{section}.{key}" in overridden:
          continue
        value = saved[section][key]
        current = config[section][key]
        config[section][key] = tuple(value) if isinstance(current, tuple) else type(current)(value)
      source = cfg_path
    else:
      source = f"config file (no config.json next to {ckpt})"
  if int(config.image_size) <= 0:
    config.image_size = int(min(config.data.crop_size))
  return source


# -------------------------------------------------------------------------------------------------------------
# The run.
# -------------------------------------------------------------------------------------------------------------

def _fmt(v):
  if v is None:
    return "-"
  if isinstance(v, float):
    return "nan" if v != v else f"{100 * v:.1f}%"
  return str(v)


def table(task, results, columns):
  keys = ["miou", "pixel_acc", "mean_class_acc"] if task == "segmentation" else ["top1", "mean_class_acc"]
  labels = {"miou": "mIoU", "pixel_acc": "pixel accuracy", "mean_class_acc": "mean class accuracy", "top1": "top-1"}
  rows = [(labels[k], k) for k in keys]
  if task == "segmentation":
    rows += [(f"IoU {k[len('iou/'):]}", k) for k in results[columns[0][0]] if k.startswith("iou/")]
  rows += [(f"train {labels[keys[0]]}", "train_" + keys[0])]
  width = max(len(r[0]) for r in rows) + 2
  lines = ["".ljust(width) + "".join(title.rjust(22) for _, title in columns)]
  for label, key in rows:
    lines.append(label.ljust(width) + "".join(_fmt(results[name].get(key)).rjust(22) for name, _ in columns))
  return "\n".join(lines)


def _strict_json(obj):
  """NaN (a metric with nothing to measure) -> null, so results.json is strict JSON."""
  if isinstance(obj, dict):
    return {k: _strict_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_strict_json(v) for v in obj]
  if isinstance(obj, float) and obj != obj:
    return None
  return obj


def run_probe(config, workdir, overridden=(), log=_log):
  """Checks everything, probes the trained and the random-init encoder, writes results.json; returns it."""
  from cmp_jax.probe import datasets
  if config.task not in datasets.TASKS:
    raise EvalError(f"config.task {config.task!r}: must be one of {datasets.TASKS}")
  source = resolve_config(config, overridden)
  dataset = datasets.open_dataset(config.dataset, config.task, config, log)  # checks every file; no jax yet
  log(f"dataset {config.dataset}: {len(dataset.train)} train / {len(dataset.val)} val "
      f"{'images' if config.task == 'segmentation' else 'samples'}, {dataset.num_classes} classes")

  import jax  # noqa: F401  (after the cheap checks)
  from cmp_jax.evaluators import common
  from cmp_jax.probe import features
  encoder = features.build_encoder(config.model)
  features.check_layers(encoder, config.layers)
  features.check_image_size(encoder, int(config.image_size))
  log(f"encoder {encoder.arch_name} (img_enc_dim {config.model.img_enc_dim}, {config.model.dtype}) from {source}; "
      f"layers {', '.join(config.layers)}; images {config.image_size}x{config.image_size}")
  runs = []
  if config.checkpoint != "random":
    variables, step = features.load_encoder_variables(config.checkpoint, config)
    runs.append(("trained", variables, {"checkpoint": os.path.abspath(config.checkpoint), "step": int(step)}))
    log(f"loaded the image encoder of {config.checkpoint} (step {step})")
  runs.append(("random_init", features.random_variables(encoder, int(config.image_size), int(config.seed)),
               {"checkpoint": "random", "seed": int(config.seed)}))

  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)  # everything that can be checked up front has been
  try:
    evaluator = common.from_config(f"probe_{config.task}", config, encoder=encoder, dataset=dataset,
                                   cache_dir=os.path.join(workdir, "features"), log=log)
    results = {}
    for name, variables, info in runs:
      t0 = time.time()
      results[name] = {**dict(evaluator.run(variables, name=name)), **info, "seconds": round(time.time() - t0, 1)}
  except datasets.ProbeError:  # e.g. a truncated image, found only when decoded: leave no new workdir behind
    if created:
      shutil.rmtree(workdir, ignore_errors=True)
    raise
  results["settings"] = {**config.to_dict(), "encoder": encoder.arch_name, "config_source": source,
                         "train_items": len(dataset.train), "val_items": len(dataset.val),
                         "class_names": list(dataset.class_names)}
  columns = [(n, f"trained (step {results[n]['step']})" if n == "trained" else "random init") for n, _, _ in runs]
  print(f"\n== linear probe ({config.task}) on {config.dataset}: {len(dataset.val)} val "
        f"{'images' if config.task == 'segmentation' else 'samples'}, {dataset.num_classes} classes; "
        f"{encoder.arch_name} [{', '.join(config.layers)}] at {config.image_size} px")
  print(table(config.task, results, columns), flush=True)
  path = os.path.join(workdir, "results.json")
  fileio.atomic_write_bytes(path, (json.dumps(_strict_json(results), indent=2) + "\n").encode())
  log(f"wrote {path}")
  return results


def _one_line(e):
  return " ".join(str(e).split("\n")).replace("  ", " ")


def define_flags(fv):
  flags.DEFINE_string("workdir", None, "Directory for results.json and the feature cache.", flag_values=fv)


def main(argv):
  fv, _ = cli.parse(argv, define_flags, __doc__, required=("config", "workdir"))
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  overridden = set(config_flags.get_override_values(fv["config"]))
  from cmp_jax.probe import datasets
  config = fv.config
  try:
    with config.unlocked():
      run_probe(config, fv.workdir, overridden)
  except (EvalError, datasets.ProbeError) as e:
    cli.fail(_one_line(e))
  return 0


if __name__ == "__main__":
  cli.run(main)
