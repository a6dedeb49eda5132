"""The evaluator interface (big_vision's `evaluators/common.py` is the model), and a progress line with ETA.

An evaluator is a class called `Evaluator` in a module of this package, built from a config (plus what it
needs: a model, a log function, a cache directory), whose `run(variables)` yields `(name, value)` pairs:

    ev = evaluators.from_config("probe_segmentation", config, encoder=encoder, log=print)
    for name, value in ev.run({"params": ..., "batch_stats": ...}):
      writer.write(name, value)

Inside, a jitted per-batch function returns SUMS (counts, confusion matrices, summed losses), never
per-batch means; `sum_batches` adds them up on the host and the metrics are computed once from the total.
That makes every figure independent of the batch size and of the padding of a last batch (padded entries
carry zero weight).
"""

import abc
import importlib
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Tuple

import numpy as np


class Evaluator(abc.ABC):
  """Base class: `__init__(config, **needs)`, `run(variables)` -> iterator of (name, value)."""

  @abc.abstractmethod
  def run(self, variables) -> Iterator[Tuple[str, Any]]:
    """Evaluates `variables` ({'params', 'batch_stats'} of the model the evaluator was built for)."""


def from_config(kind: str, config, **needs) -> Evaluator:
  """Builds `cmp_jax.evaluators.<kind>.Evaluator(config, **needs)` (e.g. kind='probe_segmentation')."""
  try:
    module = importlib.import_module(f"cmp_jax.evaluators.{kind}")
  except ModuleNotFoundError as e:
    if e.name != f"cmp_jax.evaluators.{kind}":
      raise
    raise ValueError(f"no evaluator {kind!r} (expected a module cmp_jax/evaluators/{kind}.py)") from None
  return module.Evaluator(config, **needs)


def sum_batches(fn: Callable, batches: Iterable, *args) -> Any:
  """Σ over batches of fn(*args, batch), a pytree of per-batch sums, accumulated on the host (int64/float64)."""
  import jax  # here, so that the progress line is usable without starting jax
  total = None
  for batch in batches:
    sums = jax.tree.map(np.asarray, jax.device_get(fn(*args, batch)))
    sums = jax.tree.map(lambda x: x.astype(np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64), sums)
    total = sums if total is None else jax.tree.map(np.add, total, sums)
  return total


def format_seconds(s: float) -> str:
  s = max(0, int(round(s)))
  if s >= 3600:
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
  return f"{s // 60}m{s % 60:02d}s"


class Progress:
  """Progress of a long phase: `what: 120/1464 images (8%) | 35.2 images/s | ETA 0m38s`.

  `update(n)` adds n done; a line is printed at most every `every_s` seconds and always at the end. The
  rate is measured from the first update (the first call of a jitted function includes its compilation).
  """

  def __init__(self, what: str, total: int, unit: str = "items", log: Callable = print, every_s: float = 10.0):
    self.what, self.total, self.unit, self.log, self.every_s = what, int(total), unit, log, every_s
    self.done = 0
    self.t0 = time.time()
    self.t_first, self.n_first = None, 0
    self.last = self.t0

  def update(self, n: int = 1, extra: str = ""):
    self.done += int(n)
    now = time.time()
    if self.t_first is None:
      self.t_first, self.n_first = now, self.done
    if now - self.last >= self.every_s or self.done >= self.total:
      self.last = now
      self.log(self.line(now, extra))

  def line(self, now=None, extra=""):
    now = time.time() if now is None else now
    pct = 100.0 * self.done / max(self.total, 1)
    rate_n, rate_t = self.done - self.n_first, now - (self.t_first or now)
    if self.done >= self.total:
      tail = f"done in {format_seconds(now - self.t0)}"
    elif rate_n > 0 and rate_t > 0:
      tail = f"{rate_n / rate_t:.1f} {self.unit}/s | ETA {format_seconds((self.total - self.done) * rate_t / rate_n)}"
    else:
      tail = "ETA ..."
    return f"{self.what}: {self.done}/{self.total} {self.unit} ({pct:.0f}%) | {tail}" + (f" | {extra}" if extra else "")


def stderr_log(msg: str):
  print(msg, file=sys.stderr, flush=True)
