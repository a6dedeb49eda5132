"""cmp-jax: Conditional Motion Propagation (Zhan et al., CVPR 2019) in JAX/Flax."""

import os

__version__ = "0.1.0"

# XLA:CPU's memory-minimising scheduler instead of its default concurrency-optimised one, unless XLA_FLAGS
# already names the flag. The default starts backward-pass work as soon as its inputs exist and so keeps
# float32 temporaries alive across the whole backward; with this one (and BatchNorm's backward in
# models/layers.py) a ResNet-50 train step needs 1.6x (float32) to 2.6x (bfloat16) less memory at the same
# speed (benchmarks/NOTES.md, section 7). It takes effect when cmp_jax is imported before
# JAX starts its CPU backend, as every command line here does; it does not touch GPU or TPU compilation.
_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
if _SCHEDULER_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_SCHEDULER_FLAG}=false".strip()
