"""Figures of a model from its records: per version (what ``lambdaml status`` shows side by side
while a canary runs, ``lambdaml.canary.compare``), and over time (the playground's monitoring
panel and ``lambdaml status NAME``, ``lambdaml.ui``).

Everything is computed from the records database (and the replicas' presence reports), so it
works on any cluster with nothing else installed, and reading it never wakes a model.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from typing import Any

import sqlalchemy as sa

from lambdaml.control.records import FINAL, Records
from lambdaml.control.tables import predictions
from lambdaml.control.usage import Usage

MOST_RECORDS = 20_000  # read at most this many of the newest records: the figures stay cheap under load
WINDOWS = {"1h": (3600, 60), "24h": (86400, 900)}  # window: (seconds, bucket seconds): 60 and 96 points
REPLICA_SEEN_S = 20.0  # a replica reports every 15 s (lambdaml.serve.presence): seen this recently, it is up


def _finished(records: Records, model: str, since_ts: float, *columns: Any) -> list[Any]:
    """The newest finished records of ``model`` created since ``since_ts`` (at most ``MOST_RECORDS``)."""
    query = (
        sa.select(*columns)
        .where(predictions.c.model == model, predictions.c.created_ts >= since_ts, predictions.c.status.in_(FINAL))
        .order_by(predictions.c.created_ts.desc())
        .limit(MOST_RECORDS)
    )
    with records.reader.connect() as connection:
        return connection.execute(query).all()


def version_stats(records: Records, model: str, since_ts: float) -> dict[str, dict[str, Any]]:
    """By version: finished predictions since ``since_ts``, failures, error rate, p50 and p95 total time (s)."""
    rows = _finished(records, model, since_ts, predictions.c.version, predictions.c.status, predictions.c.metrics)
    by_version: dict[str, list[tuple[str, float | None]]] = {}
    for version, status, metrics in rows:
        by_version.setdefault(version, []).append((status, (metrics or {}).get("total_time")))
    return {version: _figures(found) for version, found in by_version.items()}


def _figures(found: list[tuple[str, float | None]]) -> dict[str, Any]:
    times = sorted(time for _, time in found if time is not None)
    failed = sum(status == "failed" for status, _ in found)
    return {
        "count": len(found), "failed": failed, "error_rate": failed / len(found),
        "p50": _quantile(times, 0.50), "p95": _quantile(times, 0.95),
    }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def model_series(records: Records, model: str, window: str = "1h", now: float | None = None) -> dict[str, Any]:
    """The monitoring panel's figures for ``model`` over ``window`` (``1h`` or ``24h``, ``WINDOWS``).

    ``points``: one per bucket, oldest first: ``t`` (its start, Unix s), ``count``, ``failed``,
    ``canceled``, ``error_rate`` (failed of finished; None when none finished), ``per_minute``,
    ``p50``/``p95`` of ``predict_time`` and ``total_time`` (s), ``cold_starts`` (replicas that
    started), ``replicas`` (replicas up at some time in it) and ``gpu_peak`` (the highest peak GPU
    memory of a prediction, bytes). ``totals``: the same over the whole window, plus ``versions``
    (how many predictions each version served) and ``replicas_now``.
    """
    span_s, bucket_s = WINDOWS[window]
    now = time.time() if now is None else now
    end = math.ceil(now / bucket_s) * bucket_s
    start = end - span_s
    rows = _finished(records, model, start, predictions.c.created_ts, predictions.c.version,
                     predictions.c.status, predictions.c.metrics)
    spans = [(span["started_ts"], span["seen_ts"]) for span in Usage(records).spans(start, model)]
    buckets: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in range(span_s // bucket_s)]
    for created_ts, _, status, metrics in rows:
        buckets[min(int((created_ts - start) // bucket_s), len(buckets) - 1)].append((status, metrics or {}))
    points = []
    for index, found in enumerate(buckets):
        t = start + index * bucket_s
        up = [span for span in spans if span[0] < t + bucket_s and span[1] >= t]
        points.append({"t": t, **_point(found, bucket_s), "cold_starts": sum(t <= span[0] < t + bucket_s for span in up),
                       "replicas": len(up)})
    every = [found for bucket in buckets for found in bucket]
    totals = {**_point(every, span_s), "cold_starts": sum(span[0] >= start for span in spans),
              "versions": dict(Counter(version for _, version, _, _ in rows)),
              "replicas_now": sum(span[1] >= now - REPLICA_SEEN_S for span in spans)}
    return {"model": model, "window": window, "bucket_s": bucket_s, "start": start, "end": end,
            "points": points, "totals": totals, "capped": len(rows) >= MOST_RECORDS}


def _point(found: list[tuple[str, dict[str, Any]]], seconds: float) -> dict[str, Any]:
    """Counts, rates and time quantiles of some finished predictions."""
    statuses = Counter(status for status, _ in found)
    figures: dict[str, Any] = {
        "count": len(found), "failed": statuses["failed"], "canceled": statuses["canceled"],
        "error_rate": statuses["failed"] / len(found) if found else None, "per_minute": len(found) * 60 / seconds,
    }
    for name in ("predict_time", "total_time"):
        values = [metrics[name] for _, metrics in found if isinstance(metrics.get(name), (int, float))]
        figures[f"{name}_p50"], figures[f"{name}_p95"] = _quantile(values, 0.50), _quantile(values, 0.95)
    peaks = [metrics["gpu_peak"] for _, metrics in found if isinstance(metrics.get("gpu_peak"), (int, float))]
    figures["gpu_peak"] = max(peaks) if peaks else None
    return figures


def sparkline(records: Records, models: list[str], points: int = 30, span_s: float = 3600.0) -> dict[str, list[int]]:
    """Predictions created per bucket over the last ``span_s``, for each of ``models`` (the overview's sparklines)."""
    bucket_s = span_s / points
    start = time.time() - span_s
    bucket = sa.func.floor((predictions.c.created_ts - start) / bucket_s).label("bucket")
    query = (sa.select(predictions.c.model, bucket, sa.func.count())
             .where(predictions.c.model.in_(models), predictions.c.created_ts >= start)
             .group_by(predictions.c.model, bucket))
    counts = {model: [0] * points for model in models}
    with records.reader.connect() as connection:
        for model, index, count in connection.execute(query).all():
            counts[model][min(int(index), points - 1)] += int(count)
    return counts
