"""Timestamps as lambdaml writes them: ISO 8601, UTC, with microseconds.

One formatter for predictions (three stamps per request) and artifact records.
"""

from __future__ import annotations

import time


_second = (-1, "")  # the last second formatted, and its text up to the microseconds


def _stamp(micros: int) -> str:
    """Microseconds since the epoch as text. Each second is formatted once; the microseconds are
    the digits of ``1_000_000 + micro`` less the first (no format spec): ``now()`` runs three times
    per prediction, and ``datetime.isoformat``, then ``f"{micro:06d}"``, were a measurable share."""
    global _second
    second = micros // 1_000_000
    known = _second
    if known[0] != second:  # one tuple, replaced whole: another thread never sees half of it
        known = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)))
    return known[1] + str(micros - second * 1_000_000 + 1_000_000)[1:] + "+00:00"


def now() -> str:
    """The UTC time, e.g. ``2026-11-22T08:02:42.063804+00:00``."""
    return _stamp(time.time_ns() // 1000)


def after(seconds: float) -> str:
    """The UTC time ``seconds`` from now, formatted as ``now()`` does (a prediction's deadline)."""
    return at(time.time() + seconds)


def at(timestamp: float) -> str:
    """A Unix timestamp formatted as ``now()`` does."""
    return _stamp(round(timestamp * 1_000_000))
