"""The monitoring figures (lambdaml.control.stats) against a real SQLite file and a real PostgreSQL
server: buckets, quantiles, error rate, cold starts and replicas from the presence reports."""

from __future__ import annotations

import time

import pytest

from lambdaml.control.records import Records
from lambdaml.control.stats import WINDOWS, model_series, sparkline, version_stats
from lambdaml.control.usage import Usage
from tests.test_records import done, new


@pytest.fixture
def records(database):
    opened = Records(database)
    yield opened
    opened.close()


def _finished(records: Records, prediction_id: str, seconds_ago: float, status: str = "succeeded", model: str = "hello",
              predict: float = 0.1, **metrics) -> None:
    records.upsert([new(prediction_id, seconds_ago=seconds_ago, model=model)])
    records.upsert([done(prediction_id, status=status, metrics={"predict_time": predict, "total_time": predict + 0.05,
                                                                  **metrics})])


def test_the_last_hour_in_minutes(records):
    now = time.time()
    for index, seconds_ago in enumerate((30, 40, 50, 600, 601)):
        _finished(records, f"p{index}", seconds_ago, predict=0.1 * (index + 1))
    _finished(records, "bad", 45, status="failed")
    _finished(records, "gone", 46, status="canceled")
    _finished(records, "old", 2 * 3600)  # outside the window
    _finished(records, "other", 30, model="other")  # another model
    records.upsert([new("running", seconds_ago=5)])  # unfinished: not counted yet
    series = model_series(records, "hello", "1h", now=now)
    assert series["bucket_s"] == 60 and len(series["points"]) == 60
    assert series["points"][-1]["t"] <= now < series["end"]
    totals = series["totals"]
    assert (totals["count"], totals["failed"], totals["canceled"]) == (7, 1, 1)
    assert totals["error_rate"] == pytest.approx(1 / 7)
    assert totals["per_minute"] == pytest.approx(7 / 60)
    assert totals["versions"] == {"v1": 7}
    # 0.1 (three times: p0, bad, gone), 0.2, 0.3, 0.4, 0.5
    assert totals["predict_time_p50"] == pytest.approx(0.2) and totals["predict_time_p95"] == pytest.approx(0.47)
    assert sum(point["count"] for point in series["points"]) == 7
    ten_minutes_ago = next(point for point in series["points"] if point["t"] <= now - 600 < point["t"] + 60)
    assert ten_minutes_ago["count"] >= 1  # p3 (600 s ago) lands in its minute
    empty = next(point for point in series["points"] if not point["count"])
    assert empty["error_rate"] is None and empty["predict_time_p50"] is None and empty["gpu_peak"] is None


def test_gpu_peaks_cold_starts_and_replicas(records):
    now = time.time()
    _finished(records, "g1", 100, gpu_peak=2.0e9)
    _finished(records, "g2", 90, gpu_peak=3.5e9)
    usage = Usage(records)
    usage.seen("replica-a", "hello", "v1", {"CPU": 1}, now - 1200)  # up 20 minutes, seen now
    usage.seen("replica-b", "hello", "v1", {"CPU": 1}, now - 300)
    usage.seen("replica-x", "other", "v1", {"CPU": 1}, now - 300)
    series = model_series(records, "hello", "1h", now=now + 1)
    totals = series["totals"]
    assert totals["gpu_peak"] == 3.5e9 and totals["cold_starts"] == 2 and totals["replicas_now"] == 2
    assert max(point["replicas"] for point in series["points"]) == 2
    assert sum(point["cold_starts"] for point in series["points"]) == 2
    assert series["points"][0]["replicas"] == 0  # an hour ago neither was up
    day = model_series(records, "hello", "24h", now=now)
    assert (day["bucket_s"], len(day["points"])) == (WINDOWS["24h"][1], 96) and day["totals"]["count"] == 2


def test_sparklines_and_versions(records):
    _finished(records, "s1", 60)
    _finished(records, "s2", 65)
    _finished(records, "s3", 3000, model="other")
    lines = sparkline(records, ["hello", "other", "idle"])
    assert sum(lines["hello"]) == 2 and sum(lines["other"]) == 1 and lines["idle"] == [0] * 30
    assert lines["hello"][-2:] != [0, 0]  # the newest buckets are last
    by_version = version_stats(records, "hello", time.time() - 3600)
    assert by_version["v1"]["count"] == 2 and by_version["v1"]["failed"] == 0
