"""Prediction records and the webhook outbox, in SQLite (the default) or PostgreSQL.

Only the control application touches the database: replicas keep the
predictions they run in memory and send their records here in batches
(``sync``), so the database sees one transaction per replica every ~100 ms
rather than one per state change of every prediction. A webhook delivery is
written in the same transaction as the record change that fires it (an
outbox), so a crash between the two can neither lose nor invent one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic_core import to_json
from sqlalchemy.dialects import postgresql, sqlite

from lambdaml import _clock
from lambdaml.errors import LambdamlError
from lambdaml.control.tables import SCHEMA_VERSION, deliveries, metadata, predictions, schema_version, settings

FINAL = ("succeeded", "failed", "canceled")
LOST = "The replica running this prediction was lost before it finished (it stopped reporting)."
COMPLETED_MAX_ATTEMPTS = 12  # the other events are tried once: a later event supersedes them
EXPIRE_CHUNK = 1000  # records per retention transaction: a backlog never holds the write lock for long


PUBLIC = ("id", "model", "version", "status", "input", "output", "logs", "error", "created_at", "started_at")
PUBLIC += ("completed_at", "metrics", "urls", "deadline", "data_removed", "webhook", "webhook_events_filter")
_PUBLIC = [predictions.c[name] for name in PUBLIC]
# Inline, not a bound list: an upsert runs as executemany, which cannot expand a list parameter.
_UNFINISHED = predictions.c.status.not_in([sa.literal_column(f"'{status}'") for status in FINAL])
_CLAIMED = [deliveries.c[name] for name in ("id", "prediction_id", "event", "url", "body", "attempts")]
_PRIVATE_KEYS = {"_replica": "replica", "_input_hash": "input_hash", "_token": "token_id"}
_MIGRATION_LOCK = 0x6C616D62  # pg_advisory_xact_lock key: control replicas starting together create tables once


@dataclass(frozen=True)
class Delivery:
    """One claimed webhook try. ``webhook_id`` stays the same across retries (receivers dedupe on it)."""

    id: int
    prediction_id: str
    event: str
    url: str
    body: str
    webhook_id: str
    attempt: int  # 1-based


def _driver_url(url: str) -> str:
    """PostgreSQL URLs as people write them, on the psycopg (v3) driver lambdaml installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def database_url() -> str:
    """``LAMBDAML_DATABASE_URL``, else a SQLite file in ``~/.lambdaml`` (created)."""
    url = os.environ.get("LAMBDAML_DATABASE_URL")
    if url:
        return _driver_url(url)
    folder = Path.home() / ".lambdaml"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'records.db'}"


def _sqlite_connect(connection: Any, _record: Any) -> None:
    connection.isolation_level = None  # _sqlite_begin begins transactions, not the driver (always DEFERRED)
    for pragma in ("journal_mode=WAL", "busy_timeout=5000", "foreign_keys=ON", "synchronous=NORMAL"):
        connection.execute(f"PRAGMA {pragma}")
    # SQLite has floor() only when built with its math functions; the stats group records by it (control.stats).
    connection.create_function("floor", 1, math.floor, deterministic=True)


def _sqlite_begin(connection: sa.Connection) -> None:
    # A writer takes the write lock up front, so a busy database makes it wait (busy_timeout) rather
    # than fail with "database is locked" when a deferred transaction would have to upgrade.
    read = connection.get_execution_options().get("lambdaml_read")
    connection.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


def _json_text(value: Any) -> str:
    """JSON columns' text: pydantic's encoder takes a third of json.dumps' time per record (bench/bench_records.py)."""
    return to_json(value).decode()


def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        # QueuePool: a connection per calling thread at a time (the control app calls from worker threads).
        engine = sa.create_engine(
            url, poolclass=sa.pool.QueuePool, connect_args={"check_same_thread": False}, json_serializer=_json_text
        )
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    # No pool_pre_ping: a round trip per transaction. After a server restart the first call fails, and
    # SQLAlchemy then replaces every pooled connection.
    return sa.create_engine(url, json_serializer=_json_text)


def _timestamp(iso: str) -> float:
    moment = datetime.fromisoformat(iso)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _cursor(direction: str, row: dict[str, Any]) -> str:
    raw = json.dumps([direction, row["created_ts"], row["id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[str, float, str]:
    """The cursor's direction and key; ValueError for anything ``_cursor`` did not make."""
    try:
        direction, created_ts, prediction_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error):
        raise ValueError(f"Invalid cursor {cursor!r}") from None
    if direction not in ("next", "previous") or not isinstance(created_ts, (int, float)):
        raise ValueError(f"Invalid cursor {cursor!r}")
    return direction, float(created_ts), str(prediction_id)


def _outbox_rows(record: dict[str, Any], events: list[str], now: float) -> list[dict[str, Any]]:
    """The deliveries ``events`` fire for ``record``: none without a webhook, only the filter's events."""
    wanted = record["webhook_events_filter"]
    if not record["webhook"]:
        return []
    row = {"prediction_id": record["id"], "url": record["webhook"], "body": json.dumps(record), "state": "pending"}
    row.update(attempts=0, next_attempt_ts=now, lease_until=0.0, created_ts=now)
    return [
        {**row, "event": event, "max_attempts": COMPLETED_MAX_ATTEMPTS if event == "completed" else 1}
        for event in dict.fromkeys(events)  # coalesced updates may repeat an event: one delivery, latest body
        if wanted is None or event in wanted
    ]


def _coalesce(updates: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One update per id, the later fields winning, and nothing after an update to a final status."""
    merged: dict[str, dict[str, Any]] = {}
    for update in updates:
        current = merged.get(update["id"])
        if current is None:
            merged[update["id"]] = {**update, "_events": list(update.get("_events", ()))}
        elif current.get("status") not in FINAL:
            events = current["_events"] + list(update.get("_events", ()))
            current.update(update)
            current["_events"] = events
    return merged


_JSON_COLUMNS = frozenset(column.name for column in predictions.columns if isinstance(column.type, sa.JSON))


@functools.lru_cache(maxsize=64)
def _upsert_sql(
    dialect: sa.Dialect, names: tuple[str, ...], inserted: tuple[str, ...]
) -> tuple[str, list[str] | None]:
    """Insert ``inserted``, or set ``names`` unless the record is final: the statement's SQL for ``dialect``
    and, for a positional driver (SQLite's), the order of its parameters. Cached: compiling costs ~1 ms."""
    statement = (sqlite.insert if dialect.name == "sqlite" else postgresql.insert)(predictions)
    changes = {name: statement.excluded[name] for name in (*names, "updated_ts") if name != "id"}
    statement = statement.on_conflict_do_update(index_elements=["id"], set_=changes, where=_UNFINISHED)
    compiled = statement.compile(dialect=dialect, column_keys=list(inserted))
    return compiled.string, compiled.positiontup


def _upsert_many(connection: sa.Connection, names: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """``rows`` (updates of the columns ``names``, plus what an insert needs) upserted in one
    executemany, straight to the driver.

    Hand-written: through ``connection.execute``, SQLAlchemy processed every row's parameters one
    by one, and a final record cost 23-24 us to write on SQLite, against 17.5 us this way (in
    process, batches of 100, best of 8; bench/README.md). Only that differs: the SQL is
    SQLAlchemy's own, compiled once per shape, and the JSON columns are encoded as its engine does.
    """
    sql, order = _upsert_sql(connection.dialect, names, tuple(sorted(rows[0])))
    encoded = [name for name in names if name in _JSON_COLUMNS]
    for row in rows:
        for name in encoded:
            if row[name] is not None:
                row[name] = _json_text(row[name])
    parameters = rows if order is None else [tuple(row[name] for name in order) for row in rows]
    connection.exec_driver_sql(sql, parameters)


class Records:
    """The records database. Thread-safe; several Records (control replicas) may share one database."""

    def __init__(self, url: str | None = None) -> None:
        self.url = _driver_url(url or database_url())
        self._engine = _engine(self.url)
        self.reader = self._engine.execution_options(lambdaml_read=True)
        sqlite_file = self._engine.dialect.name == "sqlite"
        self._insert = sqlite.insert if sqlite_file else postgresql.insert
        # SQLite has one writer at a time, and its busy handler polls: threads left to race for the lock
        # starve one another past busy_timeout. Queued on a lock here, they wait their turn instead.
        self._writing = threading.Lock() if sqlite_file else contextlib.nullcontext()
        try:
            self._migrate()
        except BaseException:
            self._engine.dispose()
            raise

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction (committed at the end)."""
        with self._writing, self._engine.begin() as connection:
            yield connection

    def _migrate(self) -> None:
        """Create the tables if absent; refuse a database made by a newer lambdaml."""
        with self.write() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            found = None
            if sa.inspect(connection).has_table("schema_version"):
                found = connection.scalar(sa.select(sa.func.max(schema_version.c.version)))
            if found is not None and found > SCHEMA_VERSION:
                where = sa.make_url(self.url).render_as_string(hide_password=True)
                raise LambdamlError(
                    f"The records database {where} has schema version {found}, but this lambdaml knows only "
                    f"versions up to {SCHEMA_VERSION}: upgrade lambdaml on the control application's nodes."
                )
            metadata.create_all(connection)
            if found is None:
                connection.execute(sa.insert(schema_version).values(version=SCHEMA_VERSION))

    def upsert(self, updates: list[dict[str, Any]]) -> None:
        """Insert or merge records (partial updates allowed), with the deliveries they fire, in one transaction."""
        if updates:
            with self.write() as connection:
                self._upsert(connection, updates)

    def _upsert(self, connection: sa.Connection, updates: list[dict[str, Any]]) -> None:
        now, now_iso, columns = time.time(), _clock.now(), predictions.c
        merged = _coalesce(updates)
        events = {prediction_id: update["_events"] for prediction_id, update in merged.items() if update["_events"]}
        if events:  # locked until commit: an update the guard lets through now is one that changes its record
            query = sa.select(columns.id, columns.status).where(columns.id.in_(events)).order_by(columns.id)
            for prediction_id, status in connection.execute(query.with_for_update()):
                if status in FINAL:
                    del events[prediction_id]
        # One statement per shape of update (the columns it sets), executed many. Not RETURNING: SQLAlchemy
        # then inlines the rows into one long statement, which psycopg parses at ~2 ms a batch.
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        defaults = {"status": "starting", "created_at": now_iso, "created_ts": now, "data_removed": False}
        for _, row in sorted(merged.items()):  # one lock order for every caller; rows are _coalesce's copies
            del row["_events"]
            for key, column in _PRIVATE_KEYS.items():
                if key in row:
                    row[column] = row.pop(key)
            if "created_at" in row:
                row["created_ts"] = _timestamp(row["created_at"])
            groups.setdefault(tuple(sorted(row)), []).append(row)
            for key, value in defaults.items():  # for an insert; the update sets only the row's own columns
                row.setdefault(key, value)
            row["updated_ts"] = now
        for names, rows in groups.items():
            _upsert_many(connection, names, rows)
        if events:
            changed = connection.execute(sa.select(*_PUBLIC).where(columns.id.in_(events))).mappings()
            outbox = [row for record in changed for row in _outbox_rows(dict(record), events[record["id"]], now)]
            if outbox:
                connection.execute(sa.insert(deliveries), outbox)

    def get(self, prediction_id: str) -> dict[str, Any] | None:
        """The public record, or None."""
        found = self.find(prediction_id)
        return None if found is None else found[0]

    def find(self, prediction_id: str) -> tuple[dict[str, Any], str | None, str | None] | None:
        """The public record with the id of the token that created it and the hash of its input, or None."""
        columns = predictions.c
        query = sa.select(*_PUBLIC, columns.token_id, columns.input_hash).where(columns.id == prediction_id)
        with self.reader.connect() as connection:
            row = connection.execute(query).mappings().first()
        if row is None:
            return None
        return {name: row[name] for name in PUBLIC}, row["token_id"], row["input_hash"]

    def page(
        self, model: str | None = None, cursor: str | None = None, limit: int = 100, token: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None, str | None]:
        """Records newest first, with the cursors of the next (older) and previous (newer) pages.

        Keyset pagination on (created_ts, id): a page costs the same however deep, and records
        created meanwhile neither shift nor repeat later pages. ValueError for a bad cursor.
        ``token``: only the predictions created with that token (its id).
        """
        columns = predictions.c
        query = sa.select(*_PUBLIC, columns.created_ts)
        if model is not None:
            query = query.where(columns.model == model)
        if token is not None:  # the predictions one token created
            query = query.where(columns.token_id == token)
        direction = "next"
        if cursor:
            direction, created_ts, prediction_id = _parse_cursor(cursor)
            key, bound = sa.tuple_(columns.created_ts, columns.id), sa.tuple_(created_ts, prediction_id)
            query = query.where(key > bound if direction == "previous" else key < bound)
        backward = direction == "previous"
        order = (columns.created_ts, columns.id) if backward else (columns.created_ts.desc(), columns.id.desc())
        with self.reader.connect() as connection:
            rows = [dict(row) for row in connection.execute(query.order_by(*order).limit(limit + 1)).mappings()]
        more, rows = len(rows) > limit, rows[:limit]
        if backward:
            rows.reverse()
        if not rows:
            return [], None, None
        older = more or backward  # a page reached backward was reached from an older one
        newer = more if backward else cursor is not None
        next_cursor = _cursor("next", rows[-1]) if older else None
        previous_cursor = _cursor("previous", rows[0]) if newer else None
        return [{name: row[name] for name in PUBLIC} for row in rows], next_cursor, previous_cursor

    def request_cancel(self, prediction_id: str, reason: str, model: str | None = None) -> dict[str, Any] | None:
        """Ask to cancel (the replica learns it at its next ``sync``); the first reason wins.

        None for an unknown id, or one of another model than ``model`` (a model's own
        cancel route reaches only its predictions); a finished record comes back unchanged.
        """
        columns = predictions.c
        this = columns.id == prediction_id if model is None else sa.and_(columns.id == prediction_id, columns.model == model)
        ask = sa.update(predictions).where(this, _UNFINISHED, columns.cancel_reason.is_(None))
        with self.write() as connection:
            connection.execute(ask.values(cancel_reason=reason, updated_ts=time.time()))
            row = connection.execute(sa.select(*_PUBLIC).where(this)).mappings().first()
        return dict(row) if row else None

    def sync(self, replica: str, updates: list[dict[str, Any]], running: list[str]) -> dict[str, str]:
        """A replica's batch: its updates, and a heartbeat for what it runs; returns the cancels asked for those."""
        if not updates and not running:
            return {}
        with self.write() as connection:
            if updates:
                self._upsert(connection, updates)
            if not running:
                return {}
            heartbeat = sa.update(predictions).where(predictions.c.id.in_(running))
            heartbeat = heartbeat.values(heartbeat_ts=time.time(), replica=replica)
            rows = connection.execute(heartbeat.returning(predictions.c.id, predictions.c.cancel_reason)).all()
        return {prediction_id: reason for prediction_id, reason in rows if reason is not None}

    def reap(self, stale_after_s: float) -> list[str]:
        """Fail the unfinished records no replica has reported for ``stale_after_s``: their replica is gone."""
        now, columns = time.time(), predictions.c
        last_seen = sa.func.coalesce(columns.heartbeat_ts, columns.created_ts)
        stale = (columns.status.in_(("starting", "processing")), last_seen < now - stale_after_s)
        fail = sa.update(predictions).where(*stale)
        fail = fail.values(status="failed", error=LOST, completed_at=_clock.now(), updated_ts=now)
        with self.write() as connection:
            records = [dict(record) for record in connection.execute(fail.returning(*_PUBLIC)).mappings()]
            outbox = [row for record in records for row in _outbox_rows(record, ["completed"], now)]
            if outbox:
                connection.execute(sa.insert(deliveries), outbox)
        return [record["id"] for record in records]

    def expire(self, retention_s: float) -> int:
        """Remove input, output and logs of the finished records created over ``retention_s`` ago; count them.

        Also deletes the finished deliveries that old: their bodies hold the same data.
        """
        now, columns = time.time(), predictions.c
        cutoff = now - retention_s
        due = sa.select(columns.id).where(columns.status.in_(FINAL), columns.created_ts < cutoff)
        due = due.where(columns.data_removed == sa.false()).limit(EXPIRE_CHUNK)
        removal = sa.update(predictions).where(columns.id.in_(due.scalar_subquery()))
        removal = removal.values(input=None, output=None, logs=None, data_removed=True, updated_ts=now)
        removed, count = 0, EXPIRE_CHUNK
        while count == EXPIRE_CHUNK:
            with self.write() as connection:
                count = connection.execute(removal).rowcount
            removed += count
        done = sa.delete(deliveries).where(deliveries.c.state != "pending", deliveries.c.created_ts < cutoff)
        with self.write() as connection:
            connection.execute(done)
        return removed

    def setting(self, key: str, make: Callable[[], str]) -> str:
        """The stored value of ``key``, else ``make()`` stored; concurrent callers all get the one stored."""
        query = sa.select(settings.c.value).where(settings.c.key == key)
        with self.reader.connect() as connection:
            value = connection.scalar(query)
        if value is not None:
            return value
        insert = self._insert(settings).values(key=key, value=make()).on_conflict_do_nothing(index_elements=["key"])
        with self.write() as connection:
            connection.execute(insert)
            return connection.scalar(query)

    def claim_webhooks(self, limit: int = 50, lease_s: float = 30.0) -> list[Delivery]:
        """Claim due deliveries, oldest first, for ``lease_s``: until then no other caller gets them.

        A try whose sender died is tried again once its lease ends (it counts as a try).
        """
        now, columns = time.time(), deliveries.c
        due = sa.select(columns.id).where(columns.state == "pending", columns.next_attempt_ts <= now)
        due = due.where(columns.lease_until <= now).order_by(columns.id).limit(limit)
        if self._engine.dialect.name == "postgresql":  # SQLite's writers are serialized already
            due = due.with_for_update(skip_locked=True)
        claim = sa.update(deliveries).where(columns.id.in_(due.scalar_subquery()))
        claim = claim.values(lease_until=now + lease_s, attempts=columns.attempts + 1)
        with self.write() as connection:
            claimed = connection.execute(claim.returning(*_CLAIMED)).all()
        return [
            Delivery(id, prediction_id, event, url, body, f"{prediction_id}-{event}-{id}", attempt)
            for id, prediction_id, event, url, body, attempt in sorted(claimed)
        ]

    def webhook_sent(self, delivery_id: int) -> None:
        """The receiver accepted the delivery."""
        update = sa.update(deliveries).where(deliveries.c.id == delivery_id)
        with self.write() as connection:
            connection.execute(update.values(state="sent", lease_until=0.0, last_error=None))

    def webhook_failed(self, delivery_id: int, error: str, retry_at: float | None) -> None:
        """A try failed: pending again from ``retry_at``, or failed for good (no retry, or no tries left)."""
        columns = deliveries.c
        values: dict[str, Any] = {"state": "failed", "last_error": error, "lease_until": 0.0}
        if retry_at is not None:
            values["state"] = sa.case((columns.attempts >= columns.max_attempts, "failed"), else_="pending")
            values["next_attempt_ts"] = retry_at
        with self.write() as connection:
            connection.execute(sa.update(deliveries).where(columns.id == delivery_id).values(**values))

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()
