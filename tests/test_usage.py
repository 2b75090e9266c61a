"""Replica spans in the records database (SQLite and PostgreSQL): what `lambdaml cost` prices."""

import time

import pytest

from lambdaml.control.records import Records
from lambdaml.control.usage import Usage

A100 = {"CPU": 1.0, "GPU": 1.0, "accelerator_type:A100": 0.001}


@pytest.fixture
def usage(database):
    records = Records(database)
    yield Usage(records)
    records.close()


def test_a_replica_has_one_span_from_its_start_to_its_last_report(usage):
    started = time.time() - 30
    usage.seen("r1", "captioner", "v1", A100, started)
    usage.seen("r1", "captioner", "v1", A100, started)  # every report moves the end only
    usage.seen("r2", "other", "v9", {"CPU": 0.5}, time.time())
    (span,) = usage.spans(started - 1, "captioner")
    assert span["replica"] == "r1" and span["started_ts"] == pytest.approx(started) and span["seen_ts"] >= started + 30
    assert span["resources"] == A100 and span["version"] == "v1"
    assert {row["model"] for row in usage.spans(started - 1)} == {"captioner", "other"}
    assert usage.spans(time.time() + 60) == []  # nothing was up later than now


def test_spans_older_than_the_retention_are_removed(usage):
    usage.seen("old", "m", "v", {}, time.time())
    assert usage.expire(3600) == 0
    time.sleep(0.05)
    assert usage.expire(0.01) == 1 and usage.spans(0) == []
