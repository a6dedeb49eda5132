"""Validates a trained model on a config's val list: DiscreteLoss and end-point error (EPE) of the predicted flow,
beside zero flow and nearest-guidance fill on the same guidance, over the whole list and per clip.

  python -m cmp_jax.validate --config configs/motion_cpu.py --checkpoint motion
  python -m cmp_jax.validate --config configs/quickstart.py --checkpoint runs/quickstart --paper_density

The guidance is drawn by the config's val sampler, or at the paper's density scaled to the crop with
--paper_density (`config_lib.paper_density`), exactly as train.py's validation draws it. A clip is the folder
of a pair's first frame (frames/<clip>/...). EPE is in pixels of the network's input crop; "moving" pixels
are those whose target moves more than 1 px. Prints a table; --out DIR also writes DIR/validation.json and
DIR/validation.png (input with guidance | predicted flow | target flow, config.vis_num rows).
"""

import json
import os
import sys

import jax
import numpy as np
from absl import flags

from cmp_jax import checkpoint, cli, config_lib, fileio, flowviz, inference, parallel
from cmp_jax.data import formats, pipeline, sources
from cmp_jax.evaluators import flow as flow_eval


def define_flags(fv):
  flags.DEFINE_string("checkpoint", None, "a training workdir, one of its step folders, a packed or converted "
                      f"model folder, or a short name ({', '.join(inference.MODELS)})", flag_values=fv)
  flags.DEFINE_boolean("paper_density", False, "draw the val guidance at the paper's density (13.5 points per "
                       "384x384, scaled to the crop) instead of the config's", flag_values=fv)
  flags.DEFINE_string("out", None, "folder for validation.json and validation.png", flag_values=fv)


def clip_of_each_pair(config):
  """The clip name (folder of the first frame) of each val list entry, or None for TFRecord val data."""
  source = sources.make_source(config, "val")
  if not isinstance(source, sources.ListSource):
    return None
  return [os.path.basename(os.path.dirname(e.img1)) for e in source.entries]


def table(results, groups):
  """Markdown rows: the whole list, then each clip."""
  lines = ["| clip | pairs | guidance points | moving px | model EPE all (moving) | zero flow | nearest guidance |",
           "|---|---|---|---|---|---|---|"]
  for name in ["all"] + groups:
    r = {k.split("/", 1)[1]: v for k, v in results.items() if k.startswith(name + "/")} if name != "all" else results
    lines.append(f"| {name} | {r['samples']} | {r['points']:.1f} | {100 * r['moving_fraction']:.0f}% | "
                 f"{r['epe']:.3f} ({r['epe_moving']:.3f}) | {r['zero_epe']:.3f} ({r['zero_epe_moving']:.3f}) | "
                 f"{r['nearest_epe']:.3f} ({r['nearest_epe_moving']:.3f}) |")
  return "\n".join(lines)


def main(argv):
  """The command line (module docstring); returns the exit code, 2 for a bad input."""
  return cli.main_of(argv, define_flags, _main, __doc__, required=("config", "checkpoint"),
                     user_errors=(inference.InferenceError, checkpoint.CheckpointError, formats.DataError,
                                  config_lib.ConfigError))


def _main(args):
  config = config_lib.validate(args.config, check_paths=False)
  if args.paper_density:
    config = config_lib.with_paper_density(config)
  model, variables, step = inference.load_model(config, args.checkpoint)
  val_iter = pipeline.make_val_iterator(config, process_index=0, process_count=1, local_devices=1)
  skipped = val_iter.check_files()  # a missing file is refused here (BadSampleError), unless skip_bad_samples
  if skipped:
    print(f"validation: {skipped} entries name missing files and are skipped (config.data.skip_bad_samples)")
  clips = clip_of_each_pair(config)
  mesh = parallel.make_mesh(jax.local_devices()[:1])
  evaluator = flow_eval.Evaluator(config, model=model, mesh=mesh, val_iter=val_iter, groups=clips)
  results, pictures = {}, {}
  for name, value in evaluator.run(variables):
    (pictures if np.ndim(value) == 3 else results)[name] = value
  density = "the paper's density" if args.paper_density else "the config's val sampler"
  print(f"{args.checkpoint} (step {step}) on {val_iter.num_samples} val pairs, {config.data.crop_size[0]}x"
        f"{config.data.crop_size[1]} centre crops, guidance from {density}; EPE in px, all pixels (moving):")
  groups = sorted(set(clips or ()))
  print(table(results, groups))
  if args.out:
    record = {"checkpoint": args.checkpoint, "step": step, "paper_density": bool(args.paper_density),
              "sample_bg_ratio": config.data.sample_bg_ratio, "nms_ks": config.data.nms_ks, "results": results}
    fileio.atomic_write_bytes(os.path.join(args.out, "validation.json"), json.dumps(record, indent=1).encode())
    if "input_pred_target" in pictures:
      flowviz.save_png(os.path.join(args.out, "validation.png"), pictures["input_pred_target"])
    print(f"wrote {os.path.join(args.out, 'validation.json')} and validation.png")
  return 0


if __name__ == "__main__":
  cli.run(main)
