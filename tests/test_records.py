"""Records against a real SQLite file and a real PostgreSQL server (tests/postgres.py), every test on both."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from lambdaml.control.records import LOST, PUBLIC, Records, database_url, deliveries, schema_version
from lambdaml.errors import LambdamlError

@pytest.fixture
def records(database):
    opened = Records(database)
    yield opened
    opened.close()


def iso(seconds_ago: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() - seconds_ago, timezone.utc).isoformat()


def new(prediction_id: str, seconds_ago: float = 0.0, **fields) -> dict:
    """A replica's first update of a prediction: the whole record, status starting."""
    record = {
        "id": prediction_id, "model": "hello", "version": "v1", "status": "starting", "input": {"name": "ada"},
        "output": None, "logs": "", "error": None, "created_at": iso(seconds_ago), "started_at": None,
        "completed_at": None, "metrics": {}, "urls": {"get": f"http://x/v1/predictions/{prediction_id}"},
        "deadline": None, "data_removed": False, "webhook": None, "webhook_events_filter": None,
    }
    return {**record, **fields}


def done(prediction_id: str, **fields) -> dict:
    return {"id": prediction_id, "status": "succeeded", "output": "hi ada", "completed_at": iso(), **fields}


def own_engine(url: str) -> sa.Engine:
    """An engine of our own on the database, to see and change what the public methods do not."""
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def outbox(url: str) -> list[dict]:
    """Every delivery row, oldest first."""
    engine = own_engine(url)
    with engine.connect() as connection:
        rows = [dict(row) for row in connection.execute(sa.select(deliveries).order_by(deliveries.c.id)).mappings()]
    engine.dispose()
    return rows


def test_insert_then_partial_updates_merge(records):
    records.upsert([new("p1", _replica="r1", _input_hash="h1")])
    first = records.get("p1")
    assert list(first) == list(PUBLIC)  # exactly the record's fields, no private columns
    assert first["status"] == "starting" and first["input"] == {"name": "ada"} and first["data_removed"] is False

    records.upsert([{"id": "p1", "status": "processing", "started_at": iso(), "logs": "step 1\n"}])
    records.upsert([{"id": "p1", "logs": "step 1\nstep 2\n", "metrics": {"predict_time": 0.5}}])
    record = records.get("p1")
    assert record["status"] == "processing" and record["logs"] == "step 1\nstep 2\n"
    assert record["metrics"] == {"predict_time": 0.5} and record["input"] == {"name": "ada"}
    assert record["created_at"] == first["created_at"] and record["started_at"] is not None
    assert records.get("missing") is None
    assert records.find("p1")[2] == "h1" and records.find("missing") is None


def test_json_values_round_trip_in_order(records):
    output = {"zeta": 1, "alpha": [1.5, None, {"b": True, "a": "x"}]}
    records.upsert([new("p1"), done("p1", output=output)])
    assert json.dumps(records.get("p1")["output"]) == json.dumps(output)


def test_final_status_is_never_undone(records):
    records.upsert([new("p1")])
    records.upsert([done("p1")])
    records.upsert([{"id": "p1", "status": "processing", "output": "late", "logs": "late"}])
    record = records.get("p1")
    assert record["status"] == "succeeded" and record["output"] == "hi ada" and record["logs"] == ""

    records.upsert([new("p2", status="canceled", error="canceled by the user")])  # inserted final
    records.upsert([done("p2")])
    assert records.get("p2")["status"] == "canceled"


def test_late_updates_in_a_batch_change_nothing_and_fire_nothing(records, database):
    records.upsert([new(f"p{i}", webhook="https://example.com/hook") for i in range(5)])
    records.upsert([done("p1"), done("p3")])
    records.upsert([{"id": f"p{i}", "status": "processing", "_events": ["logs"]} for i in range(5)])
    assert [records.get(f"p{i}")["status"] for i in range(5)] == ["processing", "succeeded"] * 2 + ["processing"]
    assert [row["prediction_id"] for row in outbox(database)] == ["p0", "p2", "p4"]


def test_several_updates_of_one_id_in_one_call(records):
    records.upsert(
        [
            new("p1"),
            {"id": "p1", "status": "processing", "started_at": iso(), "logs": "a\n"},
            {"id": "p1", "logs": "a\nb\n"},
            done("p1"),
            {"id": "p1", "status": "processing", "output": "late"},  # after the final one: ignored
        ]
    )
    record = records.get("p1")
    assert record["status"] == "succeeded" and record["output"] == "hi ada"
    assert record["logs"] == "a\nb\n" and record["started_at"] is not None and record["model"] == "hello"


def test_events_write_outbox_rows_per_webhook_filter(records, database):
    hook = "https://example.com/hook"
    records.upsert([new("all", webhook=hook, _events=["start"]), new("quiet", _events=["start"])])
    records.upsert([new("filtered", webhook=hook, webhook_events_filter=["completed"], _events=["start"])])
    records.upsert(
        [
            {"id": "all", "status": "processing", "logs": "x", "_events": ["logs"]},
            {"id": "all", "output": "partial", "_events": ["output"]},
            done("filtered", _events=["completed"]),
            done("quiet", _events=["completed"]),
        ]
    )
    records.upsert([done("all", _events=["completed"])])
    records.upsert([{"id": "all", "status": "processing", "_events": ["logs"]}])  # ignored: no delivery either

    rows = outbox(database)
    assert [(row["prediction_id"], row["event"]) for row in rows] == [
        ("all", "start"),
        ("all", "logs"),
        ("all", "output"),
        ("filtered", "completed"),
        ("all", "completed"),
    ]
    assert {row["url"] for row in rows} == {hook}
    assert [row["max_attempts"] for row in rows] == [1, 1, 1, 12, 12]
    assert json.loads(rows[0]["body"])["status"] == "starting"
    assert json.loads(rows[2]["body"]) == {**json.loads(rows[1]["body"]), "output": "partial"}  # after the merge
    assert json.loads(rows[4]["body"]) == records.get("all")
    assert json.loads(rows[3]["body"]) == records.get("filtered")


def test_page_orders_newest_first_with_cursors_and_model_filter(records):
    updates = [new(f"p{i}", seconds_ago=100 - i, model="a" if i % 2 else "b") for i in range(7)]
    updates.append(new("tie-a", seconds_ago=200, created_at="2020-01-01T00:00:00+00:00"))
    updates.append(new("tie-b", seconds_ago=200, created_at="2020-01-01T00:00:00+00:00"))
    records.upsert(updates)

    first, next_cursor, previous_cursor = records.page(limit=4)
    assert [r["id"] for r in first] == ["p6", "p5", "p4", "p3"] and previous_cursor is None
    assert list(first[0]) == list(PUBLIC)
    second, next_cursor2, previous_cursor2 = records.page(cursor=next_cursor, limit=4)
    assert [r["id"] for r in second] == ["p2", "p1", "p0", "tie-b"]
    third, next_cursor3, previous_cursor3 = records.page(cursor=next_cursor2, limit=4)
    assert [r["id"] for r in third] == ["tie-a"] and next_cursor3 is None and previous_cursor3 is not None

    back, next_back, previous_back = records.page(cursor=previous_cursor3, limit=4)
    assert [r["id"] for r in back] == ["p2", "p1", "p0", "tie-b"] and previous_back is not None
    assert next_back is not None
    top, _, previous_top = records.page(cursor=previous_cursor2, limit=4)
    assert [r["id"] for r in top] == ["p6", "p5", "p4", "p3"] and previous_top is None

    only_a, next_a, _ = records.page(model="a", limit=2)
    assert [r["id"] for r in only_a] == ["p5", "p3"]
    rest_a, next_a2, _ = records.page(model="a", cursor=next_a, limit=2)
    assert [r["id"] for r in rest_a] == ["p1"] and next_a2 is None
    assert records.page(model="nobody") == ([], None, None)
    assert all(c.replace("-", "").replace("_", "").isalnum() for c in (next_cursor, previous_cursor2))
    with pytest.raises(ValueError, match="Invalid cursor"):
        records.page(cursor="not-a-cursor")


def test_request_cancel(records):
    records.upsert([new("running"), new("finished"), done("finished")])
    assert records.request_cancel("unknown", "x") is None
    assert records.request_cancel("running", "x", model="another") is None  # another model's route cannot reach it
    assert records.request_cancel("finished", "x") == records.get("finished")
    assert records.request_cancel("running", "first")["status"] == "starting"
    assert records.request_cancel("running", "second")["status"] == "starting"
    assert records.sync("r1", [], ["running", "finished"]) == {"running": "first"}


def test_sync_upserts_heartbeats_and_returns_cancels(records):
    assert records.sync("r1", [], []) == {}
    assert records.sync("r1", [new("old", seconds_ago=600), new("other", seconds_ago=600)], ["old"]) == {}
    assert records.reap(60) == ["other"]  # "old" got a heartbeat in the same sync
    records.request_cancel("old", "user asked")
    assert records.sync("r2", [{"id": "old", "status": "processing"}], ["old"]) == {"old": "user asked"}
    assert records.get("old")["status"] == "processing"


def test_sync_from_many_threads(records):
    def replica(name: str) -> None:
        for batch in range(10):
            ids = [f"{name}-{batch}-{i}" for i in range(20)]
            records.sync(name, [new(i) for i in ids], ids)
            records.sync(name, [done(i) for i in ids], [])

    threads = [threading.Thread(target=replica, args=(f"r{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results, cursor = [], None
    while True:
        page, cursor, _ = records.page(cursor=cursor, limit=300)
        results += page
        if cursor is None:
            break
    assert len(results) == 800 and {r["status"] for r in results} == {"succeeded"}


def test_reap_fails_stale_records(records, database):
    hook = "https://example.com/hook"
    records.upsert(
        [
            new("stale", seconds_ago=600, webhook=hook),
            new("stale-quiet", seconds_ago=600, status="processing"),
            new("fresh"),
            new("finished", seconds_ago=600),
            done("finished"),
        ]
    )
    records.sync("r1", [], ["fresh"])
    assert sorted(records.reap(60)) == ["stale", "stale-quiet"]
    stale = records.get("stale")
    assert stale["status"] == "failed" and stale["error"] == LOST and stale["completed_at"] is not None
    assert records.get("fresh")["status"] == "starting" and records.get("finished")["status"] == "succeeded"
    rows = outbox(database)
    assert [(row["prediction_id"], row["event"], row["max_attempts"]) for row in rows] == [("stale", "completed", 12)]
    assert json.loads(rows[0]["body"]) == stale
    assert records.reap(60) == []


def test_expire_removes_old_finished_data(records, database):
    hook = "https://example.com/hook"
    old = 7200
    records.upsert(
        [
            new("old", seconds_ago=old, webhook=hook, logs="secret"),
            done("old", _events=["completed"]),
            new("old-running", seconds_ago=old),
            new("recent"),
            done("recent"),
        ]
    )
    assert records.expire(3600) == 1
    expired = records.get("old")
    assert expired["data_removed"] is True and expired["status"] == "succeeded"
    assert expired["input"] is None and expired["output"] is None and expired["logs"] is None
    assert records.get("old-running")["input"] == {"name": "ada"}
    assert records.get("recent")["output"] == "hi ada" and records.get("recent")["data_removed"] is False
    assert records.expire(3600) == 0
    records.upsert([{"id": "old", "output": "late"}])
    assert records.get("old")["output"] is None

    records.upsert([new("later", webhook=hook, _events=["start"]), done("later", _events=["completed"])])
    pending, delivered, given_up = records.claim_webhooks()
    records.webhook_sent(delivered.id)
    records.webhook_failed(given_up.id, "410 Gone", retry_at=None)
    assert len(outbox(database)) == 3
    records.expire(-1)  # everything is older than that: done deliveries go, pending ones stay
    assert [row["id"] for row in outbox(database)] == [pending.id]


def test_setting_get_or_create(records, database):
    made = []

    def make() -> str:
        made.append(1)
        return f"whsec_{len(made)}"

    assert records.setting("webhook_secret", make) == "whsec_1"
    assert records.setting("webhook_secret", make) == "whsec_1"
    other = Records(database)
    assert other.setting("webhook_secret", make) == "whsec_1" and made == [1]
    assert other.setting("another", lambda: "x") == "x"
    other.close()


def test_claim_leases(records):
    hook = "https://example.com/hook"
    records.upsert([new("p1", webhook=hook, _events=["start"]), done("p1", _events=["completed"])])
    claimed = records.claim_webhooks(lease_s=600)
    assert [(d.prediction_id, d.event, d.attempt, d.url) for d in claimed] == [
        ("p1", "start", 1, hook),
        ("p1", "completed", 1, hook),
    ]
    assert claimed[0].webhook_id == f"p1-start-{claimed[0].id}" and claimed[0].id < claimed[1].id
    assert json.loads(claimed[1].body)["status"] == "succeeded"
    assert records.claim_webhooks() == []  # leased

    records.upsert([new("p2", webhook=hook, _events=["start"]), done("p2", _events=["completed"])])
    first = records.claim_webhooks(limit=1, lease_s=0)  # a lease that has already ended (its sender died)
    again = records.claim_webhooks(limit=1, lease_s=600)
    assert [(d.id, d.webhook_id, d.attempt) for d in again] == [(first[0].id, first[0].webhook_id, 2)]
    assert [d.event for d in records.claim_webhooks()] == ["completed"]  # p2's other row: never claimed yet


def test_two_records_never_claim_the_same_row(records, database):
    hook = "https://example.com/hook"
    records.upsert([new(f"p{i}", webhook=hook, _events=["start", "completed"]) for i in range(100)])
    other = Records(database)
    claims: dict[str, list[int]] = {"a": [], "b": []}

    def claimer(name: str, source: Records) -> None:
        while batch := source.claim_webhooks(limit=7, lease_s=600):
            claims[name] += [delivery.id for delivery in batch]

    threads = [
        threading.Thread(target=claimer, args=(name, source))
        for name, source in (("a", records), ("b", other), ("a", records), ("b", other))
    ]  # two threads per Records too: a Records is shared by the control app's worker threads
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()
    everything = claims["a"] + claims["b"]
    assert len(everything) == len(set(everything)) == 200


def test_webhook_sent_and_failed(records, database):
    hook = "https://example.com/hook"
    records.upsert([new("p1", webhook=hook, _events=["start"]), done("p1", _events=["completed"])])
    start, completed = records.claim_webhooks()
    records.webhook_failed(start.id, "503 Service Unavailable", retry_at=time.time())  # tried once: final
    for attempt in range(1, 12):
        records.webhook_failed(completed.id, f"try {attempt} failed", retry_at=time.time() - 1)
        (completed,) = records.claim_webhooks()
        assert completed.attempt == attempt + 1
    records.webhook_failed(completed.id, "try 12 failed", retry_at=time.time())
    assert records.claim_webhooks() == []
    rows = outbox(database)
    assert [(row["state"], row["attempts"], row["last_error"]) for row in rows] == [
        ("failed", 1, "503 Service Unavailable"),
        ("failed", 12, "try 12 failed"),
    ]

    records.upsert([new("p2", webhook=hook, _events=["start"]), done("p2", _events=["completed"])])
    start, completed = records.claim_webhooks()
    records.webhook_sent(start.id)
    records.webhook_failed(completed.id, "410 Gone", retry_at=None)  # not retryable
    records.upsert([new("p3", webhook=hook, _events=["completed"])])
    (later,) = records.claim_webhooks()
    records.webhook_failed(later.id, "timed out", retry_at=time.time() + 600)  # not due yet
    assert records.claim_webhooks() == []
    assert [row["state"] for row in outbox(database)][2:] == ["sent", "failed", "pending"]


def test_newer_schema_version_is_refused(records, database):
    engine = own_engine(database)
    with engine.begin() as connection:
        connection.execute(sa.update(schema_version).values(version=2))
    engine.dispose()
    with pytest.raises(LambdamlError, match="has schema version 2, but this lambdaml knows only versions up to 1"):
        Records(database)


def test_records_survive_a_new_records(records, database):
    records.upsert([new("p1"), done("p1")])
    records.close()
    reopened = Records(database)
    assert reopened.get("p1")["output"] == "hi ada"
    reopened.upsert([new("p2")])
    assert [r["id"] for r in reopened.page()[0]] == ["p2", "p1"]
    reopened.close()


def test_database_url(monkeypatch, tmp_path):
    monkeypatch.delenv("LAMBDAML_DATABASE_URL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert database_url() == f"sqlite:///{tmp_path}/.lambdaml/records.db" and (tmp_path / ".lambdaml").is_dir()
    monkeypatch.setenv("LAMBDAML_DATABASE_URL", "postgres://u:p@db:5432/lambdaml")
    assert database_url() == "postgresql+psycopg://u:p@db:5432/lambdaml"
    monkeypatch.setenv("LAMBDAML_DATABASE_URL", "postgresql://u@db/lambdaml")
    assert database_url() == "postgresql+psycopg://u@db/lambdaml"


def test_sqlite_file_is_in_wal_mode(tmp_path):
    Records(f"sqlite:///{tmp_path / 'records.db'}").close()
    with contextlib.closing(sqlite3.connect(tmp_path / "records.db")) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_postgresql_urls_use_psycopg(postgres_url):
    opened = Records(postgres_url)
    assert opened.url.startswith("postgresql+psycopg://") and opened.get("nothing") is None
    opened.close()
