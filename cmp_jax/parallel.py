"""Data parallelism: the device mesh, shardings, multi-host start-up and per-device BatchNorm groups.

One mesh axis, `data`, over every device of every process (`jax.devices()` is ordered by process, then by
local device). The global batch is sharded on its leading axis over `data`, so device k holds the contiguous
rows [k * B, (k + 1) * B) for the per-device batch B; parameters, BatchNorm statistics and optimiser state are
replicated. One `jax.jit` step over this mesh then is the original's data-parallel step: the loss is the mean
of the per-sample losses over the global batch, which equals the mean over devices of per-device losses when
every device holds B samples, and its gradient is the average of the per-device gradients (the original's
all-reduce of loss / world_size).

BatchNorm. Under `jit`, a BatchNorm over the global batch would compute its statistics over all devices
(SyncBN). The original normalises per GPU. `bn_groups(config, mesh)` gives the number of groups to build the
model with (`models.build_model(..., bn_groups=...)`): the model reshapes the batch to
[groups, B, ...] and normalises each group alone, and because group k is exactly device k's shard this needs
no communication. `config.model.bn_stats = 'global'` gives 1 group: statistics over the global batch.

The mesh uses `AxisType.Auto` on purpose (`jax.sharding.Mesh`'s default; `jax.make_mesh` would make it
Explicit): the model code is sharding-agnostic and the partitioner propagates the batch sharding itself.
"""

import os
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


# ---------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------

def initialize_distributed(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
                           process_id: Optional[int] = None, cpu_collectives: str = "gloo") -> bool:
  """Calls `jax.distributed.initialize` when this is one process of several; returns whether it did.

  Explicit arguments win; otherwise the environment variables `CMP_COORDINATOR` (host:port),
  `CMP_NUM_PROCESSES` and `CMP_PROCESS_ID` are read. With neither, `jax.distributed.initialize()` is still
  called with no arguments when JAX can find the cluster itself (TPU pod slices, SLURM, Open MPI): set
  `CMP_AUTO_DISTRIBUTED=1` for that. On CPU, collectives across processes need gloo, set here.
  Must run before anything touches a device.
  """
  coordinator_address = coordinator_address or os.environ.get("CMP_COORDINATOR") or None
  if num_processes is None and os.environ.get("CMP_NUM_PROCESSES"):
    num_processes = int(os.environ["CMP_NUM_PROCESSES"])
  if process_id is None and os.environ.get("CMP_PROCESS_ID"):
    process_id = int(os.environ["CMP_PROCESS_ID"])
  auto = os.environ.get("CMP_AUTO_DISTRIBUTED", "") not in ("", "0")
  if not coordinator_address and not auto:
    if (num_processes or 1) > 1:
      raise ValueError("num_processes > 1 needs a coordinator address (--coordinator_address or CMP_COORDINATOR)")
    return False
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  if coordinator_address:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  else:
    jax.distributed.initialize()
  return True


# ---------------------------------------------------------------------------
# Mesh and shardings
# ---------------------------------------------------------------------------

def make_mesh(devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process) with one Auto axis, 'data'."""
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the devices; every other axis whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """The whole array on every device."""
  return NamedSharding(mesh, P())


def bn_groups(config, mesh: Mesh) -> int:
  """BatchNorm statistic groups for `config.model.bn_stats`: one per device, or 1 for 'global'."""
  return mesh.size if config.model.bn_stats == "per_device" else 1


def local_batch_size(per_device: int, mesh: Mesh) -> int:
  """Samples this process feeds per step: per-device batch x this process's devices in the mesh."""
  local = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())
  return per_device * local


# ---------------------------------------------------------------------------
# Moving data
# ---------------------------------------------------------------------------

def shard_batch(local_batch: Any, mesh: Mesh) -> Any:
  """Assembles the global batch from each process's local part (a pytree of numpy arrays).

  Process p's rows become the rows of its own devices, in device order: with one process this is a plain
  split of the batch over the devices.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a host pytree (identical on every process) on every device of the mesh."""
  sharding = replicated(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
  """Numpy copy of a pytree of replicated arrays (works on every process of a multi-host run)."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)

  return jax.tree.map(get, tree)


def barrier(name: str, timeout_s: int = 1800):
  """Waits until every process reaches the barrier `name` (unique per use; nothing with one process).

  A barrier of the coordination service, not a computation: it does not time out while another process is
  still compiling (a collective's first run waits only 30 s for its peers).
  """
  if jax.process_count() > 1:
    from orbax.checkpoint import multihost
    multihost.sync_global_processes(name, timeout=timeout_s)


def local_rows(tree: Any) -> Any:
  """This process's rows of batch-sharded arrays, in order (the rows of the batch it fed): numpy."""
  def get(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(x)
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards], axis=0)

  return jax.tree.map(get, tree)


def sum_over_processes(x: np.ndarray) -> np.ndarray:
  """The element-wise sum of a host array over all processes (the array itself with one process)."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x
  return np.asarray(multihost_utils.process_allgather(x)).sum(axis=0)
