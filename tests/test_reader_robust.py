"""The reader against damaged files: bit flips, crafted records, truncation; streamed reading."""
from __future__ import annotations

import random
import subprocess
import sys
import warnings

import pytest

import gpulog
from gpulog._record import CorruptRecordWarning, frame
from gpulog.reader import read_events, read_scalars


@pytest.fixture
def thousand(tmp_path):
    with gpulog.SummaryWriter(tmp_path) as w:
        for i in range(1000):
            w.add_scalar("x", float(i), i)
    (f,) = [p for p in tmp_path.iterdir() if "tfevents" in p.name]
    return f


def _flip(path, bit):
    data = bytearray(path.read_bytes())
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def test_flip_in_last_record_keeps_everything_before(thousand):
    size = thousand.stat().st_size
    _flip(thousand, (size - 6) * 8)  # inside the last record's payload
    with pytest.warns(CorruptRecordWarning, match=r"offset \d+"):
        got = read_scalars(thousand)["x"]
    assert got == [(i, float(i)) for i in range(999)]


def test_inspect_reports_a_damaged_file_in_one_line(thousand):
    _flip(thousand, (thousand.stat().st_size - 6) * 8)
    r = subprocess.run([sys.executable, "-m", "gpulog.cli", "inspect", str(thousand.parent)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if "warning" in line]) == 1
    assert "999" in r.stdout


def test_random_single_bit_flips_never_raise(thousand):
    original = thousand.read_bytes()
    rng = random.Random(0)
    for _ in range(400):
        bit = rng.randrange(len(original) * 8)
        thousand.write_bytes(original)
        _flip(thousand, bit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CorruptRecordWarning)
            events = read_events(thousand)
        # every record before the damaged one is intact
        record_of_bit = _record_index(original, bit // 8)
        assert len(events) >= record_of_bit


def _record_index(data: bytes, offset: int) -> int:
    import struct
    pos = i = 0
    while pos < len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        if offset < pos + 16 + n:
            return i
        pos, i = pos + 16 + n, i + 1
    return i


def test_crafted_records_with_valid_crc_are_skipped(tmp_path):
    good = gpulog.SummaryWriter(tmp_path)
    good.add_scalar("x", 1.0, 1)
    good.close()
    (f,) = [p for p in tmp_path.iterdir() if "tfevents" in p.name]
    garbage = [b"\xff\xff\xff", b"\x2a\x05\xff\xfe\xfd\xfc\xfb",  # bad varint; bad utf-8 in a string field
               bytes([0x2a, 0x04, 0x0a, 0x02, 0xc3, 0x28])]
    with open(f, "ab") as fh:
        for g in garbage:
            fh.write(frame(g))
    with gpulog.SummaryWriter(tmp_path) as w2:
        w2.add_scalar("x", 2.0, 2)
    with pytest.warns(CorruptRecordWarning):
        assert read_scalars(tmp_path)["x"] == [(1, 1.0), (2, 2.0)]


@pytest.mark.parametrize("read", ["read_scalars", "read_events"])
@pytest.mark.parametrize("decoder", ["native", "python"])
def test_files_are_streamed_not_read_whole(thousand, monkeypatch, decoder, read, event_file_reads):
    from gpulog import reader
    if decoder == "native":
        pytest.importorskip("gpulog._native")
        monkeypatch.setattr(reader, "SCAN_CHUNK", 2048)  # the file is ~50 KB: many chunks
        bound = 2048
    else:
        monkeypatch.setattr(reader, "_scan_scalars", lambda path: None)
        monkeypatch.setattr(reader, "_native_event_scan", lambda: None)
        bound = 4096
    if read == "read_scalars":
        assert len(read_scalars(thousand)["x"]) == 1000
    else:
        assert [e.step for e in read_events(thousand) if e.values] == list(range(1000))
    sizes = event_file_reads
    assert len(sizes) > 1 and all(0 <= n <= bound for n in sizes)


def test_read_scalars_as_frame(tmp_path, monkeypatch):
    with gpulog.SummaryWriter(tmp_path) as w:
        w.add_scalar("a", 1.5, 3)
        w.add_scalar("b", 2.5, 4, new_style=True)
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            read_scalars(tmp_path, as_frame=True)
        return
    df = read_scalars(tmp_path, as_frame=True)
    assert list(df.columns) == ["tag", "step", "value"]
    assert df.values.tolist() == [["a", 3, 1.5], ["b", 4, 2.5]]
    monkeypatch.setitem(sys.modules, "pandas", None)     # as if not installed
    with pytest.raises(ImportError, match="pip install pandas"):
        read_scalars(tmp_path, as_frame=True)


def test_every_kind_reads_back_as_tensorboard_reads_it(tmp_path):
    """Issue #19: each summary kind's module parses what it wrote (the reader and `gpulog
    inspect` knew only scalars).  Oracle: TensorBoard's EventAccumulator on the same files."""
    import json
    import subprocess
    import sys

    import numpy as np
    import torch
    from tensorboard.util.tensor_util import make_ndarray

    import gpulog
    from gpulog.reader import read_summaries
    from tbcompare import accumulate
    g = torch.Generator().manual_seed(3)
    with gpulog.SummaryWriter(tmp_path) as w:
        for step in range(2):
            w.add_histogram("h", torch.randn(1000, generator=g), step)
            w.add_image("img", torch.rand(3, 12, 20, generator=g), step)
            w.add_text("note", f"step {step} **bold**", step)
            w.add_pr_curve("pr", torch.randint(0, 2, (300,), generator=g), torch.rand(300, generator=g), step,
                           num_thresholds=33)
            w.add_audio("snd", torch.rand(800, generator=g) * 2 - 1, step, sample_rate=8000)
    acc = accumulate(str(tmp_path))
    hist = read_summaries(tmp_path, "histograms")["h"]
    for (step, got), want in zip(hist, acc.Histograms("h")):
        assert step == want.step and got["num"] == want.histogram_value.num
        assert list(got["bucket"]) == list(want.histogram_value.bucket)
    images = read_summaries(tmp_path, "images")["img"]
    assert [(s, p["width"], p["height"], p["format"]) for s, p in images] == \
        [(e.step, e.width, e.height, "png") for e in acc.Images("img")]
    texts = read_summaries(tmp_path, "text")["note/text_summary"]
    assert [p["text"] for _, p in texts] == \
        [make_ndarray(t.tensor_proto).reshape(-1)[0].decode() for t in acc.Tensors("note/text_summary")]
    prs = read_summaries(tmp_path, "pr_curves")["pr"]
    for (_, got), want in zip(prs, acc.Tensors("pr")):
        np.testing.assert_array_equal(got["curve"].astype(np.float32), make_ndarray(want.tensor_proto))
        assert got["num_thresholds"] == 33
    sounds = read_summaries(tmp_path, "audio")["snd"]
    assert [(p["sample_rate"], p["frames"]) for _, p in sounds] == \
        [(e.sample_rate, e.length_frames) for e in acc.Audio("snd")]
    r = subprocess.run([sys.executable, "-m", "gpulog.cli", "inspect", str(tmp_path), "--json"],
                       capture_output=True, text=True, timeout=120)
    rows = {row["tag"]: row for row in json.loads(r.stdout)}
    assert rows["h"]["last_value"].startswith("n=1000 ")
    assert rows["img"]["last_value"] == "20x12 png"
    assert rows["note/text_summary"]["last_value"] == "step 1 **bold**"
    assert rows["pr"]["last_value"].startswith("33 thresholds")
    assert rows["snd"]["last_value"] == "800 frames at 8000 Hz"


def _python_scalars(path):
    """read_scalars by the Python decoder alone (no native scan of scalars or of events)."""
    from gpulog import reader
    saved = reader._native_event_scan
    reader._native_event_scan = lambda: None
    try:
        return {tag: [(s, p["value"]) for s, p in v] for tag, v in reader.read_summaries(path, "scalars").items()}
    finally:
        reader._native_event_scan = saved


def test_native_scalar_scan_equals_the_python_decoder_and_tensorboard(tmp_path):
    """Issue #21 (reading at disk speed): read_scalars scans each file in C; it must return what
    the Python decoder returns (simple_value and new-style float/double scalars, several files
    and tags, steps beyond 2**31 and negative) and what TensorBoard reads."""
    pytest.importorskip("gpulog._native")
    import numpy as np
    import gpulog
    from tbcompare import accumulate
    rng = np.random.default_rng(0)
    for part in range(2):  # two event files in one run
        with gpulog.SummaryWriter(tmp_path) as w:
            for i in range(500):
                w.add_scalar("a", float(rng.standard_normal()), i + 1000 * part)
                w.add_scalar("b/new", float(rng.standard_normal()), 2**40 + i, new_style=True)
                w.add_scalar("c/double", float(rng.standard_normal()), -i, new_style=True, double_precision=True)
                if i % 100 == 0:
                    w.add_histogram("h", rng.standard_normal(100), i)
                    w.add_text("t", "not a scalar", i)
    got = read_scalars(tmp_path)
    assert got == _python_scalars(tmp_path)
    assert list(got) == ["a", "b/new", "c/double"]
    acc = accumulate(str(tmp_path))
    assert [(e.step, e.value) for e in acc.Scalars("a")] == [(s, pytest.approx(v)) for s, v in got["a"]]
    frame = read_scalars(tmp_path, as_frame=True)
    assert list(frame.columns) == ["tag", "step", "value"] and len(frame) == 3000
    assert list(zip(frame.tag, frame.step, frame.value)) == [(t, s, v) for t, vs in got.items() for s, v in vs]


@pytest.mark.parametrize("seed", range(6))
def test_native_scan_skips_damage_like_the_python_decoder(tmp_path, seed, monkeypatch):
    pytest.importorskip("gpulog._native")
    import random
    from gpulog import reader
    if seed % 2:
        monkeypatch.setattr(reader, "SCAN_CHUNK", 1000)  # records cut across chunk boundaries
    import warnings
    import gpulog
    with gpulog.SummaryWriter(tmp_path) as w:
        for i in range(300):
            w.add_scalar("x", float(i), i)
            w.add_scalar("y", float(-i), i, new_style=True)
    f = next(p for p in tmp_path.iterdir() if "tfevents" in p.name)
    data = bytearray(f.read_bytes())
    rnd = random.Random(seed)
    for _ in range(3):  # flip bits anywhere: lengths, CRCs, payloads
        pos = rnd.randrange(len(data))
        data[pos] ^= 1 << rnd.randrange(8)
    if seed % 2:
        data = data[:-rnd.randrange(1, 40)]  # and a torn last record
    f.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as native_w:
        warnings.simplefilter("always")
        native = read_scalars(tmp_path)
    with warnings.catch_warnings(record=True) as python_w:
        warnings.simplefilter("always")
        python = _python_scalars(tmp_path)
    assert native == python
    assert [str(w.message) for w in native_w] == [str(w.message) for w in python_w]


def test_inspect_with_the_native_scan_lists_what_the_python_decoder_lists(tmp_path, monkeypatch):
    """Issue #21: gpulog inspect counts scalars from the C scan and decodes only the other events
    in Python; every row (count, last step, last value, for every kind) equals the Python path's,
    damaged records included."""
    import torch
    from gpulog import cli, reader
    if reader.scan_files([], None) is None:
        pytest.skip("no native extension")
    w = gpulog.SummaryWriter(str(tmp_path))
    for i in range(60):
        w.add_scalar("loss", 1.0 / (i + 1), i)
        w.add_scalar("lr", 0.1, i, new_style=True, double_precision=True)
        if i % 10 == 0:
            w.add_histogram("h", torch.randn(100), i)
            w.add_text("t", f"step {i}", i)
            w.add_image("img", torch.rand(3, 4, 4), i)
    w.add_scalars("grp", {"a": 1.0, "b": 2.0}, 3)
    w.add_graph(torch.nn.Linear(2, 1), torch.randn(1, 2))
    w.close()
    f = reader.event_files(str(tmp_path))[0]
    data = bytearray(open(f, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one damaged record
    open(f, "wb").write(bytes(data))
    with pytest.warns(reader.CorruptRecordWarning):
        native = cli.inspect_rows(str(tmp_path))
    monkeypatch.setattr(reader, "scan_files", lambda files, fs, others=None: None)
    with pytest.warns(reader.CorruptRecordWarning):
        python = cli.inspect_rows(str(tmp_path))
    assert native == python and len(native) >= 9
