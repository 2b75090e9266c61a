"""Durations as people write them: ``90s``, ``5m``, ``1h``, ``7d``, ``250ms``, or plain seconds.

Used for the ``Cancel-After`` header (Replicate's) and for duration settings
such as ``LAMBDAML_RETENTION``, so both read the same way.
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
# What parse_duration reads and is more than zero, as a JSON Schema pattern (the OpenAPI document's).
POSITIVE_DURATION = r"^\s*(\d*[1-9]\d*(\.\d+)?|\d+\.\d*[1-9]\d*)\s*(ms|s|m|h|d)?\s*$"


def parse_duration(text: str) -> float:
    """Seconds in ``text``; a ValueError that shows the accepted forms otherwise."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write e.g. 90s, 5m, 1h, 7d, 250ms, or a number of seconds")
    return float(match[1]) * _UNITS[match[2] or "s"]
