"""How a process ends, as users end it: SIGTERM under Lightning, from a writer on another thread,
Ctrl-C twice, kill -9 under sustained load.  Each test drives a real subprocess and signal, and
counts the values whose add_* call returned against what is on disk."""
from __future__ import annotations

import mmap
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from gpulog.reader import read_scalars

pytestmark = pytest.mark.slow

# The child publishes, in an 8-byte mmap, how many add_scalar calls have returned.
_PROGRESS = """
import mmap, struct
_f = open({progress!r}, "r+b"); _m = mmap.mmap(_f.fileno(), 8)
def returned(n): _m[:8] = struct.pack("<q", n)
"""


def _progress(tmp_path):
    p = tmp_path / "progress"
    p.write_bytes(b"\0" * 8)
    return str(p)


def _returned(progress: str) -> int:
    with open(progress, "r+b") as f:
        return struct.unpack("<q", mmap.mmap(f.fileno(), 8)[:8])[0]


def _wait_for(progress: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _returned(progress) < n and time.monotonic() < deadline:
        time.sleep(0.01)


_LIGHTNING = textwrap.dedent("""
    import os, signal, sys
    if sys.argv[2] == "gpulog":
        import gpulog; gpulog.patch()
    import torch, lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    class M(L.LightningModule):
        def __init__(self):
            super().__init__(); self.l = torch.nn.Linear(4, 1)
        def training_step(self, batch, i):
            loss = self.l(batch[0]).pow(2).mean()
            self.log("train_step", float(self.global_step), on_step=True)
            return loss
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Kill(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 30:
                os.kill(os.getpid(), signal.SIGTERM)   # the scheduler preempts the job
        def on_exception(self, trainer, module, exc):
            print("on_exception ran:", type(exc).__name__, flush=True)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4000, 4)), batch_size=4)
    t = L.Trainer(max_epochs=1, logger=TensorBoardLogger(sys.argv[1], name="", version=""),
                  log_every_n_steps=1, callbacks=[Kill()], enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    t.fit(M(), data)
    print("fit returned", flush=True)
""")


def test_lightning_graceful_sigterm_runs_as_with_torchs_writer(tmp_path):
    """Issue #18.3: Lightning installs its SIGTERM handler after the writer exists and calls the
    previous handler (gpulog's) from its own.  gpulog must not end the process there: Lightning's
    on_exception/teardown run and the exit status is the one torch's writer gives, with every
    logged step on disk."""
    pytest.importorskip("lightning")
    runs = {}
    for writer in ("torch", "gpulog"):
        d = tmp_path / writer
        r = subprocess.run([sys.executable, "-c", _LIGHTNING, str(d), writer], capture_output=True,
                           text=True, timeout=300)
        runs[writer] = (r.returncode, "on_exception ran" in r.stdout, r)
    assert runs["gpulog"][:2] == runs["torch"][:2], (runs["torch"][2].stdout, runs["gpulog"][2].stderr[-3000:])
    assert runs["torch"][1], runs["torch"][2].stderr[-3000:]
    steps = [s for s, _ in read_scalars(tmp_path / "gpulog")["train_step"]]
    want = [s for s, _ in read_scalars(tmp_path / "torch")["train_step"]]
    assert steps == want and len(steps) >= 30


_FAST_LOOP = _PROGRESS + textwrap.dedent("""
import gpulog, sys, threading
def loop(w):
    i = 0
    while True:
        w.add_scalar("x", float(i), i)
        i += 1
        returned(i)
""")


def test_sigterm_with_the_writer_on_another_thread(tmp_path):
    """Issue #18.5: a writer built and used on a non-main thread (a serving thread, a trainer
    thread) could not install its SIGTERM handler there, and nothing said so: returned values
    were lost.  Now the handler is installed from the main thread at its next bytecode."""
    progress = _progress(tmp_path)
    code = _FAST_LOOP.format(progress=progress) + textwrap.dedent(f"""
        t = threading.Thread(target=lambda: loop(gpulog.SummaryWriter({str(tmp_path / "run")!r})), daemon=True)
        t.start()
        while t.is_alive():
            t.join(0.1)
    """)
    for _ in range(2):
        progress = _progress(tmp_path)
        p = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(progress, 20000)
            time.sleep(0.5)
            p.send_signal(signal.SIGTERM)
            assert p.wait(60) == -signal.SIGTERM, p.stderr.read()
        finally:
            p.kill()
        returned = _returned(progress)
        steps = [s for s, _ in read_scalars(tmp_path / "run")["x"]]
        assert returned > 20000 and steps[:returned] == list(range(returned)), (returned, len(steps))
        import shutil
        shutil.rmtree(tmp_path / "run")


def test_ctrl_c_twice_cannot_cut_the_exit_drain_short(tmp_path):
    """Issue #18.4: the first Ctrl-C ends the script, the second arrived while the exit hook was
    writing the backlog and aborted it (thousands of returned values lost).  The drain is run
    with a slow disk here so that the second Ctrl-C surely lands inside it."""
    progress = _progress(tmp_path)
    code = _FAST_LOOP.format(progress=progress) + textwrap.dedent(f"""
        import time
        from gpulog import _worker
        slow = _worker.Sink.write_pending
        def slow_write(self, force=False):   # a slow disk: 2 ms per write
            time.sleep(0.002); slow(self, force)
        _worker.Sink.write_pending = slow_write
        loop(gpulog.SummaryWriter({str(tmp_path / "run")!r}, max_queue=10))
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(progress, 20000)
        p.send_signal(signal.SIGINT)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        p.wait(120)
        err = p.stderr.read()
    finally:
        p.kill()
    returned = _returned(progress)
    steps = [s for s, _ in read_scalars(tmp_path / "run")["x"]]
    assert returned > 20000 and steps[:returned] == list(range(returned)), (returned, len(steps), err[-2000:])


def test_kill_9_under_sustained_load_loses_at_most_the_last_100ms(tmp_path):
    """Issue #18.6: under sustained load the hand-off ran ahead of the disk with no bound in time
    (4,900 of 185,900 returned values lost to kill -9).  The queue is now bounded by the writer's
    measured throughput (about 50 ms of its work) and encoded records reach the OS at least every
    0.1 s, so kill -9 loses at most the values of the last ~100 ms.  The measurement is the
    benchmark's (benchmarks/bench_durability.py: a child logging as fast as it can, SIGKILL after
    ~1 s, the returned-call count against the file), run here for gpulog alone."""
    import json
    out = tmp_path / "rounds.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench_durability", "--rounds", "3",
                        "--writers", "gpulog", "--json", str(out)], cwd=root, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rounds = json.loads(out.read_text())["gpulog"]
    assert all(row["returned"] > 50000 and row["prefix_in_order"] == 1.0 for row in rounds)
    assert max(row["lost_ms"] for row in rounds) < 250, rounds
