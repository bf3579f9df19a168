"""Stage 4: host-side encoders, one module per summary kind (torch-free, numpy allowed).

Each encoder turns already-reduced host data into serialized ``Summary.Value`` messages; the
writer thread wraps them into an ``Event`` and a TFRecord.
"""
