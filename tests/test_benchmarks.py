"""The benchmark scripts still run against the package (their workers at a tiny size, both frameworks).

Their numbers are not checked here (timed tests would be meaningless on a shared CPU); what is checked is that
each worker builds its model, runs it and reports the fields the table is made of, so that an API change in
cmp_jax cannot leave a benchmark broken unnoticed.
"""

import argparse
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import propagate as bench_propagate  # noqa: E402
import train_step as bench_train_step  # noqa: E402


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_train_step_workers(framework):
  if framework == "torch":
    pytest.importorskip("torch")
  worker = bench_train_step.worker_jax if framework == "jax" else bench_train_step.worker_torch
  res = worker("alexnet_plain", "float32", batch=2, crop=128, steps=1, warmup=0)
  assert len(res["times"]) == 1 and res["times"][0] > 0 and math.isfinite(res["loss"])
  assert res["peak_gb"] > 0 and res["compile_s"] > 0
  if framework == "jax":
    assert res["flops"] > 0 and res["xla_temp_gb"] > 0


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_propagate_workers(framework):
  if framework == "torch":
    pytest.importorskip("torch")
  worker = bench_propagate.worker_jax if framework == "jax" else bench_propagate.worker_torch
  res = worker("alexnet_plain", "float32", size=128, runs=1)
  assert len(res["times"]) == 1 and res["times"][0] > 0 and res["first_s"] > 0 and res["peak_gb"] > 0


def test_train_step_rows_with_remat():
  args = argparse.Namespace(no_torch=False, dtypes=["float32", "bfloat16"], remat=True)
  assert bench_train_step.variants("alexnet_plain", args) == [
      ("torch", "float32", False), ("jax", "float32", False), ("jax", "bfloat16", False)]  # no remat for AlexNet
  assert bench_train_step.variants("resnet50_plain", args)[3:] == [("jax", "float32", True), ("jax", "bfloat16", True)]


@pytest.mark.parametrize("flags, want", [
    ("fpu avx512f avx512_bf16 amx_tile amx_bf16", "Xeon Test (amx_bf16, avx512_bf16)"),
    ("fpu avx512f avx512_bf16", "Xeon Test (avx512_bf16)"),
    ("fpu avx2", "Xeon Test (no bf16 matmul instructions)")])
def test_cpu_name_says_which_bf16_matmul_instructions(tmp_path, flags, want):
  info = tmp_path / "cpuinfo"
  info.write_text(f"processor\t: 0\nmodel name\t: Xeon Test\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
  assert bench_train_step.cpu_name(str(info)) == want
  assert bench_train_step.cpu_name(str(tmp_path / "missing")) == "unknown CPU"
