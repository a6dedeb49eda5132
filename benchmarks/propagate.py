"""Inference latency of one 384x384 propagation (image + guidance -> dense flow): cmp-jax against PyTorch.

    .venv/bin/python benchmarks/propagate.py                        # ResNet-50 + SkipLayer (the demo model)
    .venv/bin/python benchmarks/propagate.py --family resnet50_plain --size 320 --runs 10

Both sides run the network in eval mode (running BatchNorm statistics) on one image with ~20 guidance points
and decode the flow as the original's eval() does: soft-argmax over the bins at the decoder's resolution,
then bilinear (align_corners=True) upsampling to the input size. cmp-jax runs `inference.Predictor.run`, the
jitted function `python -m cmp_jax.propagate` and the demos use (model.dtype float32 or bfloat16); PyTorch runs
`cmp_jax/torch_models.py` under `torch.no_grad()` in float32. Each is its own process, alternated over
`--rounds`; latency is the median over `--runs` calls after one warm-up call (compile time shown apart).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (ROOT, os.path.join(ROOT, "benchmarks")):
  if p not in sys.path:
    sys.path.insert(0, p)

from train_step import FAMILIES, NBINS, FMAX, cpu_name, make_batch, model_config  # noqa: E402


def worker_jax(family, dtype, size, runs):
  import jax
  from cmp_jax import config_lib, inference, models
  config = config_lib.base()
  config.model = model_config(family, dtype)
  model = models.build_model(config.model)
  variables = models.init_variables(model, jax.random.key(0), size, size)
  prop = inference.Predictor(model, variables, config)
  batch = make_batch(1, size)
  batch["sparse"][..., 2:] = 0
  batch["sparse"][:, ::80, ::80, 2:] = 1  # ~20 guidance points
  t = time.perf_counter()
  prop.run(batch["image"], batch["sparse"])
  first = time.perf_counter() - t
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    prop.run(batch["image"], batch["sparse"])
    times.append(time.perf_counter() - t)
  return {"times": times, "first_s": first, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def worker_torch(family, dtype, size, runs):
  import numpy as np
  import torch
  import torch.nn.functional as F
  from cmp_jax import torch_models as tm
  torch.manual_seed(0)
  model = tm.build_torch_model(model_config(family)).eval()
  batch = make_batch(1, size)
  image = torch.from_numpy(np.ascontiguousarray(batch["image"].transpose(0, 3, 1, 2)))
  sparse = torch.from_numpy(np.ascontiguousarray(batch["sparse"].transpose(0, 3, 1, 2)))
  step = 2 * FMAX / NBINS
  centres = (torch.arange(NBINS, dtype=torch.float32) * step - FMAX + step / 2).view(1, NBINS, 1, 1)

  def run():
    with torch.no_grad():
      logits = model(image, sparse)
      u = (F.softmax(logits[:, :NBINS], 1) * centres).sum(1, keepdim=True)
      v = (F.softmax(logits[:, NBINS:], 1) * centres).sum(1, keepdim=True)
      flow = F.interpolate(torch.cat([u, v], 1), size=(size, size), mode="bilinear", align_corners=True)
      return flow.numpy()

  t = time.perf_counter()
  run()
  first = time.perf_counter() - t
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    run()
    times.append(time.perf_counter() - t)
  return {"times": times, "first_s": first, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--family", default="resnet50_skiplayer", choices=list(FAMILIES))
  p.add_argument("--size", type=int, default=384)
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
  p.add_argument("--worker", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    spec = json.loads(args.worker)
    kind = spec.pop("kind")
    print("RESULT " + json.dumps((worker_jax if kind == "jax" else worker_torch)(**spec)), flush=True)
    return

  rows = {}
  for r in range(args.rounds):
    runs = [("torch", "float32")] + [("jax", d) for d in args.dtypes]
    for kind, dtype in (runs if r % 2 == 0 else runs[::-1]):
      spec = {"kind": kind, "family": args.family, "dtype": dtype, "size": args.size, "runs": args.runs}
      proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
      line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
      if not line:
        raise RuntimeError(f"worker {spec} failed:\n{proc.stderr[-4000:]}")
      rows.setdefault((kind, dtype), []).append(json.loads(line[0][7:]))
  ref = statistics.median(statistics.median(x["times"]) for x in rows[("torch", "float32")])
  print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPU threads, {cpu_name()}; "
        f"{args.family}, one {args.size}x{args.size} image; {args.rounds} round(s) x {args.runs} runs")
  print("| run | latency (ms) | first call incl. compile (s) | peak mem (GB) | speed vs PyTorch |")
  print("|---|---|---|---|---|")
  for kind, dtype in [("torch", "float32")] + [("jax", d) for d in args.dtypes]:
    rs = rows[(kind, dtype)]
    t = statistics.median(statistics.median(x["times"]) for x in rs)
    name = "PyTorch fp32" if kind == "torch" else f"cmp-jax {'fp32' if dtype == 'float32' else 'bf16'}"
    print(f"| {name} | {1e3 * t:.0f} | {statistics.median(x['first_s'] for x in rs):.1f} | "
          f"{max(x['peak_gb'] for x in rs):.2f} | {ref / t:.2f}x |")


if __name__ == "__main__":
  main()
