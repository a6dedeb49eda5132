"""The demo page (cmp_jax.demos.app): its state transitions without a browser, then for real in headless
Chromium (Debian's chromium + chromium-driver, driven by selenium): the page loads, an uploaded sample image
takes scripted clicks, the flow picture appears, and a screenshot is kept in the test's output folder.
The browser test skips (with the reason) where chromium, chromedriver or selenium is missing; CI installs
them (scripts/setup_env.sh)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from cmp_jax import inference
from cmp_jax.demos import app

from test_propagate import QUICKSTART, ROOT, tiny  # noqa: F401 (a fixture)

COCKATOO = os.path.join(ROOT, "data", "sample", "frames", "cockatoo", "000000.jpg")  # 284x160


def test_clicks_make_arrows_still_points_and_annotation_points():
  state = app.new_state(np.zeros((100, 200, 3), np.uint8))
  state, msg = app.click(state, "arrow", 10, 20)
  assert state["pending"] == (10, 20) and "start" in msg
  state, msg = app.click(state, "arrow", 30, 25)
  assert state["arrows"] == [(10, 20, 20, 5)] and state["pending"] is None
  state, _ = app.click(state, "arrow", 50, 50)
  state, msg = app.click(state, "arrow", 51, 49)  # a double click: within 2 px -> a still point
  assert state["arrows"][-1] == (50, 50, 0, 0) and "still point" in msg
  state, _ = app.click(state, "positive", 5, 5)
  state, _ = app.click(state, "negative", 6, 6)
  assert state["positive"] == [(5, 5)] and state["negative"] == [(6, 6)]
  _, msg = app.click(state, "arrow", 200, 5)
  assert msg.startswith("error:") and "outside the 200x100 image" in msg
  assert app.draw(state).shape == (100, 200, 3)


def test_demo_reports_errors_instead_of_failing(tiny, tmp_path):  # noqa: F811
  config, model, variables, _ = tiny
  demo = app.Demo(inference.Predictor(model, variables, config), max_bytes=10_000, upload_dir=str(tmp_path))
  (tmp_path / "notes.txt").write_text("not an image")
  state, shown, msg = demo.upload(str(tmp_path / "notes.txt"))
  assert shown is None and msg.startswith("error:") and "not a readable image" in msg
  assert not (tmp_path / "notes.txt").exists()  # uploads are deleted once read
  big = tmp_path / "big.jpg"
  big.write_bytes(b"x" * 20_000)
  assert "larger than" in demo.upload(str(big))[2] and not big.exists()
  state, shown, msg = demo.upload(COCKATOO)  # outside the upload folder: read, kept
  assert shown.shape == (160, 284, 3) and os.path.exists(COCKATOO)
  assert demo.upload(str(tmp_path / "gone.jpg"))[2].startswith("error: upload gone.jpg")
  assert demo.sample("bikes/000000.jpg")[2].startswith("image 376x160")
  assert demo.flow(state)[1].startswith("error: no arrows")
  assert demo.animate(state)[1].startswith("error: no arrows")
  assert "no positive click" in demo.annotate(state)[1]
  state, _, _ = demo.click(state, "positive", 5, 5)
  state, _, _ = demo.click(state, "negative", 5.5, 5.5)
  assert "positive and negative" in demo.annotate(state)[1]
  state, _, _ = demo.click(state, "arrow", 100, 80)
  state, _, _ = demo.click(state, "arrow", 110, 80)
  picture, msg = demo.flow(state)
  assert picture.shape == (160, 284, 3) and msg.startswith("flow from 1 arrow")


def test_app_refuses_a_bad_checkpoint_before_serving(tmp_path, capsys):
  rc = app.main(["app", "--config", QUICKSTART, "--checkpoint", str(tmp_path / "nothing")])
  err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
  assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and "does not exist" in err[0]


# ---------------------------------------------------------------------------
# In the browser
# ---------------------------------------------------------------------------

def _browser_or_skip():
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  driver = shutil.which("chromedriver")
  if not chromium or not driver:
    pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver; "
                "scripts/setup_env.sh does it in CI)")
  try:
    import gradio  # noqa: F401
    from selenium import webdriver  # noqa: F401
  except ImportError as e:
    pytest.skip(f"{e.name} not installed (requirements.txt)")
  return chromium, driver


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait(cond, timeout, what):
  end = time.time() + timeout
  while time.time() < end:
    try:
      value = cond()
      if value:
        return value
    except Exception:  # noqa: BLE001 - the page is still being built
      pass
    time.sleep(0.5)
  raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def served(tiny, subprocess_env, tmp_path):  # noqa: F811
  """The app serving the known-output tiny checkpoint on a free local port: its URL."""
  _browser_or_skip()
  port = _free_port()
  log = open(tmp_path / "app.log", "w")
  proc = subprocess.Popen([sys.executable, "-m", "cmp_jax.demos.app", "--config", QUICKSTART, "--checkpoint",
                           tiny[3], "--port", str(port)], cwd=ROOT, env=subprocess_env(1), stdout=log,
                          stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}/"
  try:
    _wait(lambda: proc.poll() is None and urllib.request.urlopen(url, timeout=2).status == 200, 180,
          "the app to serve")
    yield url, tmp_path / "app.log"
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
    log.close()


def test_page_in_headless_chromium(served, tmp_path):
  url, log = served
  chromium, driver_path = _browser_or_skip()
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.by import By

  opts = webdriver.ChromeOptions()
  opts.binary_location = chromium
  for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
            f"--user-data-dir={tmp_path / 'chrome-profile'}", "--window-size=1400,1000"):
    opts.add_argument(a)
  browser = webdriver.Chrome(service=Service(driver_path), options=opts)
  try:
    browser.get(url)
    _wait(lambda: browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]"), 60, "the upload widget")
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(COCKATOO)

    def status():
      return browser.find_element(By.CSS_SELECTOR, "#status textarea").get_attribute("value")

    _wait(lambda: status().startswith("image 284x160"), 60, "the image to load")
    uploads = log.read_text().split("uploads in ")[1].split(",")[0]
    assert not [f for _, _, fs in os.walk(uploads) for f in fs if f == "000000.jpg"]  # deleted once read
    img = _wait(lambda: browser.find_element(By.CSS_SELECTOR, "#canvas img"), 30, "the clickable image")
    w, h = img.size["width"], img.size["height"]
    # Offsets from the image's centre: an arrow from (x 40%, y 50%) to (x 60%, y 50%), then a double click
    # (a still point) at (x 20%, y 20%).
    for dx, dy in ((-0.1, 0.0), (0.1, 0.0)):
      ActionChains(browser).move_to_element_with_offset(img, int(dx * w), int(dy * h)).click().perform()
      time.sleep(1.0)
      img = browser.find_element(By.CSS_SELECTOR, "#canvas img")
    _wait(lambda: status().startswith("arrow"), 30, "the arrow")
    img = browser.find_element(By.CSS_SELECTOR, "#canvas img")
    ActionChains(browser).move_to_element_with_offset(img, -int(0.3 * w), -int(0.3 * h)).double_click().perform()
    _wait(lambda: status().startswith("still point 2"), 30, f"the double click's still point (status: {status()!r})")
    browser.find_element(By.CSS_SELECTOR, "#flow-btn").click()
    _wait(lambda: status().startswith("flow from 2 arrow"), 120, f"the flow (status: {status()!r})")
    flow = _wait(lambda: browser.find_element(By.CSS_SELECTOR, "#flow img"), 30, "the flow picture")
    assert flow.size["width"] > 50
    # Bad input shows the message instead of failing: Annotate without a positive click.
    browser.find_element(By.CSS_SELECTOR, "#annotate-btn").click()
    _wait(lambda: "no positive click" in status(), 30, "the annotation error")
    shot = tmp_path / "page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
  finally:
    browser.quit()
