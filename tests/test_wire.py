"""Wire layer: hand-encoded bytes equal protobuf's serialization; CRC and framing test vectors."""
from __future__ import annotations

import struct

import pytest


def _masked(data: bytes) -> int:
    return mask(crc32c(data))

from gpulog._crc32c import crc32c, crc32c_py, mask
from gpulog._encode.scalar import scalar_event
from gpulog._proto import messages as m
from gpulog._proto import wire
from gpulog._proto.decode import parse_event
from gpulog._record import CorruptRecordWarning, frame, read_records


def test_crc_vectors():
    assert crc32c(b"123456789") == crc32c_py(b"123456789") == 0xE3069283
    assert _masked(b"\0" * 8) == 0x07980329
    assert _masked(struct.pack("<Q", 24)) == 0x224B7FA3
    payload = bytes.fromhex("09000080389 9D6D7411A0D".replace(" ", "")) + b"brain.Event:2"
    assert _masked(payload) == 0xAB364B12
    assert mask(0) == 0xA282EAD8


@pytest.mark.parametrize("tag,value,step,wall", [
    ("loss", 1.5, 3, 123.25), ("台股/0050", float("nan"), 0, 1.0), ("a" * 300, 1e40, 2**40, 0.0),
    ("neg", -0.0, -1, 5.0), ("x", 3, None, 1.7e9)])
def test_scalar_event_bytes_equal_protobuf(tag, value, step, wall):
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    ev = Event(wall_time=wall, summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)]))
    if step is not None:
        ev.step = step
    assert scalar_event(tag, value, step, wall) == ev.SerializeToString()


def test_messages_equal_protobuf():
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog
    from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
    ev = Event(wall_time=1.5, step=42, session_log=SessionLog(status=SessionLog.START))
    assert m.event(1.5, 42, session_log_status=1) == ev.SerializeToString()
    ev = Event(wall_time=2.0, file_version="brain.Event:2")
    ev.source_metadata.writer = "gpulog"
    assert m.event(2.0, file_version="brain.Event:2", source_writer="gpulog") == ev.SerializeToString()
    h = HistogramProto(min=-1, max=2, num=3, sum=1, sum_squares=5, bucket_limit=[0, 1, 2], bucket=[1, 0, 2])
    assert m.histogram_proto(-1, 2, 3, 1, 5, [0, 1, 2], [1, 0, 2]) == h.SerializeToString()
    img = Summary.Image(height=2, width=3, colorspace=3, encoded_image_string=b"png")
    assert m.image(2, 3, 3, b"png") == img.SerializeToString()
    au = Summary.Audio(sample_rate=44100, num_channels=1, length_frames=10,
                       encoded_audio_string=b"wav", content_type="audio/wav")
    assert m.audio(44100, 1, 10, b"wav", "audio/wav") == au.SerializeToString()


def test_varints_match_protobuf_for_edge_values():
    from google.protobuf.internal import encoder
    for n in [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63)]:
        out = []
        encoder._EncodeSignedVarint(out.append, n, True) if n < 0 else encoder._EncodeVarint(out.append, n, True)
        assert wire.varint(n) == b"".join(out)


def _records(data: bytes):
    import io
    return [p for _, p in read_records(io.BytesIO(data), "mem")]


def test_framing_round_trip_and_truncation():
    recs = [scalar_event("t", float(i), i, 1.0) for i in range(5)]
    data = b"".join(frame(r) for r in recs)
    assert _records(data) == recs
    # a truncated last record is skipped; earlier ones are intact
    assert _records(data[:-3]) == recs[:-1]
    bad = bytearray(data)
    bad[20] ^= 0xFF  # inside the first record's data: that record is skipped, with a warning
    with pytest.warns(CorruptRecordWarning):
        assert _records(bytes(bad)) == recs[1:]
    ev = parse_event(recs[3])
    assert ev.step == 3 and ev.values[0].scalar == 3.0


def test_native_and_python_scalar_framing_are_byte_identical(tmp_path, monkeypatch):
    """Issue #21: the writer frames runs of scalars in C (gpulog._native.frame_scalars); the
    records must be byte for byte the Python encoder's, on random inputs (empty and long tags,
    non-ASCII, +-inf, NaN, -0.0, values beyond float32, extreme steps, zero wall times) and in
    the files the writer writes."""
    import io
    import math
    import random
    native = pytest.importorskip("gpulog._native")
    from gpulog import _worker
    rnd = random.Random(1)
    items = []
    for _ in range(20000):
        items.append((None, rnd.choice(["loss", "a/b", "ünï/täg", "", "x" * 300]),
                      rnd.choice([rnd.gauss(0, 1), 1e39, -math.inf, math.nan, -0.0, 1e-45, 10**20]),
                      rnd.choice([None, 0, 1, 128, 2**63 - 1, -1, -2**63]),
                      rnd.choice([0.0, -0.0, 1.7e9 + rnd.random()])))
    assert native.frame_scalars(items, 0, len(items)) == [frame(scalar_event(t, v, s, w)) for _, t, v, s, w in items]

    def run(d, use_native):
        monkeypatch.setattr(_worker, "_native_framer", (lambda: native.frame_scalars) if use_native else (lambda: None))
        import gpulog
        w = gpulog.SummaryWriter(d, max_queue=100)
        for i in range(3000):
            w.add_scalar(f"t{i % 7}", float(i) / 3, i, walltime=1000.0 + i)
        w.close()
        f = next(p for p in d.iterdir() if "tfevents" in p.name)
        return [p for _, p in read_records(io.BytesIO(f.read_bytes()), str(f))][1:]  # all but the header
    assert run(tmp_path / "native", True) == run(tmp_path / "python", False)
