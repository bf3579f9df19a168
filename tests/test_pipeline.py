"""The producer → writer pipeline: barriers, exit drain, crashes, threads, fork, I/O errors."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import gpulog
from gpulog.reader import read_events, read_scalars


def _run(code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, **kw)


def test_flush_is_a_barrier(tmp_path):
    w = gpulog.SummaryWriter(tmp_path, flush_secs=3600, max_queue=100000)
    for i in range(1000):
        w.add_scalar("x", i, i)
    w.flush()
    assert len(read_scalars(tmp_path)["x"]) == 1000
    w.close()


def test_data_visible_without_flush_at_low_rate(tmp_path):
    w = gpulog.SummaryWriter(tmp_path, flush_secs=3600, max_queue=1000)
    w.add_scalar("x", 1.0, 1)
    deadline = time.time() + 5
    while time.time() < deadline and not read_scalars(tmp_path).get("x"):
        time.sleep(0.05)
    assert read_scalars(tmp_path)["x"] == [(1, 1.0)]
    w.close()


def test_exit_without_close_loses_nothing(tmp_path):
    r = _run(f"""
        import gpulog
        w = gpulog.SummaryWriter({str(tmp_path)!r}, flush_secs=3600, max_queue=10**6)
        for i in range(20000):
            w.add_scalar("x", float(i), i)
        w.add_histogram_raw("h", 0, 1, 2, 1, 1, [0.5, 1.0], [1, 1], 1)
    """)
    assert r.returncode == 0, r.stderr
    s = read_scalars(tmp_path)["x"]
    assert len(s) == 20000 and s[-1] == (19999, 19999.0)
    assert any(v.tag == "h" for e in read_events(tmp_path) for v in e.values)


def test_exception_in_with_block_keeps_data(tmp_path):
    with pytest.raises(RuntimeError):
        with gpulog.SummaryWriter(tmp_path, flush_secs=3600) as w:
            for i in range(100):
                w.add_scalar("x", i, i)
            raise RuntimeError("boom")
    assert len(read_scalars(tmp_path)["x"]) == 100


def test_kill_9_leaves_readable_records(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import gpulog, sys
        w = gpulog.SummaryWriter({str(tmp_path)!r})
        i = 0
        while True:
            w.add_scalar("x", float(i), i); i += 1
            if i == 5000: print("ready", flush=True)
    """)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    p.wait()
    events = read_events(tmp_path)  # CRC-checked; a torn last record is skipped
    steps = [e.step for e in events if e.values]
    assert len(steps) > 1000 and steps == list(range(len(steps)))


def test_eight_threads_thousands_of_scalars(tmp_path):
    w = gpulog.SummaryWriter(tmp_path, max_queue=50)

    def work(t):
        for i in range(3000):
            w.add_scalar(f"t{t}", float(i), i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    s = read_scalars(tmp_path)
    for t in range(8):
        assert s[f"t{t}"] == [(i, float(i)) for i in range(3000)]


def test_close_idempotent_and_reopen_after_close(tmp_path):
    w = gpulog.SummaryWriter(tmp_path)
    w.add_scalar("x", 1.0, 1)
    w.close()
    w.close()
    w.add_scalar("x", 2.0, 2)
    w.close()
    files = [f for f in os.listdir(tmp_path) if "tfevents" in f]
    assert len(files) == 2
    assert read_scalars(tmp_path)["x"] == [(1, 1.0), (2, 2.0)]


def test_file_name_format(tmp_path):
    import socket
    w = gpulog.SummaryWriter(tmp_path, filename_suffix=".v2")
    w.close()
    (name,) = os.listdir(tmp_path)
    parts = name.split(".")
    assert name.startswith("events.out.tfevents.") and name.endswith(".v2")
    assert len(parts[3]) == 10 and parts[3].isdigit()
    assert f".{socket.gethostname()}.{os.getpid()}." in name


def test_default_logdir_and_comment(tmp_path, monkeypatch):
    import socket
    monkeypatch.chdir(tmp_path)
    w = gpulog.SummaryWriter(comment="_lr0.1")
    assert w.get_logdir().startswith("runs" + os.sep)
    assert w.get_logdir().endswith(socket.gethostname() + "_lr0.1")
    w.close()
    w2 = gpulog.SummaryWriter(logdir=str(tmp_path / "alias"))
    assert w2.get_logdir() == str(tmp_path / "alias")
    w2.close()


def test_fork_child_writes_its_own_file(tmp_path):
    w = gpulog.SummaryWriter(tmp_path, flush_secs=3600)
    w.add_scalar("parent", 1.0, 1)
    pid = os.fork()
    if pid == 0:  # child: logs through the inherited writer, must not touch the parent's file
        try:
            w.add_scalar("child", 2.0, 2)
            w.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    w.add_scalar("parent", 3.0, 3)
    w.close()
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 2
    by_pid = {f.split(".")[5]: f for f in files}
    parent = read_scalars(tmp_path / by_pid[str(os.getpid())])
    child = read_scalars(tmp_path / by_pid[str(pid)])
    assert parent == {"parent": [(1, 1.0), (3, 3.0)]}
    assert child == {"child": [(2, 2.0)]}


def test_io_error_is_raised_on_next_call_and_chained(tmp_path):
    w = gpulog.SummaryWriter(tmp_path)
    w.flush()  # the header is written by the writer thread; let it land before the sabotage
    sink = w.file_writer._sink
    os.close(sink.fd)  # simulate the disk going away under the writer
    sink.fd = os.open(os.devnull, os.O_RDONLY)
    w.add_scalar("x", 1.0, 1)
    with pytest.raises(gpulog.WriterError) as info:
        w.flush()
    assert isinstance(info.value.__cause__, OSError)
    assert sink.pending, "records that failed to write are kept for a retry"
    os.close(sink.fd)
    sink.fd = os.open(sink.path, os.O_WRONLY | os.O_APPEND)
    w.add_scalar("x", 2.0, 2)
    w.close()
    assert read_scalars(tmp_path)["x"] == [(1, 1.0), (2, 2.0)]


def test_import_starts_nothing():
    r = _run("""
        import sys, threading
        import gpulog
        assert threading.active_count() == 1, threading.enumerate()
        bad = [m for m in ("torch", "triton", "gpulog.kernels", "kernels") if m in sys.modules]
        assert not bad, bad
        print("ok")
    """)
    assert r.stdout.strip() == "ok", r.stderr


def test_bounded_backlog_blocks_instead_of_dropping(tmp_path):
    from gpulog import _worker
    h = _worker.engine().handoff
    old = h.max_items, h.limit
    h.max_items, h.limit = 64, 64  # the writer's adaptive limit never exceeds max_items
    try:
        w = gpulog.SummaryWriter(tmp_path)
        for i in range(5000):
            w.add_scalar("x", float(i), i)
            assert len(h.items) <= 64 + 1
        w.close()
    finally:
        h.max_items, h.limit = old
    assert len(read_scalars(tmp_path)["x"]) == 5000


def test_sustained_load_still_reaches_disk_within_flush_secs(tmp_path):
    w = gpulog.SummaryWriter(tmp_path, flush_secs=0.3, max_queue=10**6)
    stop = threading.Event()

    def producer():
        i = 0
        while not stop.is_set():
            w.add_scalar("x", float(i), i)
            i += 1

    th = threading.Thread(target=producer)
    th.start()
    try:
        deadline = time.time() + 5
        seen = 0
        while time.time() < deadline and seen < 1000:
            time.sleep(0.1)
            seen = len(read_scalars(tmp_path).get("x", []))
        assert seen >= 1000, "records should reach the file while the producer is still running"
        assert th.is_alive()
    finally:
        stop.set()
        th.join()
        w.close()


def test_add_event_and_add_summary_accept_protobuf_messages(tmp_path):
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    w = gpulog.SummaryWriter(tmp_path)
    fw = w._get_file_writer()
    fw.add_event(Event(summary=Summary(value=[Summary.Value(tag="a", simple_value=1.0)])), step=5)
    fw.add_summary(Summary(value=[Summary.Value(tag="b", simple_value=2.0)]), global_step=6, walltime=123.0)
    with pytest.raises(TypeError, match="protobuf"):
        fw.add_summary({"tag": "c"})
    w.close()
    s = read_scalars(tmp_path)
    assert s == {"a": [(5, 1.0)], "b": [(6, 2.0)]}
    assert any(e.wall_time == 123.0 for e in read_events(tmp_path))


def test_reopening_after_close_from_two_threads_opens_one_file(tmp_path, monkeypatch):
    """Issue #19, defect 2: _get_file_writer() had no lock; after close(), two threads logging
    at once (the caller and the compiled-step pump, say) each opened a new event file."""
    import threading
    import time
    from gpulog import file_writer
    w = gpulog.SummaryWriter(tmp_path)
    w.add_scalar("x", 0.0, 0)
    w.close()
    real_open = file_writer.FileWriter._open

    def slow_open(self, *a, **k):  # widen the window between the check and the assignment
        time.sleep(0.05)
        return real_open(self, *a, **k)
    monkeypatch.setattr(file_writer.FileWriter, "_open", slow_open)
    start = threading.Barrier(2)

    def log(i):
        start.wait()
        w.add_scalar("x", float(i), i)
    threads = [threading.Thread(target=log, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    files = [f for f in os.listdir(tmp_path) if "tfevents" in f]
    assert len(files) == 2, files  # the first file, and one reopened file
    assert sorted(s for s, _ in read_scalars(tmp_path)["x"]) == [0, 1, 2]


def test_a_write_error_is_reported_once(tmp_path):
    """Issue #19, defect 3: Sink.error was read and cleared by callers without a lock, so two
    threads could both raise the same write error (or a new one could be lost)."""
    import sys
    import threading
    fw = gpulog.FileWriter(tmp_path)
    sink = fw._sink
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: make the race likely
    try:
        for trial in range(300):
            sink.error = OSError(28, f"No space left on device ({trial})")
            raised = []
            start = threading.Barrier(4)

            def report():
                start.wait()
                try:
                    fw._report(sink)
                except OSError:
                    raised.append(1)
            threads = [threading.Thread(target=report) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(raised) == 1, (trial, len(raised))
    finally:
        sys.setswitchinterval(old)
        fw.close()


def test_exit_phases_run_in_their_written_order(capsys, monkeypatch):
    """Issue #19: every process hook lives in _lifecycle; at exit the phases run in the order
    EXIT_PHASES states (rings, ranks, writer) whichever was registered first, and a step that
    fails is reported without stopping the later ones."""
    from gpulog import _lifecycle
    monkeypatch.setattr(_lifecycle, "_exit_steps", {p: {} for p in ("uploads",) + _lifecycle.EXIT_PHASES})
    ran = []
    _lifecycle.at_exit("writer", lambda: ran.append("writer"))
    _lifecycle.at_exit("ranks", lambda: (ran.append("ranks"), 1 / 0))
    remove = _lifecycle.at_exit("rings", lambda: ran.append("rings"))
    _lifecycle._run_exit()
    assert ran == ["rings", "ranks", "writer"]
    assert "exit step ranks failed: ZeroDivisionError" in capsys.readouterr().err
    remove()
    ran.clear()
    _lifecycle._run_exit()
    assert ran == ["ranks", "writer"]  # unregistered steps do not run
