"""The prediction lifecycle on the real cluster: records, hold and 202, async, PUT, cancel, deadlines,
disconnects, replica loss, webhooks and retention, against SQLite and a real PostgreSQL server.

Every test reads the outcome from the records API (``/v1``), as a caller would.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from lambdaml import Input, model
from lambdaml.control import app as control

FINAL = ("succeeded", "failed", "canceled")


@model(name="lc-sync", cpu=0.1, min=1, max=1, concurrency=1)
def lc_sync(
    seconds: float = Input(default=0.0, description="Busy-loop this long, in Python"),
    log: str = Input(default="", description="A file to append 'start end' times to"),
    text: str = Input(default="hi", description="What to return"),
    sleep: float = Input(default=0.0, description="Then sleep this long in C (time.sleep)"),
) -> str:
    import time as clock

    started = clock.time()
    print(f"working on {text}")
    try:
        while clock.time() - started < seconds:
            pass
        clock.sleep(sleep)
    finally:
        if log:
            with open(log, "a") as file:
                file.write(f"{started} {clock.time()} {text}\n")
    return text


@model(name="lc-async", cpu=0.1, min=1, max=1, concurrency=1)
async def lc_async(seconds: float = Input(default=0.0, description="Sleep this long"), text: str = "hi") -> str:
    import asyncio as aio

    print(f"sleeping for {text}")
    try:
        await aio.sleep(seconds)
    except aio.CancelledError:
        print("predict got CancelledError")
        raise
    return text


@pytest.fixture(scope="module")
def receiver(cluster):
    """A webhook receiver on loopback, allowed as a webhook host for the models and the control app."""
    from tests.webhook_receiver import allowed_receiver

    with allowed_receiver() as hook:
        yield hook


@dataclass(frozen=True)
class Backend:
    name: str
    database: str | None  # None: the session's default (LAMBDAML_DATABASE_URL, a SQLite file)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request, receiver):
    """The control application on each database in turn (the session's SQLite file, then PostgreSQL)."""
    database = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    control.ensure_running(database, replace=True)  # also picks up the receiver's allowed host
    yield Backend(request.param, database)
    if database is not None:
        control.ensure_running(replace=True)


@pytest.fixture(scope="module")
def urls(receiver, cluster):
    sync_url = lc_sync.deploy().url
    async_url = lc_async.deploy().url
    yield {"sync": sync_url, "async": async_url, "base": cluster.http_url}
    lc_sync.delete()
    lc_async.delete()


def create(url: str, body: dict, timeout: float = 30, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/predictions", json=body, headers=headers, timeout=timeout)


def record(base: str, prediction_id: str) -> dict:
    response = httpx.get(f"{base}/v1/predictions/{prediction_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def until(base: str, prediction_id: str, statuses=FINAL, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{base}/v1/predictions/{prediction_id}", timeout=10)
        if response.status_code == 200 and response.json()["status"] in statuses:
            return response.json()
        time.sleep(0.05)
    raise AssertionError(f"{prediction_id} did not reach {statuses} in {timeout} s: {response.text}")


def cancel(base: str, prediction_id: str) -> dict:
    response = httpx.post(f"{base}/v1/predictions/{prediction_id}/cancel", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


# ------------------------------------------------------------------ records and holds


def test_a_sync_prediction_has_a_record_with_replicates_fields(backend, urls):
    body = create(urls["sync"], {"input": {"text": "recorded"}}).json()
    assert body["status"] == "succeeded" and body["model"] == "lc-sync" and body["version"]
    assert body["urls"] == {"get": f"{urls['base']}/v1/predictions/{body['id']}",
                            "cancel": f"{urls['base']}/v1/predictions/{body['id']}/cancel"}
    stored = until(urls["base"], body["id"])
    for field in ("id", "model", "version", "status", "input", "output", "logs", "error", "created_at", "started_at",
                  "completed_at", "urls", "deadline", "data_removed", "webhook", "webhook_events_filter"):
        expected = f"lambdaml/{body[field]}" if field == "model" else body[field]  # /v1 shows Replicate's owner/name
        assert stored[field] == expected, field
    assert stored["metrics"]["predict_time"] > 0 and stored["metrics"]["total_time"] >= stored["metrics"]["predict_time"]
    assert "working on recorded" in stored["logs"]


def test_a_prediction_longer_than_the_hold_gets_202_and_goes_on(backend, urls):
    started = time.monotonic()
    response = create(urls["sync"], {"input": {"seconds": 2.5, "text": "long"}}, Prefer="wait=1")
    assert response.status_code == 202 and 0.9 < time.monotonic() - started < 2.4
    body = response.json()
    assert body["status"] == "processing" and response.headers["location"] == body["urls"]["get"]
    assert record(urls["base"], body["id"])["status"] in ("starting", "processing")  # readable at once
    done = until(urls["base"], body["id"])
    assert done["status"] == "succeeded" and done["output"] == "long"


def test_respond_async_answers_at_once_and_the_record_is_readable(backend, urls):
    response = create(urls["async"], {"input": {"seconds": 1, "text": "later"}}, Prefer="respond-async")
    assert response.status_code == 202 and response.json()["status"] == "starting"
    assert record(urls["base"], response.json()["id"])["status"] in ("starting", "processing")
    assert until(urls["base"], response.json()["id"])["output"] == "later"


def test_prefer_and_cancel_after_are_checked(backend, urls):
    for headers, field in (({"Prefer": "wait=0"}, "Prefer"), ({"Prefer": "wait=soon"}, "Prefer"),
                           ({"Cancel-After": "tomorrow"}, "Cancel-After")):
        response = create(urls["sync"], {"input": {}}, **headers)
        assert response.status_code == 422 and response.json()["invalid_fields"][0]["field"] == field


def test_list_is_newest_first_with_absolute_cursor_links(backend, urls):
    ids = [create(urls["sync"], {"input": {"text": f"n{i}"}}).json()["id"] for i in range(3)]
    until(urls["base"], ids[-1])
    page = httpx.get(f"{urls['base']}/v1/predictions", params={"model": "lc-sync"}, timeout=10).json()
    listed = [p["id"] for p in page["results"]]
    assert listed.index(ids[2]) < listed.index(ids[1]) < listed.index(ids[0])
    assert all(p["model"] == "lambdaml/lc-sync" for p in page["results"])  # Replicate's owner/name
    assert page["next"] is None or page["next"].startswith(f"{urls['base']}/v1/predictions?")


def test_unknown_ids_are_json_404s(backend, urls):
    for response in (httpx.get(f"{urls['base']}/v1/predictions/nosuch", timeout=10),
                     httpx.post(f"{urls['base']}/v1/predictions/nosuch/cancel", timeout=10),
                     httpx.post(f"{urls['sync']}/predictions/nosuch/cancel", timeout=10)):
        assert response.status_code == 404 and "nosuch" in response.json()["detail"]


def test_put_is_an_idempotent_create(backend, urls, tmp_path):
    prediction_id = f"put-{backend.name}-{time.time_ns()}"
    runs = tmp_path / "runs.txt"
    body = {"input": {"text": "once", "log": str(runs)}}
    with httpx.Client(timeout=30) as client:  # back to back: before the first one's record is written
        first = client.put(f"{urls['sync']}/predictions/{prediction_id}", json=body)
        again = client.put(f"{urls['sync']}/predictions/{prediction_id}", json=body)
        other = client.put(f"{urls['sync']}/predictions/{prediction_id}", json={"input": {"text": "twice"}})
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"] == prediction_id and again.json()["output"] == "once"
    assert again.json()["created_at"] == first.json()["created_at"] and len(runs.read_text().splitlines()) == 1
    assert other.status_code == 409 and prediction_id in other.json()["detail"]
    until(urls["base"], prediction_id)
    later = httpx.put(f"{urls['sync']}/predictions/{prediction_id}", json=body, timeout=30)  # from the records now
    assert later.status_code == 200 and later.json()["created_at"] == first.json()["created_at"]
    assert len(runs.read_text().splitlines()) == 1
    bad = httpx.put(f"{urls['sync']}/predictions/..%2F..%2Fetc", json={"input": {}}, timeout=30)
    assert bad.status_code in (404, 422)
    bad = create(urls["sync"], {"input": {}, "id": "../../etc"})
    assert bad.status_code == 422 and bad.json()["invalid_fields"][0]["field"] == "id"


def test_another_models_prediction_cannot_be_reached_by_its_id(backend, urls):
    prediction_id = f"mine-{backend.name}-{time.time_ns()}"
    mine = httpx.put(f"{urls['sync']}/predictions/{prediction_id}", json={"input": {"text": "secret"}}, timeout=30)
    assert mine.status_code == 200
    until(urls["base"], prediction_id)
    theirs = httpx.put(f"{urls['async']}/predictions/{prediction_id}", json={"input": {"text": "secret"}}, timeout=30)
    assert theirs.status_code == 409 and "secret" not in theirs.text  # not answered from, nor overwriting, the record
    canceled = httpx.post(f"{urls['async']}/predictions/{prediction_id}/cancel", timeout=30)
    assert canceled.status_code == 404 and "secret" not in canceled.text
    assert record(urls["base"], prediction_id)["output"] == "secret"


# ------------------------------------------------------------------ cancel, deadlines, disconnects


def test_cancel_stops_a_busy_sync_predict_and_frees_its_slot(backend, urls, tmp_path):
    log = tmp_path / "times.txt"
    busy = create(urls["sync"], {"input": {"seconds": 30, "log": str(log), "text": "busy"}}, Prefer="respond-async")
    until(urls["base"], busy.json()["id"], ("processing",))
    asked = time.monotonic()
    assert cancel(urls["base"], busy.json()["id"])["id"] == busy.json()["id"]
    ended = until(urls["base"], busy.json()["id"])
    assert ended["status"] == "canceled" and "by the caller" in ended["error"]
    next_one = create(urls["sync"], {"input": {"text": "next"}}).json()
    assert next_one["status"] == "succeeded" and time.monotonic() - asked < 3
    start, end, _ = log.read_text().split()
    assert float(end) - float(start) < 5  # interrupted, not run to its 30 s


def test_cancel_of_an_async_predict_raises_cancelled_error_in_it(backend, urls):
    prediction = create(urls["async"], {"input": {"seconds": 30, "text": "cancel-me"}}, Prefer="respond-async").json()
    until(urls["base"], prediction["id"], ("processing",))
    cancel(urls["base"], prediction["id"])
    ended = until(urls["base"], prediction["id"], timeout=5)
    assert ended["status"] == "canceled" and "predict got CancelledError" in ended["logs"]


def test_a_queued_prediction_canceled_never_runs(backend, urls):
    running = create(urls["async"], {"input": {"seconds": 30, "text": "first"}}, Prefer="respond-async").json()
    queued = create(urls["async"], {"input": {"seconds": 0, "text": "queued"}}, Prefer="respond-async").json()
    until(urls["base"], running["id"], ("processing",))
    assert record(urls["base"], queued["id"])["status"] == "starting"
    cancel(urls["base"], queued["id"])
    ended = until(urls["base"], queued["id"])
    assert ended["status"] == "canceled" and ended["started_at"] is None and "sleeping" not in (ended["logs"] or "")
    cancel(urls["base"], running["id"])
    stopped = until(urls["base"], running["id"])
    assert cancel(urls["base"], running["id"]) == stopped  # a finished prediction is returned unchanged


def test_the_deadline_cancels_a_prediction(backend, urls):
    response = create(urls["sync"], {"input": {"seconds": 20}}, **{"Prefer": "respond-async", "Cancel-After": "1s"})
    assert response.json()["deadline"] is not None
    ended = until(urls["base"], response.json()["id"], timeout=10)
    assert ended["status"] == "canceled" and "deadline" in ended["error"]


def test_an_abandoned_caller_never_leaves_two_predictions_running_at_once(backend, urls, tmp_path):
    """concurrency=1 and a plain def predict: the caller that gives up cancels its prediction first."""
    log = tmp_path / "times.txt"
    with pytest.raises(httpx.ReadTimeout):
        create(urls["sync"], {"input": {"seconds": 4, "log": str(log), "text": "abandoned"}}, timeout=1)
    second = create(urls["sync"], {"input": {"seconds": 0.5, "log": str(log), "text": "second"}}).json()
    assert second["status"] == "succeeded"
    runs = sorted((float(a), float(b), name) for a, b, name in (line.split() for line in log.read_text().splitlines()))
    assert [name for *_, name in runs] == ["abandoned", "second"]
    assert runs[0][1] <= runs[1][0]  # the first had stopped before the second started
    abandoned = httpx.get(f"{urls['base']}/v1/predictions", params={"model": "lc-sync"}, timeout=10).json()["results"]
    gone = next(p for p in abandoned if p["input"]["text"] == "abandoned")
    assert gone["status"] == "canceled" and "caller went away" in gone["error"]


def test_a_timeout_frees_the_slot_only_when_predict_has_stopped(backend, deployed, tmp_path):
    @model(name="lc-timeout", cpu=0.1, min=1, max=1, concurrency=1, timeout=1)
    def lc_timeout(seconds: float = 0.0, log: str = "", text: str = "") -> str:
        return lc_sync(seconds=seconds, log=log, text=text)

    url = deployed(lc_timeout).url
    log = tmp_path / "times.txt"
    with httpx.Client(timeout=30) as client:
        first = client.post(f"{url}/predictions", json={"input": {"seconds": 3, "log": str(log), "text": "a"}}).json()
        second = client.post(f"{url}/predictions", json={"input": {"log": str(log), "text": "b"}}).json()
    assert first["status"] == "failed" and "timeout" in first["error"] and second["status"] == "succeeded"
    (a_start, a_end, _), (b_start, *_) = (line.split() for line in log.read_text().splitlines())
    assert float(a_end) - float(a_start) < 2.5 and float(a_end) <= float(b_start)


# ------------------------------------------------------------------ webhooks


def test_webhooks_arrive_in_order_signed(backend, urls, receiver):
    path = f"/order-{backend.name}"
    prediction = create(urls["sync"], {"input": {"seconds": 1.2, "text": "hooked"}, "webhook": receiver.url(path)},
                        Prefer="respond-async").json()
    until(urls["base"], prediction["id"])
    calls = receiver.wait_for(path, lambda calls: any(c.body["status"] in FINAL for c in calls))
    events = [c.body["status"] for c in calls]
    assert events[0] in ("starting", "processing") and events[-1] == "succeeded"
    assert [c for c in calls if c.body["status"] == "succeeded"] == [calls[-1]]  # completed once, last
    secret = httpx.get(f"{urls['base']}/v1/webhooks/default/secret", timeout=10).json()["key"]
    for call in calls:
        Webhook(secret).verify(call.raw, call.headers)  # raises if the signature is wrong
    assert len({c.headers["webhook-id"] for c in calls}) == len(calls)


def test_webhook_filter_and_completed_retried_after_failures(backend, urls, receiver):
    path = f"/flaky-{backend.name}"
    receiver.fail(path, [500, 503])
    prediction = create(urls["sync"], {"input": {"text": "retry"}, "webhook": receiver.url(path),
                                       "webhook_events_filter": ["completed"]}).json()
    calls = receiver.wait_for(path, lambda calls: len(calls) >= 3, timeout=20)
    assert [c.status for c in calls] == [500, 503, 200]
    assert {c.body["id"] for c in calls} == {prediction["id"]} and all(c.body["status"] == "succeeded" for c in calls)
    assert len({c.headers["webhook-id"] for c in calls}) == 1  # the same delivery, retried
    time.sleep(1.5)
    assert len(receiver.calls(path)) == 3


def test_a_webhook_to_an_internal_address_is_refused(backend, urls):
    response = create(urls["sync"], {"input": {}, "webhook": "http://169.254.169.254/latest"})
    assert response.status_code == 422 and response.json()["invalid_fields"][0]["field"] == "webhook"


# ------------------------------------------------------------------ replicas that go away


def test_a_killed_replica_leaves_a_failed_record_within_30_s(backend, deployed, tmp_path):
    @model(name="lc-doomed", cpu=0.1, min=1, max=1)
    def lc_doomed(pid_file: str = "") -> str:
        import os as system
        import time as clock

        with open(pid_file, "w") as file:
            file.write(str(system.getpid()))
        clock.sleep(120)
        return "never"

    url = deployed(lc_doomed).url
    pid_file = tmp_path / "pid"
    prediction = create(url, {"input": {"pid_file": str(pid_file)}}, Prefer="respond-async").json()
    base = url.rsplit("/", 1)[0]
    until(base, prediction["id"], ("processing",))
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    killed = time.monotonic()
    ended = until(base, prediction["id"], timeout=40)
    assert ended["status"] == "failed" and "replica" in ended["error"] and "lost" in ended["error"]
    assert time.monotonic() - killed < 30


def test_scale_down_waits_for_async_predictions(backend, deployed):
    @model(name="lc-scale", cpu=0.1, min=0, max=1, scaledown_after=1)
    async def lc_scale(seconds: float = 0.0) -> str:
        import asyncio as aio

        await aio.sleep(seconds)
        return "survived"

    url = deployed(lc_scale).url
    prediction = create(url, {"input": {"seconds": 8}}, Prefer="respond-async").json()
    base = url.rsplit("/", 1)[0]
    ended = until(base, prediction["id"], timeout=30)  # no request in flight for 8 s, scale-down after 1 s idle
    assert ended["status"] == "succeeded" and ended["output"] == "survived"


def test_a_rollout_lets_running_predictions_finish(backend, deployed):
    def version(tag: str):
        @model(name="lc-rollout", cpu=0.1, min=1, max=1, concurrency=2)
        async def lc_rollout(seconds: float = 0.0) -> str:
            import asyncio as aio

            await aio.sleep(seconds)
            return tag

        return lc_rollout

    url = deployed(version("old")).url
    base = url.rsplit("/", 1)[0]
    background = create(url, {"input": {"seconds": 6}}, Prefer="respond-async").json()
    held = {}
    caller = threading.Thread(target=lambda: held.update(create(url, {"input": {"seconds": 4}}, timeout=60).json()))
    caller.start()
    until(base, background["id"], ("processing",))
    deployed(version("new"))  # a new version rolls out while both run
    caller.join()
    assert held["status"] == "succeeded" and held["output"] == "old"
    ended = until(base, background["id"], timeout=30)
    assert ended["status"] == "succeeded" and ended["output"] == "old"
    assert create(url, {"input": {}}).json()["output"] == "new"


def test_a_stuck_predict_gets_its_replica_replaced(backend, deployed):
    """Sleeping in C, a predict cannot see the interruption: past the grace period its replica goes."""

    @model(name="lc-stuck", cpu=0.1, min=1, max=1, env={"LAMBDAML_CANCEL_GRACE": "1"})
    def lc_stuck(sleep: float = 0.0, text: str = "") -> str:
        import time as clock

        clock.sleep(sleep)
        return text

    url = deployed(lc_stuck).url
    base = url.rsplit("/", 1)[0]
    prediction = create(url, {"input": {"sleep": 60, "text": "stuck"}}, Prefer="respond-async").json()
    until(base, prediction["id"], ("processing",))
    asked = time.monotonic()
    cancel(base, prediction["id"])
    ended = until(base, prediction["id"], timeout=30)
    assert ended["status"] == "canceled" and "replica was replaced" in ended["error"]
    while (after := create(url, {"input": {"text": "replacement"}}, timeout=60)).status_code == 503:
        assert after.headers["retry-after"] == "1" and time.monotonic() - asked < 30  # the doomed replica refuses work
        time.sleep(0.2)
    assert after.json()["status"] == "succeeded"
    assert time.monotonic() - asked < 1 + 5 + 5  # grace, then Serve's replacement (health checks every second)


# ------------------------------------------------------------------ retention


def test_retention_removes_data_but_keeps_the_record(backend, urls, monkeypatch):
    monkeypatch.setenv("LAMBDAML_RETENTION", "1s")
    control.ensure_running(backend.database, replace=True)
    try:
        prediction = create(urls["sync"], {"input": {"text": "forget me"}}).json()
        until(urls["base"], prediction["id"])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not record(urls["base"], prediction["id"])["data_removed"]:
            time.sleep(0.2)
        kept = record(urls["base"], prediction["id"])
        assert kept["data_removed"] is True and kept["input"] is None and kept["output"] is None and kept["logs"] is None
        assert kept["status"] == "succeeded" and kept["metrics"]["predict_time"] > 0
    finally:
        monkeypatch.delenv("LAMBDAML_RETENTION")
        control.ensure_running(backend.database, replace=True)
