"""Data parallelism on 8 simulated CPU devices: a sharded step equals the original's per-GPU arithmetic."""

import jax
import numpy as np
import pytest

from cmp_jax import config_lib, losses, models, optim, parallel, train_lib

NDEV = 8
PER_DEVICE = 2
CROP = 48


@pytest.fixture(scope="module")
def mesh():
  if jax.device_count() < NDEV:
    pytest.skip(f"needs {NDEV} devices (tests/conftest.py sets XLA_FLAGS)")
  return parallel.make_mesh(jax.devices()[:NDEV])


def test_mesh_is_one_auto_data_axis(mesh):
  assert mesh.axis_names == ("data",)
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  assert mesh.size == NDEV


def test_shard_batch_gives_each_device_a_contiguous_chunk(mesh):
  x = np.arange(NDEV * 3 * 5, dtype=np.float32).reshape(NDEV * 3, 5)
  g = parallel.shard_batch({"x": x}, mesh)["x"]
  assert g.shape == x.shape
  for shard in g.addressable_shards:
    k = list(mesh.devices.flat).index(shard.device)
    np.testing.assert_array_equal(np.asarray(shard.data), x[3 * k:3 * (k + 1)])
  r = parallel.replicate({"w": np.ones((4,))}, mesh)["w"]
  assert r.sharding.is_fully_replicated
  np.testing.assert_array_equal(parallel.to_host(r), np.ones(4))
  assert parallel.local_batch_size(3, mesh) == 3 * NDEV


def test_bn_groups_follow_config(mesh):
  c = config_lib.base()
  assert parallel.bn_groups(c, mesh) == NDEV
  c.model.bn_stats = "global"
  assert parallel.bn_groups(c, mesh) == 1


def _tiny_config():
  """ResNet-18 at a 48 crop (6x6 features), decoder branches 1 and 2, in float64.

  Float64 because this tiny randomly initialised model amplifies rounding: in float32, summing the loss or a
  BatchNorm statistic in another order (any change to the loss's or a kernel's formulation) moved the stem
  kernel by 1e-5 after two steps, more than the differences this test is about. In float64 the sharded step
  and the computation by hand agree to ~4e-8 of each parameter's largest value (the float32 rounding of the
  learning rate and weight decay in `optim.sgd`); one BatchNorm group instead of one per device moves them by
  ~5e-3."""
  c = config_lib.base()
  c.model.image_encoder = "resnet18"
  c.model.sparse_encoder = "shallownet8x"
  c.model.decoder_combo = (1, 2)
  c.model.dtype = "float64"
  return c


def _batch(rng, n):
  mask = (rng.random((n, CROP, CROP)) < 0.02).astype(np.float32)
  flow = rng.normal(scale=4.0, size=(n, CROP, CROP, 2)).astype(np.float32)
  sparse = np.concatenate([flow * mask[..., None], mask[..., None], mask[..., None]], axis=-1)
  return {"image": rng.normal(size=(n, CROP, CROP, 3)).astype(np.float32), "sparse": sparse, "flow": flow}


def test_sharded_step_equals_per_device_losses_and_averaged_gradients(mesh):
  """Two steps of the jitted, sharded update (per-device BN) against the original's arithmetic done by
  hand: each device's chunk through a bn_groups=1 model, loss and gradient per chunk, gradients averaged
  (all-reduce of loss / world), then PyTorch's SGD written out (g + wd p; buf = 0.9 buf + g; p -= lr buf)."""
  with jax.enable_x64(True):
    _sharded_step_against_hand(mesh)


def _sharded_step_against_hand(mesh):
  c = _tiny_config()
  lr, wd, mom = 0.1, 1e-4, 0.9
  schedule = optim.step_lr(lr)
  tx = optim.sgd(schedule, mom, wd)
  model_dp = models.build_model(c.model, bn_groups=parallel.bn_groups(c, mesh))
  model_1 = models.build_model(c.model, bn_groups=1)

  state = jax.jit(lambda r: train_lib.init_state(model_1, tx, r, CROP, CROP))(train_lib.init_key(0))
  state = jax.tree.map(np.asarray, state)
  rng = np.random.default_rng(0)
  batches = [_batch(rng, NDEV * PER_DEVICE) for _ in range(2)]

  # The sharded step, as train.py builds it.
  rep, key = parallel.replicated(mesh), jax.random.PRNGKey(1)
  update = jax.jit(train_lib.make_update_fn(model_dp, tx, schedule, 99, 50.0), donate_argnums=(0,),
                   out_shardings=(rep, rep))
  s = parallel.replicate(state, mesh)
  dp_losses = []
  for b in batches:
    s, metrics = update(s, parallel.shard_batch(b, mesh), key)
    dp_losses.append(float(metrics["loss"]))
  s = parallel.to_host(s)
  assert int(s["step"]) == 2

  # By hand.
  def chunk_loss(params, batch_stats, b):
    logits, upd = model_1.apply({"params": params, "batch_stats": batch_stats}, b["image"], b["sparse"],
                                train=True, mutable=["batch_stats"])
    return losses.discrete_loss(logits, b["flow"]), upd["batch_stats"]

  grad_fn = jax.jit(jax.value_and_grad(chunk_loss, has_aux=True))
  params, batch_stats = state["params"], state["batch_stats"]
  buf = None
  for step, b in enumerate(batches):
    results = [grad_fn(params, batch_stats, {k: v[d * PER_DEVICE:(d + 1) * PER_DEVICE] for k, v in b.items()})
               for d in range(NDEV)]
    loss = np.mean([float(r[0][0]) for r in results])
    grads = jax.tree.map(lambda *g: np.mean(np.stack([np.asarray(x, np.float64) for x in g]), 0),
                         *[r[1] for r in results])
    g = jax.tree.map(lambda gr, p: gr + wd * np.asarray(p, np.float64), grads, params)
    buf = g if buf is None else jax.tree.map(lambda bb, gg: mom * bb + gg, buf, g)
    params = jax.tree.map(lambda p, bb: np.asarray(p, np.float64) - lr * bb, params, buf)
    batch_stats = jax.tree.map(np.asarray, results[0][0][1])  # device 0's running statistics
    assert dp_losses[step] == pytest.approx(loss, rel=1e-6)

  flat_dp = jax.tree_util.tree_leaves_with_path(s["params"])
  flat_hand = jax.tree.leaves(params)
  for (path, a), b in zip(flat_dp, flat_hand):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(b).max() + 1e-12, err_msg=jax.tree_util.keystr(path))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(s["batch_stats"]), jax.tree.leaves(batch_stats)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(b).max() + 1e-12, err_msg=jax.tree_util.keystr(path))
  # Per-device BN differs from global BN: the statistics of chunk 0 are not those of the whole batch.
  assert not np.allclose(jax.tree.leaves(s["batch_stats"])[0], jax.tree.leaves(state["batch_stats"])[0])
