"""Remote log dirs through fsspec: fsspec's memory filesystem and a real S3 HTTP endpoint (moto's
server mode, as s3fs's own tests use), read back by TensorBoard's own loader."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import gpulog

fsspec = pytest.importorskip("fsspec")


def _scalars(path: str, tag: str):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(path)  # TensorBoard's gfile reads fsspec URLs itself
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_memory_filesystem_segments_read_back_by_tensorboard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = "memory://bucket/run1"
    with gpulog.SummaryWriter(url) as w:
        for i in range(50):
            w.add_scalar("x", float(i), i)
        w.flush()                                  # seals segment 0
        for i in range(50, 120):
            w.add_scalar("x", float(i), i)
        w.add_scalars("grp", {"a": 1.0}, 0)
        w.add_hparams({"lr": 0.1}, {"hp/m": 1.0}, run_name="hp")
    fs = fsspec.filesystem("memory")
    files = sorted(f for f in fs.ls("/bucket/run1", detail=False) if "tfevents" in f)
    assert len(files) == 2 and files[0].endswith(".000000") and files[1].endswith(".000001")
    assert _scalars(url, "x") == [(i, float(i)) for i in range(120)]
    assert _scalars(url + "/grp_a", "grp") == [(0, 1.0)]
    assert os.listdir(tmp_path) == []             # no local folder named 'memory:'


def test_unknown_scheme_and_missing_backend_fail_at_construction(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="unknown scheme"):
        gpulog.SummaryWriter("nosuchproto://bucket/run")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="gs://"):
            gpulog.SummaryWriter("gs://bucket/run")
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3
    boto3.client("s3").create_bucket(Bucket="logs")
    yield env
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _s3_scalars(prefix: str, tag: str, tmp_path):
    import s3fs
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    local = tmp_path / "download"
    local.mkdir(exist_ok=True)
    for f in fs.ls(f"logs/{prefix}", detail=False):
        fs.get(f, str(local / os.path.basename(f)))
    return _scalars(str(local), tag)


def test_s3_endpoint_close(s3, tmp_path):
    with gpulog.SummaryWriter("s3://logs/run_close") as w:
        for i in range(300):
            w.add_scalar("loss", 1.0 / (i + 1), i)
    got = _s3_scalars("run_close", "loss", tmp_path)
    assert [s for s, _ in got] == list(range(300))


@pytest.mark.parametrize("ending", ["exit", "sigterm"])
def test_s3_nothing_lost_at_exit_or_sigterm(s3, tmp_path, ending):
    code = textwrap.dedent(f"""
        import os, signal, gpulog
        w = gpulog.SummaryWriter("s3://logs/run_{ending}")
        for i in range(500):
            w.add_scalar("x", float(i), i)
        if {ending!r} == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            import time; time.sleep(30)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, **s3})
    assert r.returncode == (0 if ending == "exit" else -15), r.stderr
    got = _s3_scalars(f"run_{ending}", "x", tmp_path)
    assert [s for s, _ in got] == list(range(500))
