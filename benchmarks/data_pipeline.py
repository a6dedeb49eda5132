"""Input pipeline speed: cmp_jax.data.pipeline against a loader written like the original's.

  .venv/bin/python benchmarks/data_pipeline.py                      # the shipped sample, 384x384 crops
  .venv/bin/python benchmarks/data_pipeline.py --list L.txt --root R --rounds 5 --samples 96

Both sides do the same work per sample, with the original's settings for every YFCC config: short side
416, crop 384x384, sampler ('grid', 'watershed'), nms_ks 41, bg_ratio 1.5625e-4, max_num_guide 150, jpg
flows. The reference (`cmp_jax.original.loader.load_sample`, written from the original's dataset.py /
data_utils.py as described in reference §3) decodes both frames and both flow planes with PIL, resizes
the whole frames with PIL bicubic and the whole flow with cv2, crops, normalises both frames, and samples
with the original's numpy/scipy sampler (scipy convolve2d Sobel, distance_transform_edt, maximum_filter, the O(N^2)
neighbour elimination with its Python loop). The pipeline runs through tf.data exactly as training uses it
(make_train_iterator), without image2 (CMP never reads it) and, in a separate row, with it.

Each measurement runs in a fresh process (one per row and round, rounds interleaved) and reports, after a
warm-up, samples per wall-clock second and samples per CPU-second of the whole process (all its threads).
On a shared machine the CPU-second figure ("per core") is the steadier one; the ratio column divides by the
reference measured in the same round. The reference and the 1-thread pipeline use one core
(cv2.setNumThreads(1), num_threads=1); the 2-thread pipeline shows how it scales.

The same reference is what tests/test_pipeline.py checks the pipeline against (same frames, same
RandomState: same crop, same flow, same guidance).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere: make the cmp_jax package importable
  sys.path.insert(0, ROOT)
from cmp_jax.data import formats  # noqa: E402
from cmp_jax.original import loader  # noqa: E402

SETTINGS = dict(short_size=416, crop_size=(384, 384), strategy=("grid", "watershed"), bg_ratio=1.5625e-4,
                nms_ks=41, max_num_guide=150)


# --------------------------------------------------------------------------------------------------
# Measurements (each in its own process).
# --------------------------------------------------------------------------------------------------

def _cpu():
  t = os.times()
  return t.user + t.system


def _run_reference(args):
  cv2.setNumThreads(1)
  entries = formats.read_list_files(args.list, args.root, "jpg")
  rs = np.random.RandomState(0)
  for i in range(args.warmup):
    loader.load_sample(entries[i % len(entries)], rs, **SETTINGS)
  t0, c0 = time.perf_counter(), _cpu()
  for i in range(args.samples):
    loader.load_sample(entries[i % len(entries)], rs, **SETTINGS)
  return args.samples, time.perf_counter() - t0, _cpu() - c0


def _run_pipeline(args, threads, with_image2):
  from cmp_jax import config_lib  # noqa: PLC0415
  from cmp_jax.data import pipeline  # noqa: PLC0415
  c = config_lib.base()
  c.data.data_root = args.root
  c.data.train_source = (args.list,)
  c.data.num_threads = threads
  c.data.short_size = SETTINGS["short_size"]
  c.data.crop_size = SETTINGS["crop_size"]
  c.batch_size = args.batch
  it = pipeline.make_train_iterator(c, process_index=0, process_count=1, local_devices=1,
                                    with_image2=with_image2)
  for _ in range(max(1, args.warmup // args.batch)):
    next(it)
  nb = max(1, args.samples // args.batch)
  t0, c0 = time.perf_counter(), _cpu()
  for _ in range(nb):
    next(it)
  return nb * args.batch, time.perf_counter() - t0, _cpu() - c0


ROWS = {
    "reference": "straightforward loader (PIL, cv2, scipy sampler), 1 process",
    "pipeline_1t": "pipeline, num_threads=1",
    "pipeline_2t": "pipeline, num_threads=2",
    "pipeline_img2_1t": "pipeline + image2, num_threads=1",
}


def _child(args):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if args.child == "reference":
    n, wall, cpu = _run_reference(args)
  else:
    threads = 2 if args.child.endswith("2t") else 1
    n, wall, cpu = _run_pipeline(args, threads, "img2" in args.child)
  print("RESULT " + json.dumps({"row": args.child, "n": n, "wall": wall, "cpu": cpu}))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--list", default=os.path.join(ROOT, "data/sample/lists/train.txt"), help="jpg list file")
  ap.add_argument("--root", default=os.path.join(ROOT, "data/sample"), help="data_root of the list")
  ap.add_argument("--samples", type=int, default=96, help="samples timed per measurement")
  ap.add_argument("--warmup", type=int, default=16)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
  ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {list(ROWS)}")
  ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.child:
    return _child(args)

  rows = args.rows.split(",")
  env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
             TF_CPP_MIN_LOG_LEVEL="3")
  results = {r: [] for r in rows}
  for rnd in range(args.rounds):
    for row in rows:
      cmd = [sys.executable, os.path.abspath(__file__), "--child", row, "--list", args.list, "--root", args.root,
             "--samples", str(args.samples), "--warmup", str(args.warmup), "--batch", str(args.batch)]
      out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
      res = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
      if out.returncode or not res:
        sys.exit(f"{row} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
      r = json.loads(res[0][7:])
      r["round"] = rnd
      results[row].append(r)
      print(f"round {rnd} {row:18s} {r['n'] / r['wall']:7.1f} samples/s wall  {r['n'] / r['cpu']:7.1f} per CPU-s",
            flush=True)

  def med(row, key):
    return float(np.median([r["n"] / r[key] for r in results[row]]))

  def ratio(row, key):
    if "reference" not in results:
      return float("nan")
    return float(np.median([a["n"] / a[key] / (b["n"] / b[key])
                            for a, b in zip(results[row], results["reference"])]))

  ncpu = os.cpu_count()
  print(f"\nmachine: {ncpu} cores, load average {os.getloadavg()[0]:.1f} at the end; frames: {args.list}; "
        f"{args.samples} samples x {args.rounds} rounds, medians")
  print("| loader | samples/s (wall) | samples per CPU-second (per core) | x reference (per core) |")
  print("|---|---|---|---|")
  for row in rows:
    print(f"| {ROWS[row]} | {med(row, 'wall'):.1f} | {med(row, 'cpu'):.1f} | {ratio(row, 'cpu'):.2f} |")


if __name__ == "__main__":
  main()
