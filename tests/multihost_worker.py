"""One process of the multi-host test (tests/test_multihost.py): trains the tiny fixture config.

  python tests/multihost_worker.py DATA_ROOT WORKDIR OUT PROCESS_ID NUM_PROCESSES COORDINATOR [STEPS [LR]]

Starts JAX's distributed runtime exactly as train.py does (cmp_jax.parallel.initialize_distributed, gloo
collectives on CPU) when NUM_PROCESSES > 1. Then, for each T in STEPS (comma-separated, default "1,3"), runs
trainer.train_and_evaluate with total_iter=T in WORKDIR (so each run after the first resumes from the last
one's checkpoint) and writes this process's final parameters and batch statistics to
OUT/state_<PROCESS_ID>_<T>.npz and its validation result to OUT/val_<PROCESS_ID>_<T>.json. The device
count comes from XLA_FLAGS.
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def main(data_root, workdir, out, process_id, num_processes, coordinator, steps="1,3", lr="0.05"):
  import jax
  import numpy as np

  from cmp_jax import parallel, trainer
  import train_fixture

  process_id, num_processes = int(process_id), int(num_processes)
  if num_processes > 1:
    parallel.initialize_distributed(coordinator, num_processes, process_id)
  for total in (int(t) for t in steps.split(",")):
    config = train_fixture.tiny_config(data_root)
    config.total_iter = total
    config.save_freq = config.val_freq = config.print_freq = 1
    config.optimizer.lr = float(lr)
    config.tensorboard = False
    state, val = trainer.train_and_evaluate(config, workdir)
    flat = {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path({"params": state["params"],
                                                             "batch_stats": state["batch_stats"]})}
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, f"state_{process_id}_{total}.npz"), **flat)
    with open(os.path.join(out, f"val_{process_id}_{total}.json"), "w") as f:
      json.dump({k: float(v) for k, v in val.items()}, f)
  print(f"process {process_id}/{num_processes}: {jax.local_device_count()} local of {jax.device_count()} "
        f"devices, done", flush=True)


if __name__ == "__main__":
  main(*sys.argv[1:])
