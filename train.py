r"""Trains CMP as a config says, on every device of every process, and resumes from --workdir on its own.

  python train.py --config configs/quickstart.py --workdir runs/quickstart
  python train.py --config configs/alexnet_yfcc_voc_16gpu_70k.py --workdir runs/a70k --config.batch_size=8

One process drives all of its local devices. Several hosts: start one process per host with
`--coordinator_address=HOST0:PORT --num_processes=N --process_id=I` (or the environment variables
CMP_COORDINATOR, CMP_NUM_PROCESSES, CMP_PROCESS_ID; or CMP_AUTO_DISTRIBUTED=1 where JAX finds the
cluster itself: TPU pod slices, SLURM). Each process reads only its own part of every global batch.

config.batch_size is PER DEVICE, as in the original (global batch = batch_size x devices); or set
config.global_batch_size. What the workdir holds: cmp_jax/trainer.py.
"""

import os

from absl import flags
from absl import logging

from cmp_jax import cli, config_lib


def define_flags(fv):
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, pictures; a run resumes from it.",
                      flag_values=fv)
  flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0 (or CMP_COORDINATOR).",
                      flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes (or CMP_NUM_PROCESSES).",
                       flag_values=fv)
  flags.DEFINE_integer("process_id", None, "Multi-host: this process's index (or CMP_PROCESS_ID).", flag_values=fv)
  flags.DEFINE_string("compilation_cache", os.path.join(os.path.expanduser("~"), ".cache", "cmp_jax", "xla"),
                      "Persistent XLA compilation cache directory ('' to disable; JAX_COMPILATION_CACHE_DIR wins).",
                      flag_values=fv)


def main(argv):
  fv, _ = cli.parse(argv, define_flags, __doc__, required=("config", "workdir"))
  config = config_lib.validate(fv.config)  # before jax touches a device
  if os.path.exists(fv.workdir) and not os.path.isdir(fv.workdir):
    raise cli.UsageError(f"--workdir {fv.workdir}: exists and is not a folder")
  # The libraries' own messages (orbax and jax log every save and backend probe at INFO; a failed save logs
  # each writer thread's traceback) go to a file in the workdir; the terminal shows the trainer's lines.
  os.makedirs(fv.workdir, exist_ok=True)
  logging.set_verbosity(logging.WARNING)
  cli.libraries_to_file(os.path.join(fv.workdir, "libraries.log"))
  import jax

  from cmp_jax import checkpoint, parallel, trainer
  from cmp_jax.data import formats
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or fv.compilation_cache
  if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
  parallel.initialize_distributed(fv.coordinator_address, fv.num_processes, fv.process_id)
  try:
    trainer.train_and_evaluate(config, fv.workdir)
  except (checkpoint.CheckpointError, formats.DataError, trainer.NoValidSamplesError, OSError) as e:
    cli.fail(e)  # a workdir of another model, a failed save, bad data, a folder that cannot be written
  except trainer.NonFiniteLossError as e:  # not a bad input: exit code 1
    cli.fail(e, code=1)
  return 0


if __name__ == "__main__":
  cli.run(main, user_errors=(config_lib.ConfigError,))
