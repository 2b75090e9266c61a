"""Replica-time: which replicas ran when, from their presence reports (``lambdaml.serve.presence``).

One row per replica: the model and version it ran, the Ray resources it held, when it
started and when it last reported. ``lambdaml cost`` prices these spans
(``lambdaml.cost.actual``). Spans older than the records' retention are removed.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from lambdaml.control.records import Records
from lambdaml.control.tables import replica_spans


class Usage:
    """The ``replica_spans`` table of a records database."""

    def __init__(self, records: Records) -> None:
        self._records = records

    def seen(self, replica: str, model: str, version: str, resources: dict[str, float], started_ts: float) -> None:
        """``replica`` is up now (the first report opens its span)."""
        now = time.time()
        with self._records.write() as connection:
            updated = connection.execute(
                sa.update(replica_spans).where(replica_spans.c.replica == replica).values(seen_ts=now)).rowcount
            if not updated:
                connection.execute(sa.insert(replica_spans).values(
                    replica=replica, model=model, version=version, resources=resources,
                    started_ts=min(started_ts, now), seen_ts=now))

    def spans(self, since_ts: float, model: str | None = None) -> list[dict[str, Any]]:
        """The spans that overlap ``since_ts``..now (of ``model`` only, if given)."""
        query = sa.select(replica_spans).where(replica_spans.c.seen_ts >= since_ts)
        if model is not None:
            query = query.where(replica_spans.c.model == model)
        with self._records.reader.connect() as connection:
            return [dict(row) for row in connection.execute(query.order_by(replica_spans.c.started_ts)).mappings()]

    def expire(self, retention_s: float) -> int:
        with self._records.write() as connection:
            old = sa.delete(replica_spans).where(replica_spans.c.seen_ts < time.time() - retention_s)
            return connection.execute(old).rowcount
