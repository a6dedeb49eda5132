"""The original's optimiser: SGD with momentum and coupled weight decay, and its step LR schedule.

Reference §4.1. PyTorch's `SGD(momentum=0.9, weight_decay=1e-4)` does

    g <- grad + wd * p;  buf <- momentum * buf + g  (buf = g on the first step);  p <- p - lr * buf

on every parameter (conv weights, biases, BatchNorm scale and bias). `optax.chain(add_decayed_weights(wd),
sgd(lr, momentum))` is the same update: `trace` starts from zeros, so its first step is `buf = g` too.

The schedule is the original's `StepLRScheduler`, called before each update with the 0-based iteration i:

    lr(i) = lr * prod(lr_mults[k] for k, m in enumerate(lr_steps) if m <= i)

(the drop happens *at* iteration m). With a warm-up (`warmup_lr`, `warmup_steps`, empty in every original
config), the rate goes piecewise-linearly from `lr` at iteration 0 to `warmup_lr[0]` at `warmup_steps[0]`, to
`warmup_lr[1]` at `warmup_steps[1]`, and so on; from the last warm-up step on it is
`warmup_lr[-1] * prod(mults of milestones <= i)`.

optax calls the schedule with the number of updates already applied, which is exactly the 0-based i.
"""

from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np
import optax


def step_lr(lr: float, lr_steps: Sequence[int] = (), lr_mults: Sequence[float] = (),
            warmup_lr: Sequence[float] = (), warmup_steps: Sequence[int] = ()) -> Callable:
  """The original's StepLRScheduler (with its optional piecewise-linear warm-up) as an optax schedule.

  Returns `schedule(i)` for the 0-based iteration i (int or int array, traced or not), giving a float32 rate.
  """
  lr_steps = [int(m) for m in lr_steps]
  if len(lr_mults) != len(lr_steps):
    raise ValueError(f"lr_mults has {len(lr_mults)} entries but lr_steps has {len(lr_steps)}")
  if lr_steps != sorted(lr_steps):
    raise ValueError(f"lr_steps {tuple(lr_steps)} must be increasing")
  if len(warmup_lr) != len(warmup_steps):
    raise ValueError(f"warmup_lr has {len(warmup_lr)} entries but warmup_steps has {len(warmup_steps)}")
  warmup_steps = [int(s) for s in warmup_steps]
  if warmup_steps and (warmup_steps[0] <= 0 or any(b <= a for a, b in zip(warmup_steps, warmup_steps[1:]))):
    raise ValueError(f"warmup_steps {tuple(warmup_steps)} must be positive and increasing")

  peak = float(warmup_lr[-1]) if warmup_lr else float(lr)
  # Rates after 0, 1, 2, ... milestones, computed in float64 then rounded once.
  levels = [peak]
  for mult in lr_mults:
    levels.append(levels[-1] * float(mult))
  levels = np.asarray(levels, np.float32)
  milestones = np.asarray(lr_steps, np.int64)
  knots_x = np.asarray([0] + warmup_steps, np.float32)
  knots_y = np.asarray([lr] + [float(v) for v in warmup_lr], np.float32)
  warmup_end = warmup_steps[-1] if warmup_steps else 0

  def schedule(i):
    i = jnp.asarray(i)
    passed = jnp.sum(i[..., None] >= milestones, axis=-1) if len(milestones) else jnp.zeros_like(i)
    rate = jnp.asarray(levels)[passed]
    if warmup_end:
      ramp = jnp.interp(i.astype(jnp.float32), knots_x, knots_y)
      rate = jnp.where(i < warmup_end, ramp, rate)
    return rate.astype(jnp.float32)

  return schedule


def schedule_from_config(opt_cfg) -> Callable:
  """`step_lr` with the values of `config.optimizer`."""
  return step_lr(opt_cfg.lr, opt_cfg.lr_steps, opt_cfg.lr_mults, opt_cfg.warmup_lr, opt_cfg.warmup_steps)


def sgd(schedule, momentum: float = 0.9, weight_decay: float = 1e-4) -> optax.GradientTransformation:
  """PyTorch's SGD(momentum, weight_decay) on every parameter: decay added to the gradient, then momentum."""
  parts = []
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(optax.sgd(schedule, momentum=momentum or None))
  return optax.chain(*parts)


def from_config(opt_cfg):
  """(optax transformation, schedule) for `config.optimizer`."""
  schedule = schedule_from_config(opt_cfg)
  return sgd(schedule, opt_cfg.momentum, opt_cfg.weight_decay), schedule
