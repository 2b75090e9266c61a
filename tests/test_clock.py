"""Timestamps (lambdaml._clock): the text ``datetime.isoformat`` gives, whatever the second or microsecond."""

import datetime
import time

from lambdaml import _clock


def _iso(timestamp: float) -> str:
    exact = datetime.datetime.fromtimestamp(round(timestamp * 1_000_000) / 1_000_000, datetime.timezone.utc)
    return exact.isoformat(timespec="microseconds")


def test_stamps_match_isoformat_across_seconds_and_microseconds():
    for timestamp in (0, 0.000001, 1.5, 59.999999, 1_700_000_000.000001, 1_700_000_000.999999, 1_700_000_001.25):
        assert _clock.at(timestamp) == _iso(timestamp)


def test_now_and_after_read_the_clock():
    before = time.time()
    stamp, later = _clock.now(), _clock.after(90)
    assert _iso(before) <= stamp <= _iso(time.time())
    assert _iso(before + 90) <= later <= _iso(time.time() + 90)
