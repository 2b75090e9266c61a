"""lambdaml.predictions, run, Model.spawn/map and the prediction commands, against the real cluster.

The client and the CLI talk to the session's cluster (``cluster``): the two
models below run in real replicas and their records are read back from the
control application at /v1. What the client sends is checked by its effect
there: an async create answers at once, a PUT with an id runs the model once,
a cancel ends as canceled, a page is fetched only when the iteration gets to
it. The tests at the top need no server (arguments, headers, validation).
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

import pytest
from typer.testing import CliRunner

import lambdaml
from lambdaml import ClusterError, InputError, ModelError, NotDeployedError, PredictionNotFoundError
from lambdaml import WaitTimeoutError, _cli_predictions, model, predictions
from lambdaml._settings import http_base_url
from lambdaml.cli import app
from lambdaml.schema import Prediction

runner = CliRunner()
T = TypeVar("T")

DOUBLER, OTHER = "pc-doubler", "pc-other"
HOOK = "https://hooks.example.test/lambdaml"  # allow-listed by name in the replicas: accepted, never reached


@model(name=DOUBLER, cpu=0.1, min=1, max=1, concurrency=2,
       env={"LAMBDAML_SYNC_WAIT": "1", "LAMBDAML_ALLOWED_HOSTS": "hooks.example.test"})
def doubler(n: int, seconds: float = 0.0, runs: str = "") -> int:
    """``seconds`` of work in 0.1 s steps, printing each; n * 2, or raise for a negative n.

    ``runs``: a file to append ``n`` to, so a test can count the runs (replicas run on this machine).
    """
    import time as clock

    if runs:
        with open(runs, "a") as file:
            file.write(f"{n}\n")
    for step in range(round(seconds * 10)):  # short sleeps: a cancel lands between two of them
        print(f"step {step}")
        clock.sleep(0.1)
    if n < 0:
        raise ValueError("n is negative")
    return n * 2


@model(name=OTHER, cpu=0.1, min=1, max=1, concurrency=8)
def other(n: int = 0, seconds: float = 0.0) -> int:
    """A second model, for listing by model: ``n`` after ``seconds`` in 0.1 s steps."""
    import time as clock

    for _ in range(round(seconds * 10)):
        clock.sleep(0.1)
    return n


@pytest.fixture(scope="module")
def models(cluster):
    """Both models, deployed once for the module (the replicas hold 1 s without ``Prefer``)."""
    doubler.deploy()
    other.deploy()
    yield cluster
    doubler.delete()
    other.delete()


def newest(name: str | None, count: int) -> list[Prediction]:
    return list(itertools.islice(predictions.list(name), count))


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def until(read: Callable[[], T], check: Callable[[T], bool], timeout: float = 10.0) -> T:
    """``read()`` again until ``check`` holds for it: a sync answer comes just before its record is written."""
    deadline = time.monotonic() + timeout
    while not check(value := read()):
        assert time.monotonic() < deadline, f"still {value!r} after {timeout:g} s"
        time.sleep(0.05)
    return value


def stored(prediction_id: str) -> Prediction:
    """The prediction once its record says it ended."""

    def read() -> Prediction | None:
        try:
            return predictions.get(prediction_id)
        except PredictionNotFoundError:
            return None

    return until(read, lambda prediction: prediction is not None and prediction.status in predictions.FINAL)


# ------------------------------------------------------------------ arguments, no server


def test_wait_argument_becomes_the_prefer_header():
    assert predictions.prefer_header(True) == {}
    assert predictions.prefer_header(False) == {"Prefer": "respond-async"}
    assert predictions.prefer_header(7) == {"Prefer": "wait=7"}
    assert predictions.prefer_header(0.2) == {"Prefer": "wait=1"}
    assert predictions.prefer_header(600) == {"Prefer": "wait=600"}
    for bad in (0, -1, 601, "5", None):
        with pytest.raises(ValueError, match="1 to 600"):
            predictions.prefer_header(bad)


def test_cancel_after_accepts_seconds_and_durations():
    assert predictions.cancel_after_header(None) == {}
    assert predictions.cancel_after_header(90) == {"Cancel-After": "90s"}
    assert predictions.cancel_after_header(0.25) == {"Cancel-After": "250ms"}
    assert predictions.cancel_after_header("5m") == {"Cancel-After": "5m"}
    with pytest.raises(ValueError, match="not a duration"):
        predictions.cancel_after_header("soon")
    with pytest.raises(ValueError, match="positive"):
        predictions.cancel_after_header(0)


def test_ids_and_webhook_events_are_checked_before_sending():
    assert predictions.check_id("job-42_a") == "job-42_a"
    for bad in ("", "a" * 129, "../x", "a b", "é"):
        with pytest.raises(ValueError, match="1-128 characters"):
            predictions.check_id(bad)
    body = predictions.request_body({"n": 1}, "https://example.com/hook", ("start", "completed"))
    assert body == {"input": {"n": 1}, "webhook": "https://example.com/hook", "webhook_events_filter": ["start", "completed"]}
    assert predictions.request_body(None) == {"input": {}}
    with pytest.raises(ValueError, match="unknown webhook event 'done'"):
        predictions.request_body({}, "https://example.com/hook", ["done"])


def test_polling_starts_at_100_ms_and_grows_to_one_second():
    intervals = list(itertools.islice(predictions.poll_intervals(), 10))
    assert intervals[0] == 0.1 and intervals == sorted(intervals) and intervals[-1] == 1.0
    assert intervals.index(1.0) == 6


def test_prediction_validates_old_answers_and_stored_records():
    old = {"id": "a", "status": "succeeded", "input": {"x": 1}, "output": 2, "error": None, "logs": "",
           "metrics": {"predict_time": 0.1}, "created_at": None, "started_at": None, "completed_at": None}
    prediction = Prediction.model_validate(old)
    assert (prediction.model, prediction.urls, prediction.data_removed, prediction.webhook) == (None, {}, False, None)
    removed = {**old, "input": None, "output": None, "logs": None, "data_removed": True, "model": "m", "version": "v",
               "metrics": {"predict_time": 0.1, "total_time": 0.3}, "deadline": "2026-12-01T22:24:48.123456Z",
               "urls": {"get": "http://h/v1/predictions/a", "cancel": "http://h/v1/predictions/a/cancel"},
               "webhook": "https://example.com/hook", "webhook_events_filter": ["completed"]}
    prediction = Prediction.model_validate(removed)
    assert prediction.input is None and prediction.logs is None and prediction.metrics["total_time"] == 0.3
    assert Prediction(id="", status="failed", error="boom").error == "boom"
    assert list(Prediction.model_fields)[:10] == list(old)  # the old fields keep their order
    schema = Prediction.model_json_schema()
    assert {"model", "version", "urls", "deadline", "data_removed", "webhook", "webhook_events_filter"} <= set(
        schema["properties"])


# ------------------------------------------------------------------ the Python API


def test_create_without_waiting_answers_at_once_then_waits(models):
    started = time.monotonic()
    prediction = predictions.create(DOUBLER, {"n": 4, "seconds": 1.5}, wait=False)
    assert time.monotonic() - started < 0.9  # respond-async: not held (a hold is 1 s, the prediction 1.5 s)
    assert prediction.status == "starting" and prediction.model == DOUBLER
    assert prediction.urls["get"] == f"{http_base_url()}/v1/predictions/{prediction.id}"
    assert predictions.get(prediction.id).status in ("starting", "processing")  # readable at once
    assert prediction.wait(timeout=30) is prediction
    assert (prediction.status, prediction.output) == ("succeeded", 8)
    assert prediction.logs == "".join(f"step {i}\n" for i in range(15)) and prediction.metrics["predict_time"] >= 1.5
    assert predictions.get(prediction.id).output == 8 and prediction.reload().status == "succeeded"


def test_create_with_wait_true_follows_a_202_until_the_end(models):
    started = time.monotonic()
    prediction = predictions.create(DOUBLER, {"n": 5, "seconds": 1.5})  # longer than the replica's 1 s hold
    assert (prediction.status, prediction.output) == ("succeeded", 10) and time.monotonic() - started >= 1.5
    assert lambdaml.run(DOUBLER, {"n": 6, "seconds": 1.2}) == 12  # past the hold too
    assert lambdaml.create_prediction(DOUBLER, {"n": 1})["output"] == 2


def test_create_with_wait_seconds_returns_whatever_status_then(models):
    started = time.monotonic()
    prediction = predictions.create(DOUBLER, {"n": 1, "seconds": 3}, wait=2, cancel_after="90s")
    assert time.monotonic() - started >= 1.9  # Prefer: wait=2 held it longer than the replica's own 1 s
    assert prediction.status == "processing"
    assert 89 < (at(prediction.deadline) - at(prediction.created_at)).total_seconds() < 91  # Cancel-After: 90s
    with pytest.raises(WaitTimeoutError, match=f"{prediction.id} is still processing after 0.3 s") as error:
        prediction.wait(timeout=0.3)
    assert error.value.prediction is prediction and prediction.reload().status == "processing"  # it goes on
    prediction.cancel()
    assert prediction.wait(timeout=10).status == "canceled" and prediction.error == "Canceled by the caller."


def test_an_id_makes_the_create_an_idempotent_put(models, tmp_path):
    runs = tmp_path / "runs"
    job, input = f"job-{secrets.token_hex(4)}", {"n": 2, "seconds": 0.5, "runs": str(runs)}
    first = predictions.create(DOUBLER, input, wait=False, id=job, webhook=HOOK, webhook_events_filter=["completed"])
    running = predictions.create(DOUBLER, input, wait=False, id=job)  # the replica has it: given back
    assert first.id == running.id == job and running.created_at == first.created_at
    assert first.wait(timeout=10).output == 4
    again = predictions.create(DOUBLER, input, id=job)  # finished: given back from the records
    assert (again.id, again.status, again.output, again.created_at) == (job, "succeeded", 4, first.created_at)
    assert (again.webhook, again.webhook_events_filter) == (HOOK, ["completed"])  # as the first PUT sent them
    with pytest.raises(InputError, match=f"'{job}' exists with a different input"):
        predictions.create(DOUBLER, {**input, "n": 3}, id=job)
    assert runs.read_text() == "2\n"  # one run for the three PUTs with that input, none for the other
    assert predictions.get(job).output == 4


def test_run_raises_for_failed_canceled_invalid_and_unknown(models):
    with pytest.raises(ModelError, match="n is negative") as error:
        lambdaml.run(DOUBLER, {"n": -1})
    assert error.value.prediction.status == "failed" and error.value.prediction.id
    with pytest.raises(InputError) as error:
        lambdaml.run(DOUBLER, {"n": "x"})
    assert error.value.invalid_fields[0]["field"] == "n"
    with pytest.raises(NotDeployedError, match="No model named 'pc-ghost'"):
        lambdaml.run("pc-ghost", {})
    with pytest.raises(WaitTimeoutError, match="did not finish within 0.5 s, so it was canceled") as error:
        lambdaml.run(DOUBLER, {"n": 1, "seconds": 5}, timeout=0.5)
    assert error.value.prediction.wait(timeout=10).status == "canceled"


def test_get_list_cancel_and_the_webhook_secret(models):
    made = [predictions.create(DOUBLER if i % 2 else OTHER, {"n": 10 + i}, wait=False) for i in range(5)]
    with pytest.raises(PredictionNotFoundError, match="No prediction with id 'nope'"):
        predictions.get("nope")
    assert [p.id for p in newest(None, 5)] == [p.id for p in reversed(made)]  # newest first, every model
    assert [p.id for p in newest(DOUBLER, 2)] == [made[3].id, made[1].id]
    assert [p.id for p in newest(OTHER, 3)] == [made[4].id, made[2].id, made[0].id]
    assert made[0].wait(timeout=10).status == "succeeded" and predictions.cancel(made[0].id).status == "succeeded"
    slow = predictions.create(DOUBLER, {"n": 1, "seconds": 5}, wait=False)
    assert predictions.cancel(slow.id).id == slow.id
    assert slow.wait(timeout=10).status == "canceled" and predictions.get(slow.id).status == "canceled"
    assert predictions.webhook_secret().startswith("whsec_")


def test_list_follows_the_pages_lazily(models):
    # A page is 100 records (lambdaml.control.records): this needs more than 100 of one model. Async
    # creates, since their records can be read as soon as they are answered.
    slow = predictions.create(OTHER, {"n": 99, "seconds": 30}, wait=False)  # will be on the second page
    with ThreadPoolExecutor(8) as pool:
        batch = list(pool.map(lambda n: predictions.create(OTHER, {"n": n}, wait=False), range(100)))
    listed = predictions.list(OTHER)
    latest = predictions.create(OTHER, {"n": 1000}, wait=False)  # after list() was called: it asked for nothing yet
    first = next(listed)
    assert first.id == latest.id
    slow.cancel()  # now that the first page is in: the second, asked for later, shows it canceled
    assert slow.wait(timeout=10).status == "canceled"
    records = [first, *listed]
    ids = [p.id for p in records]
    assert len(set(ids)) == len(ids) and {p.id for p in batch} <= set(ids) and all(p.model == OTHER for p in records)
    assert ids.index(slow.id) > 100 and records[ids.index(slow.id)].status == "canceled"
    assert [at(p.created_at) for p in records] == sorted((at(p.created_at) for p in records), reverse=True)


def test_network_failures_are_one_clear_line(monkeypatch):
    monkeypatch.setenv("LAMBDAML_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    for call in (lambda: lambdaml.run(DOUBLER, {"n": 1}), lambda: predictions.get("a"),
                 lambda: list(predictions.list())):
        with pytest.raises(ClusterError, match=r"Nothing answers at http://127.0.0.1:9 .*`lambdaml up`") as error:
            call()
        assert error.value.__cause__ is None and error.value.__suppress_context__ and "\n" not in str(error.value)


def test_a_url_with_a_path_says_so(cluster, monkeypatch):
    # Under a prefix no model takes, the control application answers its "no such route" 404, which
    # the client tells from a missing record's.
    monkeypatch.setenv("LAMBDAML_URL", f"{cluster.http_url}/pc-no-such-app")
    with pytest.raises(ClusterError, match="LAMBDAML_URL must be the cluster's HTTP address alone"):
        predictions.get("abc")
    with pytest.raises(NotDeployedError, match="No model named 'pc-no-such-app' is deployed"):
        lambdaml.run("pc-no-such-app", input={})


def test_spawn_and_map(models):
    prediction = doubler.spawn(n=3)
    assert prediction.status == "starting" and prediction.wait(timeout=10).output == 6
    outputs = list(doubler.map({"n": 20 + n, "seconds": 0.3 - n * 0.05} for n in range(6)))  # later ones end first
    assert outputs == [40, 42, 44, 46, 48, 50]
    records = until(lambda: newest(DOUBLER, 6), lambda records: sorted(p.input["n"] for p in records) == [
        20, 21, 22, 23, 24, 25] and all(p.status == "succeeded" for p in records))
    changes = sorted([(at(p.created_at), 1) for p in records] + [(at(p.completed_at), -1) for p in records])
    assert max(itertools.accumulate(change for _, change in changes)) == 2  # the model's max=1 x concurrency=2
    results = doubler.map([{"n": 31}, {"n": -32, "seconds": 0.5}, {"n": 33, "seconds": 5}, {"n": 34, "seconds": 5}])
    assert next(results) == 62
    with pytest.raises(ModelError, match="n is negative"):
        next(results)
    records = until(lambda: newest(DOUBLER, 3), lambda records: {p.input["n"] for p in records} == {31, -32, 33})
    assert records[0].input["n"] == 33 and records[0].wait(timeout=10).status == "canceled"  # canceled by its id
    assert 34 not in [p.input["n"] for p in newest(DOUBLER, 5)]  # never sent: the map had stopped


# ------------------------------------------------------------------ the CLI


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_cli_predict_async_show_follow_and_cancel(models):
    code, output = cli("predict", DOUBLER, "-i", "n=21", "-i", "seconds=0.4", "--async")
    assert code == 0, output
    prediction_id = output.splitlines()[0]
    assert f"{http_base_url()}/v1/predictions/{prediction_id}" in output and "show" in output
    result = runner.invoke(app, ["predictions", "show", prediction_id, "--follow"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "step 0\nstep 1\nstep 2\nstep 3\n42\n"  # the logs as they come, then the output
    assert f"{prediction_id} succeeded" in result.stderr  # the statuses it went through, on stderr
    code, output = cli("predictions", "show", prediction_id)
    assert code == 0 and '"status": "succeeded"' in output and f'"model": "{DOUBLER}"' in output
    code, output = cli("predictions", "cancel", prediction_id)
    assert code == 0 and "had already ended (succeeded)" in output
    slow = predictions.create(DOUBLER, {"n": 1, "seconds": 5}, wait=False)
    code, output = cli("predictions", "cancel", slow.id)
    assert code == 0 and f"Canceled {slow.id}." in output


def test_cli_predict_follows_past_the_hold_and_reports_failures(models, monkeypatch):
    monkeypatch.setattr(_cli_predictions, "HOLD_S", 1)
    started = time.monotonic()
    code, output = cli("predict", DOUBLER, "-i", "n=4", "-i", "seconds=1.5")
    assert code == 0 and output.strip() == "8", output
    assert time.monotonic() - started >= 1.5
    code, output = cli("predict", DOUBLER, "-i", "n=-4")
    assert code == 1 and "the prediction failed: n is negative" in output and "Traceback" not in output
    assert len(output.strip().splitlines()) <= 2
    code, output = cli("predictions", "show", "nope")
    assert code == 1 and "No prediction with id 'nope'" in output and len(output.strip().splitlines()) <= 2


def test_cli_lists_predictions_and_prints_the_webhook_secret(models):
    code, output = cli("predictions", "ls", "pc-ghost")
    assert code == 0 and "No predictions recorded yet." in output
    made = stored(predictions.create(DOUBLER, {"n": 1}).id)
    stored(predictions.create(OTHER, {"n": 1}).id)
    code, output = cli("predictions", "ls", DOUBLER)
    assert code == 0 and made.id in output and "succeeded" in output and re.search(r"\d\.\d\d s", output)
    assert OTHER not in output and re.search(r"20\d\d-\d\d-\d\d \d\d:\d\d:\d\d", output)
    code, output = cli("webhooks", "secret")
    assert code == 0 and output.strip() == predictions.webhook_secret()


def test_new_commands_have_help_with_an_example():
    for command in (["predictions", "ls"], ["predictions", "show"], ["predictions", "cancel"], ["webhooks", "secret"],
                    ["predict"]):
        code, output = cli(*command, "--help")
        assert code == 0 and "Example" in output, command
    assert "--async" in cli("predict", "--help")[1]
