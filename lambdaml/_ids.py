"""Prediction ids: 32 random hex digits, as ``secrets.token_hex(16)`` makes them, 256 at a time.

Hand-written because ``os.urandom`` is a system call, and one per prediction was ~6 us here
(bench/bench_overhead.py, 2026-12-06), a tenth of the work a replica adds to a request. One
call now reads the bytes of 256 ids. The ids stay unguessable (a prediction's output files
are stored under its id); a forked child drops its parent's unused ids, which the parent
will hand out too.
"""

from __future__ import annotations

import os
import threading

_BATCH = 256
_unused: list[str] = []
_lock = threading.Lock()  # a replica makes ids on its event loop and in worker threads


def new_id() -> str:
    """A fresh random id (128 bits, hex)."""
    with _lock:
        if not _unused:
            digits = os.urandom(16 * _BATCH).hex()
            _unused.extend(digits[start : start + 32] for start in range(0, len(digits), 32))
        return _unused.pop()


os.register_at_fork(after_in_child=_unused.clear)
