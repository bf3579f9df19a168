"""Issue #21 (reading at disk speed): ``read_events`` builds plain scalar events in C
(``_native.scan_events``) and hands every other record to the Python decoder.  The oracle is the
Python decoder alone (``_native_event_scan`` patched out), itself checked against TensorBoard in
test_reader_robust.py and the differential suites: same events, same order, same warnings."""
from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

import gpulog
from gpulog import reader

pytest.importorskip("gpulog._native")


def _python_events(path, check_crc=True):
    saved = reader._native_event_scan
    reader._native_event_scan = lambda: None
    try:
        return reader.read_events(path, check_crc)
    finally:
        reader._native_event_scan = saved


def _same(a, b):
    """Events equal field by field (numpy arrays by value and dtype)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert type(x) is type(y)
        for name, u in vars(x).items():
            v = getattr(y, name)
            if name == "values":
                assert len(u) == len(v)
                for p, q in zip(u, v):
                    _same_value(p, q)
            else:
                assert u == v and type(u) is type(v), (name, u, v)


def _same_value(p, q):
    assert type(p) is type(q)
    for name, u in vars(p).items():
        v = getattr(q, name)
        if name == "histogram" and u is not None:
            assert np.array_equal(u.bucket, v.bucket) and np.array_equal(u.bucket_limit, v.bucket_limit)
            assert (u.min, u.max, u.num, u.sum, u.sum_squares) == (v.min, v.max, v.num, v.sum, v.sum_squares)
        elif name == "tensor" and u is not None:
            assert u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u.value, v.value)
            assert u.value.dtype == v.value.dtype and u.value.shape == v.value.shape
            assert u.value.flags.writeable == v.value.flags.writeable
        else:
            assert u == v and type(u) is type(v), (name, u, v)


def _mixed_run(path):
    rng = np.random.default_rng(1)
    for part in range(2):
        with gpulog.SummaryWriter(path) as w:
            for i in range(400):
                w.add_scalar("loss", float(rng.standard_normal()), i + 1000 * part)
                w.add_scalar("é/ünïcode", 1e30 if i % 7 else float("nan"), 2**40 + i)  # beyond float32, NaN
                w.add_scalar("neg", -float(i), -i, walltime=0.0 if i == 3 else None)
                w.add_scalar("no_step", 0.5)
                w.add_scalar("new", float(i), i, new_style=True)
                w.add_scalar("new/double", float(i) / 3, i, new_style=True, double_precision=True)
                if i % 50 == 0:
                    w.add_histogram("h", rng.standard_normal(64), i)
                    w.add_text("t", "text", i)
                    w.add_image("img", rng.random((3, 4, 4)), i)
                    w.add_scalars("group", {"a": 1.0, "b": 2.0}, i)


def _nan_safe(events):
    """NaN != NaN: compare the bit patterns of scalars instead."""
    for e in events:
        for v in e.values:
            if v.scalar is not None and v.scalar != v.scalar:
                v.scalar = "nan"
    return events


@pytest.mark.parametrize("chunk", [None, 997])
def test_native_events_equal_the_python_decoder(tmp_path, monkeypatch, chunk):
    if chunk:
        monkeypatch.setattr(reader, "SCAN_CHUNK", chunk)  # records cut across chunk boundaries
    _mixed_run(tmp_path)
    native = reader.read_events(tmp_path)
    assert sum(1 for e in native if e.values and e.values[0].kind == "scalar") >= 3200
    assert sum(1 for e in native if e.values and e.values[0].plugin_name == "scalars") >= 1600
    _same(_nan_safe(native), _nan_safe(_python_events(tmp_path)))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("check_crc", [True, False])
def test_native_events_skip_damage_like_the_python_decoder(tmp_path, seed, check_crc, monkeypatch):
    """Bit flips anywhere (lengths, CRCs, payloads) and a torn tail; without the CRC check the
    flipped payloads themselves reach both decoders, which must agree on what they are."""
    if seed % 2:
        monkeypatch.setattr(reader, "SCAN_CHUNK", 1000)
    with gpulog.SummaryWriter(tmp_path) as w:
        for i in range(300):
            w.add_scalar("x", float(i), i)
            if i % 30 == 0:
                w.add_histogram("h", np.arange(10.0), i)
    f = next(p for p in tmp_path.iterdir() if "tfevents" in p.name)
    data = bytearray(f.read_bytes())
    rnd = random.Random(seed)
    for _ in range(6):
        pos = rnd.randrange(len(data))
        data[pos] ^= 1 << rnd.randrange(8)
    if seed % 2:
        data = data[:-rnd.randrange(1, 40)]
    f.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as native_w:
        warnings.simplefilter("always")
        native = reader.read_events(tmp_path, check_crc)
    with warnings.catch_warnings(record=True) as python_w:
        warnings.simplefilter("always")
        python = _python_events(tmp_path, check_crc)
    _same(_nan_safe(native), _nan_safe(python))
    assert [str(w.message) for w in native_w] == [str(w.message) for w in python_w]


def test_crafted_scalar_records_fall_back_to_the_decoder(tmp_path):
    """Records the C path does not build (a repeated field, an invalid UTF-8 tag, an unknown
    field) are decoded, or refused with the warning, by the Python decoder."""
    from gpulog._record import frame
    good = gpulog.SummaryWriter(tmp_path)
    good.add_scalar("x", 1.0, 1)
    good.close()
    f = next(p for p in tmp_path.iterdir() if "tfevents" in p.name)
    value = bytes([0x0a, 0x01, 0x61, 0x15]) + np.float32(2.5).tobytes()        # tag "a", 2.5
    twice = bytes([0x10, 0x03, 0x10, 0x04, 0x2a, len(value) + 2, 0x0a, len(value)]) + value  # step 3 then 4
    bad_tag = bytes([0x2a, 0x0b, 0x0a, 0x09, 0x0a, 0x02, 0xc3, 0x28, 0x15]) + np.float32(1).tobytes()
    unknown = bytes([0x10, 0x05, 0x58, 0x01, 0x2a, len(value) + 2, 0x0a, len(value)]) + value  # field 11
    with open(f, "ab") as fh:
        for payload in (twice, bad_tag, unknown):
            fh.write(frame(payload))
    with warnings.catch_warnings(record=True) as native_w:
        warnings.simplefilter("always")
        native = reader.read_events(tmp_path)
    with warnings.catch_warnings(record=True) as python_w:
        warnings.simplefilter("always")
        python = _python_events(tmp_path)
    _same(native, python)
    assert [e.step for e in native][-2:] == [4, 5] and len(native_w) == 1
    assert [str(w.message) for w in native_w] == [str(w.message) for w in python_w]


def test_scalar_events_are_built_in_c(tmp_path):
    """Plain and new-style scalar events never reach the Python decoder (what makes reading fast)."""
    import glob
    from gpulog import _native
    with gpulog.SummaryWriter(tmp_path) as w:
        for i in range(100):
            w.add_scalar("a", float(i), i)
            w.add_scalar("b", float(i), i, new_style=True)
            w.add_scalar("c", float(i), i, new_style=True, double_precision=True)
        w.add_histogram("h", np.arange(4.0), 0)
    (f,) = glob.glob(str(tmp_path / "*tfevents*"))
    with open(f, "rb") as fh:
        items, others, problems, _ = _native.scan_events(fh.read(), True, reader._event_context())
    assert others == 2 and not problems  # the file_version event and the histogram
    assert sum(1 for it in items if it.__class__ is reader.Event) == 300


@pytest.mark.parametrize("length", [2**64 - 1, 2**64 - 4, 2**63])
def test_a_crafted_huge_length_without_the_crc_check_ends_the_file(tmp_path, length):
    """A length near 2**64 (no CRC check to catch it) must end the file as a torn record does,
    in both native scans and the Python decoder: not wrap around and read past the buffer."""
    import struct
    from gpulog._record import frame
    with gpulog.SummaryWriter(tmp_path) as w:
        w.add_scalar("x", 1.0, 1)
    f = next(p for p in tmp_path.iterdir() if "tfevents" in p.name)
    crafted_at = f.stat().st_size
    with open(f, "ab") as fh:
        fh.write(struct.pack("<Q", length) + b"\0" * 4 + b"\x10\x01" * 8)
        fh.write(frame(b"\x10\x05"))  # never reached: it is inside the "record" above
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn record ends the file silently
        assert [e.step for e in reader.read_events(tmp_path, check_crc=False)] == [0, 1]
        assert [e.step for e in _python_events(tmp_path, check_crc=False)] == [0, 1]
    from gpulog import _native
    data = f.read_bytes()
    items, others, problems, consumed = _native.scan_events(data, False, reader._event_context())
    assert (len(items), problems, consumed) == (2, [], crafted_at)
    assert _native.scan_scalars(data, False, None)[-1] == crafted_at


@pytest.mark.parametrize("read", ["read_events", "read_scalars"])
def test_a_record_larger_than_a_chunk_is_read_in_one_go(tmp_path, monkeypatch, read, event_file_reads):
    """A record longer than SCAN_CHUNK (a big image, a graph) is read once it is known, not grown
    chunk by chunk (each growth re-copied everything read so far: quadratic in its size)."""
    monkeypatch.setattr(reader, "SCAN_CHUNK", 2048)
    with gpulog.SummaryWriter(tmp_path) as w:
        w.add_scalar("x", 1.0, 0)
        w.add_text("big", "y" * 400_000, 1)  # one ~400 KB record: ~200 chunks
        w.add_scalar("x", 2.0, 2)
    if read == "read_events":
        events = reader.read_events(tmp_path)
        assert [e.step for e in events if e.values] == [0, 1, 2]
    else:
        assert reader.read_scalars(tmp_path)["x"] == [(0, 1.0), (2, 2.0)]
    assert len(event_file_reads) <= 6, event_file_reads
