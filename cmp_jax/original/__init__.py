"""Slow transcriptions of the original CMP code, kept as references of its behaviour: NOT for use.

They are the yardsticks the fast library code is checked against (the tests) and timed against (the
benchmarks). Each is written out from the original as directly as possible, quirks included, and is
slow on purpose; train and evaluate with `cmp_jax.sampling` and `cmp_jax.data.pipeline` instead.

  sampler.py  the original's guidance sampler (`utils/data_utils.py`): flow_sampler and its helpers
  loader.py   one training sample as the original's dataset class loads it (decode, resize, crop,
              normalise, sample guidance)
"""
