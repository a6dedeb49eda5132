"""Evaluators: built from a config, `run(variables)` yields (name, value) pairs (see common.py).

flow                 flow validation: EPE and two baselines, pictures (the trainer; val and val_sparse)
probe_segmentation   linear probe of the frozen image encoder: 1x1 head, mIoU (eval.py)
probe_classification linear probe of the frozen image encoder: pooled features, top-1 (eval.py)
"""

from cmp_jax.evaluators.common import Evaluator, Progress, from_config, sum_batches  # noqa: F401
