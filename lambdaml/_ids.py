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
_lock = threading.Lock()  # one refill at a time: a replica makes ids on its event loop and in worker threads


def new_id() -> str:
    """A fresh id: ``{milliseconds:012x}{80 random bits:020x}``.

    No lock and no format spec on the way: ``list.pop`` is atomic, and 6 bytes are 12 hex digits.
    With a lock and ``f"{ms:012x}"`` an id cost 1.1 us (3.1 us on a cold cache) against 0.35 us
    (0.7 us), and a replica makes one per request. Two threads refilling at once waste a batch, no more.
    """
    try:
        random_part = _unused.pop()
    except IndexError:
        with _lock:
            digits = os.urandom(10 * _BATCH).hex()
            _unused.extend(digits[start : start + 20] for start in range(0, len(digits), 20))
        random_part = _unused.pop()
    return (time.time_ns() // 1_000_000).to_bytes(6, "big").hex() + random_part


os.register_at_fork(after_in_child=_unused.clear)
