"""One full training step (model, DiscreteLoss, SGD update): cmp-jax against the original's PyTorch networks.

    .venv/bin/python benchmarks/train_step.py                     # the three families at the original's
                                                                  # per-device batch and crop, fp32 + bf16
    .venv/bin/python benchmarks/train_step.py --quick             # batch 2, crops 256 (AlexNet) / 128: ~3 min
    .venv/bin/python benchmarks/train_step.py --families resnet50_plain --dtypes bfloat16 --steps 3
    .venv/bin/python benchmarks/train_step.py --families resnet50_plain --remat   # + rows with model.remat

Both sides do the same work on the same inputs and device: the network in train mode (BatchNorm with batch
statistics), the original's DiscreteLoss (logits upsampled bilinearly with align_corners=True to the crop,
then CE over the u bins + CE over the v bins), the backward pass, and SGD with momentum 0.9 and weight decay
1e-4. PyTorch runs the definitions in `cmp_jax/torch_models.py` (the original's architectures, parity-tested
in tests/test_parity.py) in float32; cmp-jax runs `train_lib.make_update_fn` (the step train.py uses)
jitted with the state donated, with `model.dtype` float32 or bfloat16 (bf16 compute, float32 parameters and
BatchNorm statistics).

Every measurement is its own process (so peak memory is per process), and processes alternate between the
frameworks, round after round (`--rounds`), so that a machine shared with other jobs slows both alike.
Step time: median over the timed steps after `--warmup` steps, then median over rounds. Compile time:
`jit(...).lower(...).compile()` (PyTorch: the first step). Peak memory: the process's peak resident set
(CPU) or the device's peak allocation (GPU). Model FLOPs per step: 3x the forward pass's FLOPs from XLA's
cost analysis of the plain formulation (the backward costs about two forwards); achieved FLOP/s divides them
by the step time, and "% peak" by the machine's peak, measured here as a 4096^3 matmul in the row's dtype (fp32
for PyTorch).
The speed ratio is PyTorch's step time divided by this row's (>1: faster than PyTorch fp32).
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
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# family: (image encoder, sparse encoder, decoder, per-device batch, crop) of the original configs
FAMILIES = {
    "alexnet_plain": ("alexnet_fcn_32x", "shallownet32x", "MotionDecoderPlain", 12, 384),
    "resnet50_plain": ("resnet50", "shallownet8x", "MotionDecoderPlain", 10, 320),
    "resnet50_skiplayer": ("resnet50", "shallownet8x", "MotionDecoderSkipLayer", 8, 384),
}
QUICK = {"alexnet_plain": (2, 256), "resnet50_plain": (2, 128), "resnet50_skiplayer": (2, 128)}
NBINS, FMAX = 99, 50.0
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 1e-4


def model_config(family, dtype="float32", remat=False):
  from cmp_jax import config_lib
  enc, sparse_enc, dec, _, _ = FAMILIES[family]
  m = config_lib.base().model
  m.image_encoder, m.sparse_encoder, m.flow_decoder = enc, sparse_enc, dec
  m.skip_layer = dec == "MotionDecoderSkipLayer"
  m.dtype = dtype
  m.remat = remat
  return m


def make_batch(batch, crop, seed=0):
  """Random normalised images, dense flow (|flow| up to ~30 px) and ~200 guidance points per sample (NHWC)."""
  import numpy as np
  rng = np.random.default_rng(seed)
  image = rng.normal(size=(batch, crop, crop, 3)).astype(np.float32)
  flow = (10 * rng.normal(size=(batch, crop, crop, 2))).astype(np.float32)
  mask = (rng.random((batch, crop, crop, 1)) < 200 / crop ** 2).astype(np.float32)
  sparse = np.concatenate([flow * mask, mask, mask], axis=-1)
  return {"image": image, "sparse": sparse, "flow": flow}


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
  """The CPU's model name and which bf16 matmul instructions it has (AMX or AVX-512 BF16), from /proc/cpuinfo:
  the bf16 peak, and so the bf16 rows, depend on them (about 5x the fp32 peak with AMX, 2x with AVX-512 BF16)."""
  try:
    with open(cpuinfo) as f:
      lines = f.read().splitlines()
  except OSError:
    return "unknown CPU"
  fields = {}  # the first processor's value of each key
  for line in lines:
    key, _, value = line.partition(":")
    fields.setdefault(key.strip(), value.strip())
  flags = set(fields.get("flags", "").split())
  bf16 = [name for name in ("amx_bf16", "avx512_bf16") if name in flags]
  return f"{fields.get('model name', 'unknown CPU')} ({', '.join(bf16) or 'no bf16 matmul instructions'})"


def peak_memory_gb(device_mem=None):
  if device_mem is not None:
    return device_mem / 2 ** 30
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


# ---------------------------------------------------------------------------------------------------------
# Workers (one process each)
# ---------------------------------------------------------------------------------------------------------

def worker_jax(family, dtype, batch, crop, steps, warmup, remat=False):
  import jax
  import jax.numpy as jnp
  from cmp_jax import models, optim, train_lib
  from cmp_jax.models import layers

  model = models.build_model(model_config(family, dtype, remat))
  data = jax.device_put(make_batch(batch, crop))
  variables = models.init_variables(model, jax.random.key(0), crop, crop)
  schedule = optim.step_lr(LR)
  tx = optim.sgd(schedule, MOMENTUM, WEIGHT_DECAY)
  state = {"params": variables["params"], "batch_stats": variables["batch_stats"],
           "opt": tx.init(variables["params"]), "step": jnp.zeros((), jnp.int32)}
  key = train_lib.dropout_key(0)

  # Model FLOPs: 3x the forward's, from XLA's cost analysis of the lowered (uncompiled) forward, written with
  # one XLA convolution per conv: the cost analysis does not count the per-sample loops of the fast formulation.
  fast_conv, layers.conv2d = layers.conv2d, layers.conv2d_reference
  try:
    fwd = jax.jit(lambda v, i, s: model.apply(v, i, s, train=False)).lower(variables, data["image"], data["sparse"])
  finally:
    layers.conv2d = fast_conv
  cost = fwd.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = 3 * float(cost["flops"])

  t = time.perf_counter()
  update = jax.jit(train_lib.make_update_fn(model, tx, schedule, NBINS, FMAX), donate_argnums=(0,))
  update = update.lower(state, data, key).compile()
  compile_s = time.perf_counter() - t
  mem_info = update.memory_analysis()
  xla_temp_gb = None if mem_info is None else mem_info.temp_size_in_bytes / 2 ** 30
  times, loss = [], None
  for i in range(warmup + steps):
    t = time.perf_counter()
    state, metrics = update(state, data, key)
    loss = float(metrics["loss"])  # waits for the step
    if i >= warmup:
      times.append(time.perf_counter() - t)
  dev = jax.devices()[0]
  mem = None
  if dev.platform != "cpu":
    stats = dev.memory_stats() or {}
    mem = stats.get("peak_bytes_in_use")
  return {"times": times, "compile_s": compile_s, "flops": flops, "loss": loss, "xla_temp_gb": xla_temp_gb,
          "peak_gb": peak_memory_gb(mem), "device": f"{dev.platform}: {dev.device_kind}"}


def worker_torch(family, dtype, batch, crop, steps, warmup, remat=False):
  import numpy as np
  import torch
  import torch.nn.functional as F
  from cmp_jax import torch_models as tm

  if dtype != "float32" or remat:
    raise ValueError("the PyTorch reference runs in float32, without rematerialisation")
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  torch.manual_seed(0)
  model = tm.build_torch_model(model_config(family)).to(device).train()
  opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
  data = {k: torch.from_numpy(np.ascontiguousarray(v.transpose(0, 3, 1, 2))).to(device)
          for k, v in make_batch(batch, crop).items()}
  ce = torch.nn.CrossEntropyLoss()
  step = 2 * FMAX / NBINS

  def train_step():
    opt.zero_grad(set_to_none=True)
    logits = model(data["image"], data["sparse"])
    target = data["flow"]
    if logits.shape[2:] != target.shape[2:]:
      logits = F.interpolate(logits, size=target.shape[2:], mode="bilinear", align_corners=True)
    bins = torch.floor((torch.clamp(target, -FMAX + 1e-3, FMAX - 1e-3) + FMAX) / step).long()
    loss = ce(logits[:, :NBINS], bins[:, 0]) + ce(logits[:, NBINS:], bins[:, 1])
    loss.backward()
    opt.step()
    return float(loss)  # waits for the step

  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  t = time.perf_counter()
  loss = train_step()
  sync()
  compile_s = time.perf_counter() - t
  times = []
  for i in range(max(warmup - 1, 0) + steps):
    t = time.perf_counter()
    loss = train_step()
    sync()
    if i >= max(warmup - 1, 0):
      times.append(time.perf_counter() - t)
  mem = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
  name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
  return {"times": times, "compile_s": compile_s, "flops": None, "loss": loss, "peak_gb": peak_memory_gb(mem),
          "device": f"torch {device.type}: {name}"}


def worker_peak():
  """The machine's matmul peak (GFLOP/s) in float32 and bfloat16 (float32 accumulation): a 4096^3 dot, best of 3."""
  import jax
  import jax.numpy as jnp
  out = {}
  n = 4096
  for name, dt in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
    a = jax.random.normal(jax.random.key(0), (n, n), dt)
    f = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))  # bf16 -> f32: the AMX path
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(3):
      t = time.perf_counter()
      f(a).block_until_ready()
      best = min(best, time.perf_counter() - t)
    out[name] = 2 * n ** 3 / best / 1e9
  return out


# ---------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------

def variants(family, args):
  """The rows of one family: (framework, dtype, remat)."""
  runs = [("torch", "float32", False)] * (not args.no_torch) + [("jax", d, False) for d in args.dtypes]
  if args.remat and FAMILIES[family][0].startswith("resnet"):
    runs += [("jax", d, True) for d in args.dtypes]
  return runs


def run_worker(spec, timeout):
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
  for line in proc.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  raise RuntimeError(f"worker {spec} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
  p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                 help="cmp-jax compute dtypes (PyTorch always runs float32)")
  p.add_argument("--batch", type=int, help="per-device batch for every family (default: the original's)")
  p.add_argument("--crop", type=int, help="square crop for every family (default: the original's)")
  p.add_argument("--quick", action="store_true", help="batch 2, crop 256 (AlexNet) / 128 (ResNet), 2 steps")
  p.add_argument("--steps", type=int, default=3, help="timed steps per process")
  p.add_argument("--warmup", type=int, default=1, help="untimed steps after compilation")
  p.add_argument("--rounds", type=int, default=1, help="processes per row, alternating frameworks")
  p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
  p.add_argument("--remat", action="store_true",
                 help="also run cmp-jax with model.remat (ResNet families: blocks recomputed in the backward)")
  p.add_argument("--peak", type=float, nargs=2, metavar=("FP32", "BF16"),
                 help="machine peak GFLOP/s instead of measuring it")
  p.add_argument("--timeout", type=float, default=1800, help="seconds per worker process")
  p.add_argument("--json", help="also write all measurements to this file")
  p.add_argument("--worker", help=argparse.SUPPRESS)
  args = p.parse_args(argv)

  if args.worker:
    spec = json.loads(args.worker)
    kind = spec.pop("kind")
    result = worker_peak() if kind == "peak" else (worker_jax if kind == "jax" else worker_torch)(**spec)
    print("RESULT " + json.dumps(result), flush=True)
    return

  if args.quick:
    args.steps = min(args.steps, 2)
  peak = ({"float32": args.peak[0], "bfloat16": args.peak[1]} if args.peak
          else run_worker({"kind": "peak"}, args.timeout))
  rows = {}  # (family, framework, dtype) -> list of results
  sizes = {}
  for r in range(args.rounds):
    for family in args.families:
      b, c = FAMILIES[family][3:]
      if args.quick:
        b, c = QUICK[family]
      b, c = args.batch or b, args.crop or c
      sizes[family] = (b, c)
      runs = variants(family, args)
      if r % 2:
        runs = runs[::-1]
      for fw, dt, remat in runs:
        spec = {"kind": fw, "family": family, "dtype": dt, "batch": b, "crop": c, "steps": args.steps,
                "warmup": args.warmup, "remat": remat}
        res = run_worker(spec, args.timeout)
        rows.setdefault((family, fw, dt, remat), []).append(res)
        print(f"# round {r + 1} {family} {fw} {dt}{' remat' * remat} b{b}@{c}: step "
              f"{statistics.median(res['times']):.2f} s, "
              f"compile {res['compile_s']:.1f} s, peak {res['peak_gb']:.2f} GB, XLA temp "
              f"{res.get('xla_temp_gb') or 0:.2f} GB, loss {res['loss']:.3f}",
              file=sys.stderr, flush=True)

  devices = sorted({res["device"] for rs in rows.values() for res in rs})
  print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPU threads, {cpu_name()}; "
        f"devices: {', '.join(devices)}; measured peak {peak['float32']:.0f} GFLOP/s fp32, "
        f"{peak['bfloat16']:.0f} bf16 (4096^3 matmul); {args.rounds} round(s) x {args.steps} timed steps")
  head = ("| family | batch @ crop | run | step (s) | img/s | compile (s) | peak mem (GB) | GFLOP/step | "
          "GFLOP/s | % peak | speed vs PyTorch | mem vs PyTorch |")
  print(head)
  print("|" + "---|" * (head.count("|") - 1))
  out = []
  for family in args.families:
    b, c = sizes[family]
    ref = rows.get((family, "torch", "float32", False))
    ref_t = statistics.median(statistics.median(x["times"]) for x in ref) if ref else None
    ref_m = max(x["peak_gb"] for x in ref) if ref else None
    jflops = next((x["flops"] for (f, fw, _, _), rs in rows.items() if f == family and fw == "jax" for x in rs),
                  None)
    for fw, dt, remat in variants(family, args):
      rs = rows.get((family, fw, dt, remat))
      if not rs:
        continue
      t = statistics.median(statistics.median(x["times"]) for x in rs)
      comp = statistics.median(x["compile_s"] for x in rs)
      mem = max(x["peak_gb"] for x in rs)
      gf = jflops / 1e9 if jflops else None
      name = ("PyTorch fp32" if fw == "torch"
              else f"cmp-jax {'fp32' if dt == 'float32' else 'bf16'}{' remat' * remat}")
      share = 100 * gf / t / peak[dt] if gf else None
      fmt = lambda v, f: "-" if v is None else format(v, f)
      speed = f"**{ref_t / t:.2f}x**" if ref_t and fw == "jax" else ("1.00x" if ref_t else "-")
      memr = f"{mem / ref_m:.2f}" if ref_m else "-"
      print(f"| {family} | {b} @ {c} | {name} | {t:.2f} | {b / t:.2f} | {comp:.1f} | {mem:.1f} | {fmt(gf, '.0f')} "
            f"| {fmt(gf / t if gf else None, '.0f')} | {fmt(share, '.0f')} | {speed} | {memr} |")
      out.append({"family": family, "run": name, "batch": b, "crop": c, "step_s": t, "compile_s": comp,
                  "peak_gb": mem, "gflop_per_step": gf, "speed_vs_torch": ref_t / t if ref_t else None,
                  "xla_temp_gb": rs[0].get("xla_temp_gb"), "steps": [x["times"] for x in rs],
                  "losses": [x["loss"] for x in rs]})
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"peak_gflops": peak, "devices": devices, "rows": out}, f, indent=1)


if __name__ == "__main__":
  main()
