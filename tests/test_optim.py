"""SGD + step schedule against the original's semantics (reference §4.1) and torch.optim.SGD."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cmp_jax import config_lib, optim


def _lr(schedule, i):
  return float(schedule(i))


def test_step_schedule_boundaries_70k():
  s = optim.step_lr(0.1, (40000, 60000), (0.1, 0.1))
  # 0-based iteration; the drop happens *at* the milestone (bisect_right).
  for i, want in [(0, 0.1), (1, 0.1), (39999, 0.1), (40000, 0.01), (40001, 0.01), (59999, 0.01),
                  (60000, 0.001), (69999, 0.001)]:
    assert _lr(s, i) == pytest.approx(want, rel=1e-6), i
  # Vectorised and traced calls agree with the scalar one.
  steps = np.array([0, 39999, 40000, 60000])
  np.testing.assert_allclose(np.asarray(jax.jit(s)(steps)), [0.1, 0.1, 0.01, 0.001], rtol=1e-6)


def test_schedule_matches_bisect_right_for_every_config():
  import bisect
  import glob
  import os
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for path in sorted(glob.glob(os.path.join(root, "configs", "*.py"))):
    c = config_lib.load_config(path)
    if "optimizer" not in c:  # the probe configs (eval.py) train no CMP
      continue
    o = c.optimizer
    s = optim.schedule_from_config(o)
    mults = np.cumprod([1.0] + list(o.lr_mults))
    probe = sorted({0, 1} | {m + d for m in o.lr_steps for d in (-1, 0, 1)})
    got = np.asarray(s(np.array(probe)))
    want = [o.lr * mults[bisect.bisect_right(list(o.lr_steps), i)] for i in probe]
    np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=path)


def test_warmup_is_piecewise_linear_then_steps():
  s = optim.step_lr(0.01, lr_steps=(100, 200), lr_mults=(0.5, 0.1), warmup_lr=(0.1, 0.2),
                    warmup_steps=(10, 30))
  assert _lr(s, 0) == pytest.approx(0.01)
  assert _lr(s, 5) == pytest.approx(0.055)           # halfway from 0.01 to 0.1
  assert _lr(s, 10) == pytest.approx(0.1)
  assert _lr(s, 20) == pytest.approx(0.15)           # halfway from 0.1 to 0.2
  assert _lr(s, 30) == pytest.approx(0.2)
  assert _lr(s, 99) == pytest.approx(0.2)
  assert _lr(s, 100) == pytest.approx(0.1)           # warmup_lr[-1] * 0.5
  assert _lr(s, 200) == pytest.approx(0.01)          # * 0.1


def test_schedule_rejects_bad_lists():
  with pytest.raises(ValueError, match="lr_mults"):
    optim.step_lr(0.1, (10, 20), (0.1,))
  with pytest.raises(ValueError, match="increasing"):
    optim.step_lr(0.1, (20, 10), (0.1, 0.1))
  with pytest.raises(ValueError, match="warmup_lr"):
    optim.step_lr(0.1, warmup_lr=(0.2,), warmup_steps=())


def test_sgd_matches_torch_sgd_across_an_lr_drop():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  p0 = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=(4,)).astype(np.float32)}
  grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in p0.items()} for _ in range(6)]
  schedule = optim.step_lr(0.1, (2, 4), (0.1, 0.5))

  tx = optim.sgd(schedule, momentum=0.9, weight_decay=1e-4)
  params = jax.tree.map(jnp.asarray, p0)
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
    params = optax.apply_updates(params, updates)

  tp = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in p0.items()}
  opt = torch.optim.SGD(list(tp.values()), lr=0.1, momentum=0.9, weight_decay=1e-4)
  for i, g in enumerate(grads):
    for group in opt.param_groups:  # the original calls the scheduler with the 0-based iteration first
      group["lr"] = float(schedule(i))
    for k, p in tp.items():
      p.grad = torch.tensor(g[k])
    opt.step()
  for k in p0:
    np.testing.assert_allclose(np.asarray(params[k]), tp[k].detach().numpy(), rtol=1e-6, atol=1e-7)


def test_weight_decay_hits_every_leaf_including_bn_and_bias():
  params = {"conv": {"kernel": jnp.ones((2,)), "bias": jnp.ones((2,))}, "bn": {"scale": jnp.ones((2,))}}
  tx = optim.sgd(lambda i: 1.0, momentum=0.9, weight_decay=0.5)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  for leaf in jax.tree.leaves(updates):
    np.testing.assert_allclose(np.asarray(leaf), -0.5)


def test_from_config_uses_base_values():
  c = config_lib.base()
  tx, schedule = optim.from_config(c.optimizer)
  assert float(schedule(0)) == pytest.approx(0.1)
  assert float(schedule(60000)) == pytest.approx(0.001)
  assert isinstance(tx, optax.GradientTransformation)
