"""A real client: TensorBoard serves a logdir holding a torch-written and a gpulog-written run;
its HTTP data API must return the same data for both, and headless Chromium must show the run and
tag on the scalars dashboard (the screenshot is kept under test-artifacts/)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import torch

import gpulog

pytestmark = pytest.mark.slow  # a separate tier: pytest -m 'not slow' skips it

pytest.importorskip("tensorboard")
ARTIFACTS = os.environ.get("GPULOG_ARTIFACTS", os.path.join(os.path.dirname(__file__), "..", "test-artifacts"))


def _log(w) -> None:
    g = torch.Generator().manual_seed(0)
    for step in range(5):
        w.add_scalar("train/loss", 1.0 / (step + 1), step)
        w.add_histogram("weights", torch.randn(1000, generator=g), step)
        w.add_image("sample", torch.rand(3, 8, 8, generator=g), step)
        w.add_pr_curve("pr", torch.randint(0, 2, (200,), generator=g), torch.rand(200, generator=g), step)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    from torch.utils.tensorboard import SummaryWriter as TorchWriter
    for name, cls in (("torch_run", TorchWriter), ("gpulog_run", gpulog.SummaryWriter)):
        w = cls(str(root / name))
        _log(w)
        w.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(root), "--host",
                             "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                runs = json.load(urllib.request.urlopen(base + "/data/runs", timeout=5))
                if {"torch_run", "gpulog_run"} <= set(runs) and _get(base, "scalars/scalars", "gpulog_run", "train/loss"):
                    break
            except Exception:
                pass
            if proc.poll() is not None:
                pytest.skip(f"tensorboard did not start: {proc.stderr.read()[-500:]}")
            time.sleep(0.5)
        else:
            pytest.skip("tensorboard did not serve the runs within 90 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _get(base: str, route: str, run: str, tag: str, **extra: str):
    q = urllib.parse.urlencode({"run": run, "tag": tag, **extra})
    with urllib.request.urlopen(f"{base}/data/plugin/{route}?{q}", timeout=10) as r:
        return json.load(r)


def _strip_wall(rows):
    return [row[1:] for row in rows]


def test_http_api_serves_identical_data(server):
    def same(route, tag, norm=_strip_wall, **extra):
        a = _get(server, route, "torch_run", tag, **extra)
        b = _get(server, route, "gpulog_run", tag, **extra)
        assert norm(a) == norm(b), route
        return b
    loss = same("scalars/scalars", "train/loss")
    assert [row[1] for row in loss] == list(range(5))
    same("histograms/histograms", "weights")
    images = same("images/images", "sample", norm=lambda rows: [(r["step"], r.get("width"), r.get("height")) for r in rows], sample="0")
    assert len(images) == 5
    pr = _get(server, "pr_curves/pr_curves", "gpulog_run", "pr")
    pr_t = _get(server, "pr_curves/pr_curves", "torch_run", "pr")
    strip = lambda d: [{k: v for k, v in e.items() if k != "wall_time"} for e in d["pr"]] if "pr" in d else \
        [{k: v for k, v in e.items() if k != "wall_time"} for e in d.get("gpulog_run", d.get("torch_run", []))]  # noqa: E731
    assert strip(pr) == strip(pr_t) and strip(pr)


def _start_tensorboard(root):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(root), "--host",
                             "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def test_chromium_plots_gpulogs_values(tmp_path):
    """Headless Chromium (SwiftShader rendering) draws TensorBoard's scalars chart of a
    gpulog-only run whose values rise linearly (loss = step): the run's coloured pixels inside
    the plot area must form that rising line across the plot, not just the tag's text."""
    webdriver = pytest.importorskip("selenium.webdriver")
    driver_path = shutil.which("chromedriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if driver_path is None or chromium is None:
        pytest.skip("chromium/chromium-driver are not installed (.ci/run installs Debian's)")
    with gpulog.SummaryWriter(str(tmp_path / "logs" / "gpulog_run")) as w:
        for step in range(50):
            w.add_scalar("train/rising", float(step), step)
    proc, base = _start_tensorboard(tmp_path / "logs")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
                "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not _tb_ready(base, "train/rising"):
            time.sleep(0.5)
        driver = webdriver.Chrome(service=Service(driver_path), options=opts)
        try:
            driver.get(base + "/#scalars")
            plot, line = None, []
            deadline = time.time() + 60
            while time.time() < deadline:  # until the chart has drawn its line
                time.sleep(1)
                plot = driver.execute_script(_PLOT_RECT)
                if plot:
                    shot = os.path.join(str(tmp_path), "shot.png")
                    driver.save_screenshot(shot)
                    line = _run_pixels(shot, plot)
                    if len(line) > 100:
                        break
            os.makedirs(ARTIFACTS, exist_ok=True)
            driver.save_screenshot(os.path.join(ARTIFACTS, "tensorboard_scalars.png"))
        finally:
            driver.quit()
    finally:
        proc.kill()
    assert plot, "no scalars chart was drawn"
    import numpy as np
    xs, ys = np.array([p[0] for p in line], float), np.array([p[1] for p in line], float)
    x0, _, width, _ = plot
    assert xs.max() - xs.min() > 0.7 * width, "the line does not span the plot"
    r = np.corrcoef(xs, ys)[0, 1]
    assert r < -0.98, f"the drawn line is not the rising line gpulog logged (r = {r:.3f})"


_PLOT_RECT = """
    let best = null;
    const walk = (n) => {
      if (n.shadowRoot) walk(n.shadowRoot);
      for (const c of n.children || []) {
        const cls = c.className && c.className.baseVal !== undefined ? c.className.baseVal : '';
        if (c.tagName === 'svg' && cls.includes('component-overflow-hidden')) {
          const r = c.getBoundingClientRect();
          if (r.width > 100 && r.height > 100 && !best) best = [r.x, r.y, r.width, r.height];
        }
        walk(c);
      }
    };
    walk(document.body);
    return best;
"""


def _tb_ready(base: str, tag: str) -> bool:
    try:
        return bool(_get(base, "scalars/scalars", "gpulog_run", tag))
    except Exception:
        return False


def _run_pixels(path: str, plot):
    """(x, y) of the pixels in the plot area drawn in the first run's colour (#ff7043)."""
    from PIL import Image
    x0, y0, w, h = (int(round(v)) for v in plot)
    img = Image.open(path).convert("RGB").crop((x0, y0, x0 + w, y0 + h))
    px = img.load()
    out = []
    for x in range(img.width):
        for y in range(img.height):
            r, g, b = px[x, y]
            if r > 200 and 70 < g < 150 and b < 110:
                out.append((x0 + x, y0 + y))
    return out
