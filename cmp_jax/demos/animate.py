"""Guided video generation: a still image and a few arrows -> an animation (GIF or MP4).

    python -m cmp_jax.demos.animate --config configs/quickstart.py --checkpoint quickstart \\
        --image data/sample/frames/bikes/000000.jpg --guide 200,80,30,0 --guide 20,20,0,0 \\
        --frames 12 --out bikes.gif [--loop] [--fps 12]

The original shows such videos (a GIF in its README) but never released their code (reference §7.2; its
issue #1). Its author's advice, which this follows: predict the flow with CMP, then forward-warp the image.

Scheme (the reference's stated assumption; frame count, flow scaling and hole filling of the original's
video are unknown):
  1. One flow F is predicted from the arrows (`cmp_jax.inference`, in the image's pixels and size).
     Arrows of length zero pin still points.
  2. Frame k of N (k = 0..N-1) is the image forward-warped by (k / (N - 1)) F: frame 0 is the image, the
     last frame the full predicted motion. The motion is linear in time.
  3. Forward warp (`forward_warp`), as the original's WarpingLayerFWFlow: each pixel is splatted to
     its target, in ascending order of |F|^2 so that larger motions (the foreground, usually) overwrite
     smaller ones. Differences: targets are rounded to the nearest pixel (the original truncates toward
     zero), and pixels that leave the image are dropped (the original piles them on the border). Ties are
     deterministic (numpy's assignment order, a stable sort).
  4. Holes (pixels nothing landed on; the original leaves them black) are filled as the original's numpy
     warp with interp_mode 0: a hole at p takes the image at p - t F(p), the flow at the hole itself,
     sampled bilinearly (borders replicated). No black pixels remain.
  5. --loop appends the frames back to the start (there and back: 0..N-1, N-2..1).
  --gain G multiplies F before step 2 (default 1: the predicted motion itself); G > 1 makes a weak model's
  small flow visible and is then not the prediction any more (the README says when it was used).
GIF is written by PIL (looping forever), MP4 by OpenCV ('mp4v').
"""

import os
import sys

import cv2
import numpy as np
from absl import flags
from PIL import Image

from cmp_jax import cli, fileio, flowviz, inference


# ---------------------------------------------------------------------------
# Warping and frames (the library)
# ---------------------------------------------------------------------------

def forward_warp(image, flow):
  """(warped, holes): `image` (H x W x C) splatted along `flow` (H x W x 2, pixels), holes left as they are.

  Pixels are written in ascending order of u^2 + v^2 (larger motions win), to round(x + u), round(y + v);
  those landing outside the image are dropped. holes: H x W bool, True where nothing landed (there
  `warped` keeps zeros).
  """
  image = np.asarray(image)
  flow = np.asarray(flow, np.float32)
  h, w = image.shape[:2]
  ys, xs = np.mgrid[0:h, 0:w]
  tx = np.rint(xs + flow[..., 0]).astype(np.int64).ravel()
  ty = np.rint(ys + flow[..., 1]).astype(np.int64).ravel()
  order = np.argsort((flow[..., 0] ** 2 + flow[..., 1] ** 2).ravel(), kind="stable")
  order = order[(tx[order] >= 0) & (tx[order] < w) & (ty[order] >= 0) & (ty[order] < h)]
  warped = np.zeros_like(image)
  src = image.reshape((h * w,) + image.shape[2:])
  warped[ty[order], tx[order]] = src[order]
  holes = np.ones((h, w), bool)
  holes[ty[order], tx[order]] = False
  return warped, holes


def fill_holes(warped, holes, image, flow):
  """Fills `holes` of a forward-warped frame with the image at p - flow(p) (bilinear, borders replicated)."""
  if not holes.any():
    return warped
  h, w = holes.shape
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  flow = np.asarray(flow, np.float32)
  back = cv2.remap(np.ascontiguousarray(image), xs - flow[..., 0], ys - flow[..., 1], cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_REPLICATE)
  out = warped.copy()
  out[holes] = back[holes]
  return out


def warp_frame(image, flow):
  """The image moved by `flow`: forward warp, then holes filled (`fill_holes`)."""
  warped, holes = forward_warp(image, flow)
  return fill_holes(warped, holes, image, flow)


def make_frames(image, flow, n, loop=False):
  """N frames (list of H x W x 3 uint8): the image warped by (k / (N - 1)) flow, k = 0..N-1; with loop,
  then back: N-2..1."""
  if n < 2:
    raise inference.InferenceError(f"--frames {n}: an animation needs at least 2 frames")
  frames = [warp_frame(image, flow * (k / (n - 1))) if k else np.asarray(image).copy() for k in range(n)]
  if loop:
    frames += frames[-2:0:-1]
  return frames


def write_animation(path, frames, fps=12):
  """Writes frames as a GIF (PIL, loops forever) or an MP4 (OpenCV 'mp4v'), by the extension; atomically."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in (".gif", ".mp4"):
    raise inference.InferenceError(f"--out {path}: the extension must be .gif or .mp4")
  if fps <= 0:
    raise inference.InferenceError(f"--fps {fps}: must be positive")
  path = os.path.abspath(path)
  with fileio.atomic_path(path) as tmp:
    if ext == ".gif":
      ims = [Image.fromarray(f) for f in frames]
      ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:], duration=int(round(1000 / fps)),
                  loop=0)
    else:
      h, w = frames[0].shape[:2]
      writer = cv2.VideoWriter(tmp + ".mp4", cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
      if not writer.isOpened():
        raise inference.InferenceError(f"--out {path}: OpenCV cannot write MP4 here; write a .gif instead")
      for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
      writer.release()
      os.replace(tmp + ".mp4", tmp)
  return path


def animate(predictor, image, arrows, n=12, loop=False, gain=1.0):
  """(frames, FlowResult) for an RGB image and arrows in its pixels (see the module docstring)."""
  if not arrows:
    raise inference.InferenceError("no arrows: give at least one --guide X,Y,DX,DY (0,0 motion pins a still "
                                   "point)")
  result = predictor.flow(image, arrows)
  inference.flow_is_finite(result.flow)
  return make_frames(result.image, result.flow * float(gain), n, loop), result


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def define_flags(fv):
  inference.define_model_flags(fv)
  flags.DEFINE_multi_string("guide", [], "X,Y,DX,DY: an arrow from image pixel (X, Y) moving by (DX, DY); 0,0 "
                            "pins a still point. Repeat for more arrows.", flag_values=fv)
  flags.DEFINE_integer("frames", 12, "number of frames N (frame k shows k/(N-1) of the motion)", flag_values=fv)
  flags.DEFINE_integer("fps", 12, "frames per second", flag_values=fv)
  flags.DEFINE_boolean("loop", False, "there and back: append the frames in reverse", flag_values=fv)
  flags.DEFINE_float("gain", 1.0, "multiply the predicted flow by this before warping (1: as predicted)",
                     flag_values=fv)
  flags.DEFINE_string("out", None, "the animation: OUT.gif or OUT.mp4", flag_values=fv)
  flags.DEFINE_string("out_flow", None, "also write the predicted flow's colour picture here (PNG)",
                      flag_values=fv)


def main(argv):
  return cli.main_of(argv, define_flags, _main, __doc__, required=("config", "image", "out"),
                     user_errors=(inference.InferenceError,))


def _main(args):
  guides = [inference.parse_arrow(g) for g in args.guide]
  if not guides:
    raise inference.InferenceError("no arrows: give at least one --guide X,Y,DX,DY (0,0 motion pins a still "
                                   "point)")
  if os.path.splitext(args.out)[1].lower() not in (".gif", ".mp4"):
    raise inference.InferenceError(f"--out {args.out}: the extension must be .gif or .mp4")
  if args.frames < 2:
    raise inference.InferenceError(f"--frames {args.frames}: an animation needs at least 2 frames")
  config = inference.config_from_flags(args)
  image = inference.read_image(args.image)
  pred = inference.predictor_from_flags(args, config)
  pred.check_arrows(image, guides, "--guide")
  frames, result = animate(pred, image, guides, args.frames, args.loop, args.gain)
  mag = np.sqrt((result.flow ** 2).sum(-1))
  print(f"{result.frame.describe()}; flow: mean |flow| {mag.mean():.2f} px, max {mag.max():.2f} px"
        + (f" (warped with {args.gain:g}x that)" if args.gain != 1 else ""))
  write_animation(args.out, frames, args.fps)
  h, w = frames[0].shape[:2]
  print(f"wrote {args.out} ({len(frames)} frames, {w}x{h}, {args.fps} fps)")
  if args.out_flow:
    flowviz.save_png(args.out_flow, flowviz.flow_to_image(result.flow))
    print(f"wrote {args.out_flow} (flow colour code)")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
