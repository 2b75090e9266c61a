"""Figures per version of a model, from its records: what ``lambdaml status`` shows side by side
while a canary runs (``lambdaml.canary.compare``)."""

from __future__ import annotations

import statistics
from typing import Any

import sqlalchemy as sa

from lambdaml.control.records import Records
from lambdaml.control.tables import predictions

MOST_RECORDS = 20_000  # read at most this many of the newest records: the figures stay cheap under load


def version_stats(records: Records, model: str, since_ts: float) -> dict[str, dict[str, Any]]:
    """By version: finished predictions since ``since_ts``, failures, error rate, p50 and p95 total time (s)."""
    query = (
        sa.select(predictions.c.version, predictions.c.status, predictions.c.metrics)
        .where(predictions.c.model == model, predictions.c.created_ts >= since_ts,
               predictions.c.status.in_(("succeeded", "failed", "canceled")))
        .order_by(predictions.c.created_ts.desc())
        .limit(MOST_RECORDS)
    )
    with records.reader.connect() as connection:
        rows = connection.execute(query).all()
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
