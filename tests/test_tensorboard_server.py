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


def test_chromium_shows_run_and_tag(server):
    """Headless Chromium via chromium-driver: the scalars dashboard lists the run and the tag."""
    webdriver = pytest.importorskip("selenium.webdriver")
    driver_path = shutil.which("chromedriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if driver_path is None or chromium is None:
        pytest.skip("chromium/chromium-driver are not installed (.ci/run installs Debian's)")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(server + "/#scalars")
        # The dashboard renders into shadow roots: read the visible text of the whole page.
        script = """
            const out = [];
            const walk = (node) => {
              if (node.shadowRoot) walk(node.shadowRoot);
              for (const c of node.childNodes) {
                if (c.nodeType === Node.TEXT_NODE) out.push(c.textContent); else walk(c);
              }
            };
            walk(document.body);
            return out.join(' ');
        """
        deadline = time.time() + 60
        text = ""
        while time.time() < deadline:
            text = driver.execute_script(script)
            if "gpulog_run" in text and "train/loss" in text:
                break
            time.sleep(1)
        os.makedirs(ARTIFACTS, exist_ok=True)
        driver.save_screenshot(os.path.join(ARTIFACTS, "tensorboard_scalars.png"))
    finally:
        driver.quit()
    assert "gpulog_run" in text and "torch_run" in text, text[-1500:]
    assert "train/loss" in text
