"""An interactive page over the three demos: flow from arrows, the animation, the annotation mask.

    python -m cmp_jax.demos.app --config configs/quickstart.py --checkpoint quickstart [--port 7860]

then open http://127.0.0.1:7860. Upload an image (or pick a sample), then click on it:
  * mode "arrow": a first click sets an arrow's start, a second its end; two clicks on one spot (a double
    click) pin a still point (an arrow of length zero).
  * mode "positive" / "negative": clicks on the object / on the background, for the annotation mask.
"Flow" shows the propagated flow (Middlebury colours), "Animate" the guided animation (GIF; its frames, loop
and motion gain as `animate`'s flags), "Annotate" the mask over the image. Wrong input (no arrows, a file
that is not an image, a pixel clicked positive and negative) is reported in the status line with the
command lines' message; the page keeps working.

The page is wiring only: the work is `cmp_jax.inference`, `cmp_jax.demos.animate` and `.annotate`.
Security: it listens on 127.0.0.1 unless --host says otherwise and never opens a public share link;
uploads larger than --max_upload_mb (20 MB) or MAX_IMAGE_SIDE (8000 px) a side, or not images, are refused
with a message; every uploaded file is deleted as soon as it is read (it lives in a private temporary
folder, removed when the app stops); analytics are off. Checkpoints are orbax arrays (no code is run).
"""

import base64
import io
import os
import shutil
import signal
import sys
import tempfile

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no calls home

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from PIL import Image  # noqa: E402

from cmp_jax import cli, flowviz, inference  # noqa: E402
from cmp_jax.demos import animate, annotate  # noqa: E402

SAMPLES = [os.path.join(inference.ROOT, "data", "sample", "frames", clip, name)
           for clip, name in (("cockatoo", "000000.jpg"), ("bikes", "000000.jpg"), ("tree", "000052.jpg"))]
MODES = ("arrow", "positive", "negative")


# ---------------------------------------------------------------------------
# The page's state and its transitions (plain functions, tested without a browser)
# ---------------------------------------------------------------------------

def sample_name(path):
  return f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"


def new_state(image=None):
  return {"image": image, "arrows": [], "pending": None, "positive": [], "negative": []}


def load_upload(path, max_bytes, upload_dir=None):
  """(RGB uint8 image) of an uploaded file, refused with InferenceError. A file inside `upload_dir` (gradio's
  upload folder) is deleted once read; one outside it (a sample of the repository) is left alone."""
  if not path:
    raise inference.InferenceError("no image: upload one or pick a sample")
  try:
    size = os.path.getsize(path)
    if size > max_bytes:
      raise inference.InferenceError(f"upload {os.path.basename(path)} is {size / 1e6:.1f} MB: larger than "
                                     f"{max_bytes / 1e6:.0f} MB")
    return inference.read_image(path)
  except OSError as e:
    raise inference.InferenceError(f"upload {os.path.basename(path)}: {e.strerror or e}") from None
  finally:
    if upload_dir and os.path.abspath(path).startswith(os.path.abspath(upload_dir) + os.sep):
      try:
        os.remove(path)
      except OSError:
        pass


def click(state, mode, x, y, tol=None):
  """Adds a click at image pixel (x, y) in `mode`; returns (state, status line)."""
  state = dict(state)
  image = state["image"]
  if image is None:
    return state, "error: no image: upload one or pick a sample first"
  h, w = image.shape[:2]
  x, y = float(x), float(y)
  if not (0 <= x < w and 0 <= y < h):
    return state, f"error: click at (x={x:g}, y={y:g}) is outside the {w}x{h} image"
  if mode in ("positive", "negative"):
    state[mode] = state[mode] + [(x, y)]
    return state, f"{mode} click {len(state[mode])} at ({x:g}, {y:g})"
  if state["pending"] is None:
    state["pending"] = (x, y)
    return state, f"arrow start at ({x:g}, {y:g}): click its end (the same spot again: a still point)"
  x0, y0 = state["pending"]
  tol = max(2.0, 0.01 * min(w, h)) if tol is None else tol
  dx, dy = x - x0, y - y0
  if abs(dx) <= tol and abs(dy) <= tol:
    dx = dy = 0.0
  state["arrows"] = state["arrows"] + [(x0, y0, dx, dy)]
  state["pending"] = None
  kind = "still point" if dx == dy == 0 else f"arrow ({dx:g}, {dy:g})"
  return state, f"{kind} {len(state['arrows'])} at ({x0:g}, {y0:g})"


def draw(state):
  """The image with the arrows (red; still points as red dots), the pending start and the clicks marked."""
  image = state["image"]
  if image is None:
    return None
  out = np.ascontiguousarray(image.copy())
  t = max(1, min(image.shape[:2]) // 160)
  for x, y, dx, dy in state["arrows"]:
    p0 = (int(x), int(y))
    if dx == dy == 0:
      cv2.circle(out, p0, 3 * t, (255, 0, 0), -1)
    else:
      cv2.arrowedLine(out, p0, (int(round(x + dx)), int(round(y + dy))), (255, 0, 0), t, tipLength=0.25)
  if state["pending"] is not None:
    cv2.circle(out, tuple(int(v) for v in state["pending"]), 3 * t, (255, 200, 0), t)
  return annotate.draw_clicks(out, state["positive"], state["negative"])


def gif_html(frames, fps=12):
  """An <img> holding the animation as an inline GIF (nothing written to disk)."""
  buf = io.BytesIO()
  ims = [Image.fromarray(f) for f in frames]
  ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=int(round(1000 / fps)), loop=0)
  data = base64.b64encode(buf.getvalue()).decode()
  return f'<img id="animation-gif" alt="animation" style="max-width:100%" src="data:image/gif;base64,{data}">'


class Demo:
  """The actions of the page over one Predictor; each returns (outputs..., status) and never raises for a
  user's mistake: the status line carries the same `error: ...` message as the command lines."""

  def __init__(self, predictor, max_bytes=20_000_000, upload_dir=None):
    self.pred = predictor
    self.max_bytes = max_bytes
    self.upload_dir = upload_dir

  def upload(self, path):
    try:
      image = load_upload(path, self.max_bytes, self.upload_dir)
    except inference.InferenceError as e:
      return new_state(), None, f"error: {e}"
    h, w = image.shape[:2]
    state = new_state(image)
    return state, draw(state), f"image {w}x{h}: click to draw arrows"

  def sample(self, name):
    """Loads one of SAMPLES (read in place from the repository, never copied or deleted)."""
    paths = {sample_name(p): p for p in SAMPLES}
    if name not in paths:
      return new_state(), None, f"error: no sample {name!r}"
    return self.upload(paths[name])

  def click(self, state, mode, x, y):
    state, status = click(state, mode, x, y)
    return state, draw(state), status

  def clear(self, state):
    state = new_state(state["image"])
    return state, draw(state), "cleared"

  def flow(self, state):
    if state["image"] is None:
      return None, "error: no image: upload one or pick a sample first"
    if not state["arrows"]:
      return None, "error: no arrows: click a start and an end point on the image (twice on one spot: a still point)"
    try:
      result = self.pred.flow(state["image"], state["arrows"])
      inference.flow_is_finite(result.flow)
    except inference.InferenceError as e:
      return None, f"error: {e}"
    mag = np.sqrt((result.flow ** 2).sum(-1))
    return flowviz.flow_to_image(result.flow), f"flow from {len(state['arrows'])} arrow(s): max {mag.max():.2f} px"

  def animate(self, state, frames=12, loop=True, gain=1.0):
    if state["image"] is None:
      return "", "error: no image: upload one or pick a sample first"
    try:
      frames, _ = animate.animate(self.pred, state["image"], state["arrows"], int(frames), bool(loop),
                                  float(gain))
    except inference.InferenceError as e:
      return "", f"error: {e}"
    return gif_html(frames), f"animation: {len(frames)} frames"

  def annotate(self, state):
    if state["image"] is None:
      return None, "error: no image: upload one or pick a sample first"
    try:
      mask, _, picture = annotate.annotate(self.pred, state["image"], state["positive"], state["negative"])
    except inference.InferenceError as e:
      return None, f"error: {e}"
    shown = annotate.draw_clicks(annotate.overlay(picture, mask), state["positive"], state["negative"])
    return shown, f"mask: {100 * mask.mean():.1f}% of the image"


# ---------------------------------------------------------------------------
# The page (gradio): widgets wired to Demo
# ---------------------------------------------------------------------------

def build(demo):
  import gradio as gr

  with gr.Blocks(title="CMP demos", analytics_enabled=False, delete_cache=(60, 300)) as page:
    gr.Markdown("## Conditional motion propagation\nUpload an image or pick a sample, then click on it. "
                "Mode *arrow*: start, then end (twice on one spot = a still point). Modes *positive* / "
                "*negative*: clicks for the annotation mask.")
    state = gr.State(new_state())
    with gr.Row():
      with gr.Column():
        upload = gr.File(label="image", file_count="single", type="filepath", elem_id="upload")
        sample = gr.Dropdown([sample_name(p) for p in SAMPLES if os.path.exists(p)], value=None,
                             label="or a sample of data/sample", elem_id="sample")
        mode = gr.Radio(list(MODES), value="arrow", label="click mode", elem_id="mode")
        with gr.Row():
          flow_btn = gr.Button("Flow", elem_id="flow-btn", variant="primary")
          anim_btn = gr.Button("Animate", elem_id="animate-btn")
          annot_btn = gr.Button("Annotate", elem_id="annotate-btn")
          clear_btn = gr.Button("Clear", elem_id="clear-btn")
        with gr.Row():
          n_frames = gr.Slider(2, 24, value=8, step=1, label="frames")
          gain = gr.Slider(1, 20, value=1, step=1, label="motion gain (1 = as predicted)")
          loop = gr.Checkbox(value=True, label="there and back")
        status = gr.Textbox(label="status", interactive=False, elem_id="status")
      with gr.Column():
        canvas = gr.Image(label="click here", interactive=False, type="numpy", format="png", elem_id="canvas",
                          buttons=["fullscreen"])
        flow = gr.Image(label="flow", interactive=False, format="png", elem_id="flow",
                        buttons=["download", "fullscreen"])
    with gr.Row():
      anim = gr.HTML(elem_id="animation")
      mask = gr.Image(label="annotation", interactive=False, format="png", elem_id="mask",
                      buttons=["download", "fullscreen"])

    def on_click(st, md, evt: gr.SelectData):
      x, y = evt.index[:2]
      return demo.click(st, md, x, y)

    upload.upload(demo.upload, [upload], [state, canvas, status])
    sample.input(demo.sample, [sample], [state, canvas, status])
    canvas.select(on_click, [state, mode], [state, canvas, status], trigger_mode="multiple",
                  show_progress="hidden")
    clear_btn.click(demo.clear, [state], [state, canvas, status])
    flow_btn.click(demo.flow, [state], [flow, status])
    anim_btn.click(demo.animate, [state, n_frames, loop, gain], [anim, status])
    annot_btn.click(demo.annotate, [state], [mask, status])
  return page


def define_flags(fv):
  inference.define_model_flags(fv, image=False)
  flags.DEFINE_string("host", "127.0.0.1", "address to listen on (0.0.0.0 exposes the page to the network)",
                      flag_values=fv)
  flags.DEFINE_integer("port", 7860, "port", flag_values=fv)
  flags.DEFINE_float("max_upload_mb", 20.0, "largest upload accepted, MB", flag_values=fv)


def main(argv):
  try:
    args, _ = cli.parse(argv, define_flags, __doc__, required=("config",))
    config = inference.config_from_flags(args)
    pred = inference.predictor_from_flags(args, config)
  except (cli.UsageError, inference.InferenceError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  upload_dir = tempfile.mkdtemp(prefix="cmp_demo_uploads_")
  os.environ["GRADIO_TEMP_DIR"] = upload_dir  # gradio keeps uploads here (read at its import); deleted on exit
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a `kill` also removes the folder (finally below)
  try:
    page = build(Demo(pred, int(args.max_upload_mb * 1e6), upload_dir))
    print(f"serving on http://{args.host}:{args.port} (Ctrl-C stops); uploads in {upload_dir}, deleted once read",
          flush=True)
    page.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False, ssr_mode=False,
                max_file_size=int(args.max_upload_mb * 1e6), quiet=True, footer_links=[])
  except KeyboardInterrupt:
    pass
  finally:
    shutil.rmtree(upload_dir, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
