"""Trainings on the session's cluster: ``@model(train=...)`` through Python, the CLI, ``/{name}/trainings``
and the official ``replicate`` client; cancel; tokens; what a training leaves behind (a version)."""

from __future__ import annotations

import pathlib
import tempfile
import time

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError
from typer.testing import CliRunner

import lambdaml
from lambdaml import Input, model
from lambdaml.cli import app
from lambdaml.serve.training import store_url, trained_weights, weights_location
from lambdaml.control import app as control
from lambdaml.errors import DeployError
from tests.conftest import tokens_on, wait_until
from tests.webhook_receiver import allowed_receiver

FINAL = ("succeeded", "failed", "canceled")


def slow_train(seconds: float = Input(default=30.0, ge=0, le=60), word: str = "trained") -> pathlib.Path:
    for _ in range(int(seconds * 20)):  # a long training, in steps a cancel can stop between
        time.sleep(0.05)
    weights = pathlib.Path(tempfile.mkdtemp()) / "word.txt"
    weights.write_text(word)
    return weights


@model(name="coach", cpu=0.05, train=slow_train)
class Coached:
    def setup(self, weights: pathlib.Path | None = None) -> None:
        self.word = weights.read_text() if weights else "untrained"

    def predict(self) -> str:
        return self.word


@model(name="untrained", cpu=0.05)
def untrained() -> str:
    return "ok"


@pytest.fixture(scope="module")
def hook(cluster):
    """A webhook receiver the models deployed meanwhile and the control application (which sends) allow."""
    with allowed_receiver() as receiver:
        control.ensure_running(replace=True)
        yield receiver
    control.ensure_running(replace=True)


@pytest.fixture(scope="module")
def coach(cluster, hook):
    Coached.deploy()
    untrained.deploy()
    yield cluster.http_url
    Coached.delete()
    untrained.delete()


def _now_runs(base: str, version: str, limit_s: float = 60.0) -> str:
    """The output of the first prediction the trained ``version`` answers (it rolls out after the training)."""
    until = time.monotonic() + limit_s
    while True:
        answer = httpx.post(f"{base}/coach/predictions", json={"input": {}}, timeout=30).json()
        if answer.get("version") == version:
            return answer["output"]
        assert time.monotonic() < until, f"version {version} never answered; the last answer: {answer}"
        time.sleep(0.2)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_the_weights_of_a_training_are_its_path_or_cogs_weights_field():
    assert trained_weights("s3://bucket/m/weights/1/w.bin?X-Amz-Signature=abc") == "s3://bucket/m/weights/1/w.bin"
    assert trained_weights({"weights": "gs://b/w.tar"}) == "gs://b/w.tar"
    for output in ("data:text/plain;base64,aGk=", {"loss": 0.1}, 3):
        with pytest.raises(ValueError, match="must return the trained weights as a Path"):
            trained_weights(output)
    artifact = "s3://bucket/lambdaml/coach/3f2a9c81d0e4b7a65c21"
    assert store_url(artifact) == "s3://bucket/lambdaml"
    assert weights_location(artifact, "coach") == "s3://bucket/lambdaml/coach/weights"


def test_a_training_makes_a_version_whose_setup_gets_the_weights(coach):
    before = {row.version for row in lambdaml.versions("coach")}
    training = lambdaml.trainings.create("coach", {"seconds": 0, "word": "tuned"})
    assert training.status == "succeeded", training.error
    owner_name, _, version = training.output["version"].partition(":")
    assert owner_name == "lambdaml/coach" and version not in before
    assert training.output["weights"].endswith("/word.txt") and training.urls["get"].endswith(f"/v1/trainings/{training.id}")
    rows = {row.version: row for row in lambdaml.versions("coach")}
    assert rows[version].current
    assert _now_runs(coach, version) == "tuned"
    shown = httpx.get(f"{coach}/v1/trainings/{training.id}").json()  # Replicate's training shape
    assert shown["model"] == shown["destination"] == "lambdaml/coach" and shown["status"] == "succeeded"
    assert httpx.get(f"{coach}/v1/predictions/{training.id}").status_code == 404  # a training is not a prediction
    assert "coach-train" not in {m["name"] for m in httpx.get(f"{coach}/v1/models").json()["results"]}


def test_a_training_sends_its_webhooks_as_a_prediction_does(coach, hook):
    training = lambdaml.trainings.create("coach", {"seconds": 0.5, "word": "hooked"}, wait=False,
                                         webhook=hook.url("/trained"), webhook_events_filter=["start", "completed"])
    calls = hook.wait_for("/trained", lambda calls: any(call.body["status"] == "succeeded" for call in calls), 60)
    assert [call.body["status"] for call in calls][0] == "processing"  # start, then completed
    final = calls[-1].body
    assert final["id"] == training.id and final["output"]["version"].startswith("lambdaml/coach:")
    assert final["output"]["weights"].endswith("/word.txt") and "webhook-signature" in calls[-1].headers


def test_a_canceled_training_makes_no_version(coach):
    current = next(row.version for row in lambdaml.versions("coach") if row.current)
    training = lambdaml.trainings.create("coach", {"seconds": 30}, wait=False)
    wait_until(lambda: training.reload().status == "processing", "the training never started", 60)
    canceled = lambdaml.trainings.cancel(training.id)
    assert canceled.id == training.id
    training.wait(timeout=30)
    assert training.status == "canceled" and training.error == "Canceled by the caller."
    assert training.output is None
    assert next(row.version for row in lambdaml.versions("coach") if row.current) == current


def test_the_cli_trains_and_names_what_is_wrong(coach):
    code, output = cli("train", "coach", "-i", "seconds=0", "-i", "word=from-cli")
    assert code == 0, output
    assert "coach now runs version" in output
    version = output.split("coach now runs version ", 1)[1].split(",", 1)[0]
    assert _now_runs(coach, version) == "from-cli"
    code, output = cli("train", "coach", "-i", "bogus=1")
    assert code == 1 and "bogus" in output and "Traceback" not in output
    code, output = cli("train", "untrained", "-i", "x=1")
    assert code == 1 and "untrained-train" in output and "Traceback" not in output


def test_a_model_forwards_its_trainings_and_one_without_a_trainer_says_so(coach):
    answer = httpx.post(f"{coach}/coach/trainings", json={"input": {"seconds": 0, "word": "forwarded"}},
                        headers={"Prefer": "wait"}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded" and answer.headers["Location"].endswith(f"/v1/trainings/{answer.json()['id']}")
    missing = httpx.post(f"{coach}/untrained/trainings", json={"input": {}}, timeout=30)  # it asks Serve's controller
    assert missing.status_code == 404 and "no training function" in missing.json()["detail"]


def test_the_replicate_client_trains_gets_and_cancels(coach):
    client = replicate.Client(api_token="unused", base_url=coach)
    version = client.models.get("lambdaml/coach").latest_version.id
    training = client.trainings.create(version=f"lambdaml/coach:{version}", input={"seconds": 0, "word": "replicated"},
                                       destination="lambdaml/coach")
    until = time.monotonic() + 60
    while training.status not in FINAL:
        assert time.monotonic() < until
        time.sleep(0.2)
        training.reload()
    assert training.status == "succeeded" and training.destination == "lambdaml/coach"
    trained = training.output["version"]  # lambdaml/coach:ID, which the client parses
    assert _now_runs(coach, trained.partition(":")[2]) == "replicated"
    with pytest.raises(ReplicateError) as refused:
        client.trainings.create(version=f"lambdaml/coach:{trained.partition(':')[2]}", input={}, destination="someone/else")
    assert refused.value.status == 422 and "destination" in str(refused.value)
    with pytest.raises(ReplicateError) as unknown:
        client.trainings.get("no-such-training")
    assert unknown.value.status == 404
    slow = client.trainings.create(version=trained, input={"seconds": 30}, destination="lambdaml/coach")
    slow.cancel()
    wait_until(lambda: client.trainings.get(slow.id).status == "canceled", "the training was not canceled", 30)


def test_a_training_needs_an_admin_token(coach):
    with tokens_on(coach, "/untrained/predictions") as ((_, admin), (_, user)):
        body = {"input": {"seconds": 0, "word": "guarded"}}

        def status(token: str) -> int:
            return httpx.post(f"{coach}/coach-train/trainings", json=body, headers={"Authorization": f"Bearer {token}",
                                                                                   "Prefer": "respond-async"}).status_code

        wait_until(lambda: status(user) == 403, "a predict token could start a training", 10)
        assert status(admin) == 202


def test_a_trainers_name_is_its_own(coach):
    impostor = model(name="coach-train", cpu=0.05)(lambda: "not a trainer")
    with pytest.raises(DeployError, match="'coach-train' is the trainer of 'coach'"):
        impostor.deploy()
    squatter = model(name="squat-train", cpu=0.05)(lambda: "here first")
    squatter.deploy()
    try:
        claimer = model(name="squat", cpu=0.05, train=slow_train)(lambda: "wants a trainer")
        with pytest.raises(DeployError, match="runs as 'squat-train', but a model of that name is deployed"):
            claimer.deploy()
    finally:
        squatter.delete()

