"""Multi-host training for real: two processes x two CPU devices against one process x four devices.

Two processes on this machine join through jax.distributed (coordinator on 127.0.0.1, gloo collectives),
each with 2 CPU devices (XLA_FLAGS) and each reading only its own half of every global batch from the input
pipeline; a third process has 4 devices and reads whole global batches (4 x 2 samples). Each trains 1 step,
then resumes from that checkpoint to step 3 (tests/multihost_worker.py).

What is compared, and why so:
* after step 1: the two-process run equals the one-process run to float32 rounding (parameters, BatchNorm
  statistics, validation metrics over the whole val list): same data shards, same per-device BatchNorm, same
  averaged gradient. Only the order of the cross-process sum (gloo) differs.
* after step 3: the two processes hold bit-identical states (lockstep), equal to the checkpoint they wrote
  together. Against the one-process run only loosely: this tiny net (ResNet-18 on 32x32, BN over 2 x 4 x 4
  values in layer4, weights at the original's 0.02-gain init) is chaotic; a 1e-6 relative perturbation of
  its parameters grows to ~0.5% after one step and ~7% after two (measured), so rounding cannot stay small.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from cmp_jax import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one_process_with_four_devices(train_dataset, subprocess_env, tmp_path):
  data = train_dataset
  coordinator = f"127.0.0.1:{_free_port()}"
  out = tmp_path / "out"
  runs = {
      "multi0": ([data, tmp_path / "wd_multi", out, 0, 2, coordinator], subprocess_env(devices=2)),
      "multi1": ([data, tmp_path / "wd_multi", out, 1, 2, coordinator], subprocess_env(devices=2)),
      "single": ([data, tmp_path / "wd_single", out / "single", 0, 1, ""], subprocess_env(devices=4)),
  }
  procs = {name: subprocess.Popen([sys.executable, WORKER, *map(str, args)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
           for name, (args, env) in runs.items()}
  logs = {}
  try:
    for name, p in procs.items():
      logs[name] = p.communicate(timeout=400)[0]
  finally:
    for p in procs.values():
      if p.poll() is None:
        p.kill()
  for name, p in procs.items():
    assert p.returncode == 0, f"{name} failed:\n{logs[name][-4000:]}"
  assert "process 0/2: 2 local of 4 devices" in logs["multi0"]
  assert "process 1/2: 2 local of 4 devices" in logs["multi1"]
  assert "process 0/1: 4 local of 4 devices" in logs["single"]

  assert "resumed from" in logs["multi0"] and "resumed from" in logs["single"]

  def state(where, i, t):
    return np.load(out / where / f"state_{i}_{t}.npz") if where else np.load(out / f"state_{i}_{t}.npz")

  def val(where, i, t):
    return json.load(open(out / where / f"val_{i}_{t}.json" if where else out / f"val_{i}_{t}.json"))

  # Step 1: two processes == one process, to rounding.
  m0, m1, single = state("", 0, 1), state("", 1, 1), state("single", 0, 1)
  assert set(m0.files) == set(single.files)
  for key in m0.files:
    np.testing.assert_array_equal(m0[key], m1[key], err_msg=f"processes out of lockstep at {key}")
    scale = max(float(np.abs(single[key]).max()), 1e-3)  # pre-BN conv biases: zero gradient, pure rounding
    np.testing.assert_allclose(m0[key], single[key], rtol=1e-4, atol=1e-4 * scale,
                               err_msg=f"2 x 2 devices != 1 x 4 devices after one step at {key}")
  v0, v1, vs = val("", 0, 1), val("", 1, 1), val("single", 0, 1)
  assert v0 == v1 and v0["samples"] == vs["samples"] == 5
  for k in vs:
    assert v0[k] == pytest.approx(vs[k], rel=1e-4, abs=1e-5), k

  # Step 3 (after a multi-host resume): lockstep between the processes and with their joint checkpoint.
  m0, m1 = state("", 0, 3), state("", 1, 3)
  for key in m0.files:
    np.testing.assert_array_equal(m0[key], m1[key], err_msg=f"processes out of lockstep at {key}")
  assert val("", 0, 3) == val("", 1, 3)
  multi, step = checkpoint.load_variables(str(tmp_path / "wd_multi"))
  assert step == 3
  for path, x in jax.tree_util.tree_leaves_with_path(multi):
    key = jax.tree_util.keystr(path)
    np.testing.assert_array_equal(x, m0[key], err_msg=f"checkpoint != process 0's state at {key}")
  assert val("", 0, 3)["loss"] == pytest.approx(val("single", 0, 3)["loss"], rel=0.05)
