"""Stage 1: reductions where the data lives, one module per summary kind.

Each ``prepare(...)`` validates its input at the call site and returns a :class:`Prepared`
(encoder, its host arguments, and the reduced arrays to come).  CUDA inputs are reduced by
asynchronous kernels and copied to pinned memory (``_transfer``); CPU inputs are snapshotted and
reduced on the writer thread, so the caller pays for a copy, not for the work.
"""
