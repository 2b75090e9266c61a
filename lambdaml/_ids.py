"""Prediction ids: 32 hex digits, the time in milliseconds (12) then 80 random bits (20).

Time first, because the records database indexes predictions by id: ids that grow with time
are added at the end of that index, where fully random ones land anywhere in it. With random
ids a record cost 33 us to write at 100,000 records against 21 us (``Records.sync`` in
batches of 100, SQLite, 2026-12-06), and the gap grows with the table. 80 random bits keep the
ids unguessable (a prediction's output files are stored under its id).

The random bits come 256 ids at a time: ``os.urandom`` is a system call, and one per prediction
was ~6 us here (bench/bench_overhead.py), a tenth of the work a replica adds to a request. A
forked child drops its parent's unused bits, which the parent will use too.
"""

from __future__ import annotations

import os
import threading
import time

_BATCH = 256
_unused: list[str] = []
_lock = threading.Lock()  # a replica makes ids on its event loop and in worker threads


def new_id() -> str:
    """A fresh id: ``{milliseconds:012x}{80 random bits:020x}``."""
    with _lock:
        if not _unused:
            digits = os.urandom(10 * _BATCH).hex()
            _unused.extend(digits[start : start + 20] for start in range(0, len(digits), 20))
        random_part = _unused.pop()
    return f"{time.time_ns() // 1_000_000:012x}{random_part}"


os.register_at_fork(after_in_child=_unused.clear)
