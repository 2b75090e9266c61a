"""Replicate's models API at /v1, read by the official ``replicate`` client (1.x), with tokens on."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import pathlib
import subprocess
import tempfile
import time
from collections.abc import Iterator

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError
from replicate.helpers import FileOutput
from replicate.run import _has_output_iterator_array_type

from lambdaml import Input, Path, model
from lambdaml.control import app as control
from lambdaml.control.v1 import cog_schema
from lambdaml.deploy import app_status
from tests.conftest import tokens_on, wait_until
from tests.webhook_receiver import allowed_receiver


@model(name="v1-hello", cpu=0.1, min=1, concurrency=4)
def v1_hello(name: str = Input(default="ada", description="Who to greet"), delay: float = Input(default=0, le=60)) -> str:
    for _ in range(round(delay * 20)):  # short sleeps: a cancel stops the thread between two
        time.sleep(0.05)
    return f"hello {name}"


@model(name="v1-count", cpu=0.1, min=0, visibility="public")
def v1_count(count: int = 3) -> Iterator[int]:
    yield from range(count)


@model(name="v1-flip", cpu=0.1, min=0)
def v1_flip(data: Path = Input(description="Any small file")) -> Path:
    flipped = pathlib.Path(tempfile.mkdtemp()) / "flipped.bin"
    flipped.write_bytes(data.read_bytes()[::-1])
    return flipped


@model(name="v1-digest", cpu=0.1, min=0)
def v1_digest(data: Path = Input(description="Any file")) -> str:
    return hashlib.sha256(data.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def hook(cluster):
    """A webhook receiver on loopback, allowed for the models and the control application (restarted to see it)."""
    with allowed_receiver() as receiver:
        control.ensure_running(replace=True)
        yield receiver


@pytest.fixture(scope="module")
def deployed(cluster, hook):
    """The models deployed and tokens on: ``(base URL, hello's version, count's version, admin token, predict token)``."""
    hello, counting = v1_hello.deploy(), v1_count.deploy()
    v1_flip.deploy()
    v1_digest.deploy()
    with tokens_on(cluster.http_url, "/v1-hello/predictions") as ((_, admin), (_, user)):
        yield cluster.http_url, hello.version, counting.version, admin, user
    for deployed_model in (v1_hello, v1_count, v1_flip, v1_digest):
        deployed_model.delete()


def test_a_generator_output_is_marked_as_cog_marks_iterators():
    document = {"components": {"schemas": {"Output": {"title": "Output", "type": "array", "items": {"type": "integer"},
                                                       "x-lambdaml-stream": True}}}}
    assert cog_schema(document)["components"]["schemas"]["Output"]["x-cog-array-type"] == "iterator"
    text = {"components": {"schemas": {"Output": {"title": "Output", "type": "string", "x-lambdaml-stream": True}}}}
    assert cog_schema(text)["components"]["schemas"]["Output"] == {
        "title": "Output", "type": "array", "items": {"type": "string"},
        "x-cog-array-type": "iterator", "x-cog-array-display": "concatenate",
    }
    assert "x-lambdaml-stream" in text["components"]["schemas"]["Output"]  # the stored document is left alone
    assert cog_schema(None)["components"] == {"schemas": {}}  # an artifact from before documents were kept


def test_the_official_client_reads_models_and_versions(deployed):
    base, hello_version, words_version, admin, _ = deployed
    client = replicate.Client(api_token=admin, base_url=base)
    hello = client.models.get("lambdaml/v1-hello")
    assert (hello.owner, hello.name, hello.visibility) == ("lambdaml", "v1-hello", "private")
    assert hello.url == f"{base}/v1/models/lambdaml/v1-hello" and isinstance(hello.run_count, int)
    latest = hello.latest_version
    assert latest.id == hello_version and latest.created_at.tzinfo is not None
    inputs = latest.openapi_schema["components"]["schemas"]["Input"]["properties"]
    assert inputs["name"]["description"] == "Who to greet"
    assert not _has_output_iterator_array_type(latest)
    assert client.models.get("lambdaml/v1-hello").versions.get(hello_version).id == hello_version
    assert [version.id for version in hello.versions.list()] == [hello_version]
    words = client.models.get("lambdaml", "v1-count")
    assert words.visibility == "public" and _has_output_iterator_array_type(words.latest_version)
    assert words.latest_version.id == words_version
    assert {"v1-hello", "v1-count"} <= {listed.name for listed in client.models.list().results}
    assert not app_status("v1-count")["replicas"]  # described from the database: no replica woken


def test_unknown_models_and_versions_are_404s_the_client_raises(deployed):
    base, _, _, admin, _ = deployed
    client = replicate.Client(api_token=admin, base_url=base)
    for reference in ("lambdaml/no-such-model", "someone-else/v1-hello"):
        with pytest.raises(ReplicateError) as raised:
            client.models.get(reference)
        assert raised.value.status == 404 and "lambdaml/NAME" in raised.value.detail
    with pytest.raises(ReplicateError) as raised:
        client.models.get("lambdaml/v1-hello").versions.get("0123456789abcdef0123")
    assert raised.value.status == 404 and "no version" in raised.value.detail
    answer = httpx.post(f"{base}/v1/models/lambdaml/v1-hello", headers={"Authorization": f"Bearer {admin}"})
    assert answer.status_code == 405 and answer.json()["detail"]


def test_without_a_token_only_public_models_are_shown(deployed):
    base, *_ = deployed
    refused = [httpx.get(f"{base}/v1/models/lambdaml/{name}") for name in ("v1-hello", "no-such-model")]
    assert [answer.status_code for answer in refused] == [401, 401]
    assert refused[0].json() == refused[1].json()  # a private model and a missing one look the same
    assert httpx.get(f"{base}/v1/models/lambdaml/v1-count").json()["name"] == "v1-count"
    listed = {model["name"] for model in httpx.get(f"{base}/v1/models").json()["results"]}
    assert "v1-count" in listed and "v1-hello" not in listed
    # Creating follows the model's visibility too; a private model and a missing one still look the same.
    create = [httpx.post(f"{base}/v1/models/lambdaml/{name}/predictions", json={"input": {}}) for name in ("v1-hello", "nope")]
    assert [answer.status_code for answer in create] == [401, 401] and create[0].json() == create[1].json()
    public = httpx.post(f"{base}/v1/models/lambdaml/v1-count/predictions", json={"input": {"count": 2}},
                        headers={"Prefer": "wait"}, timeout=70)
    assert public.status_code == 201 and public.json()["output"] == [0, 1]


def test_run_count_follows_the_records_and_a_deleted_model_leaves(deployed, cluster):
    base, _, _, admin, _ = deployed
    headers = {"Authorization": f"Bearer {admin}"}

    def run_count() -> int:
        return httpx.get(f"{base}/v1/models/lambdaml/v1-hello", headers=headers).json()["run_count"]

    before = run_count()
    assert httpx.post(f"{base}/v1-hello/predictions", json={"input": {}}, headers=headers).status_code == 200
    wait_until(lambda: run_count() == before + 1, "run_count did not count the prediction")
    gone = model(name="v1-gone", cpu=0.1, min=0)(v1_hello.target)
    gone.deploy()
    assert httpx.get(f"{base}/v1/models/lambdaml/v1-gone", headers=headers).status_code == 200
    gone.delete()
    assert httpx.get(f"{base}/v1/models/lambdaml/v1-gone", headers=headers).status_code == 404


def test_replicate_run_returns_outputs_and_iterators(deployed):
    base, hello_version, count_version, admin, _ = deployed
    client = replicate.Client(api_token=admin, base_url=base)
    assert client.run("lambdaml/v1-hello", input={"name": "grace"}) == "hello grace"
    assert client.run(f"lambdaml/v1-hello:{hello_version}", input={"name": "ada"}) == "hello ada"
    assert client.run("lambdaml/v1-count", input={"count": 3}) == [0, 1, 2]
    items = client.run(f"lambdaml/v1-count:{count_version}", input={"count": 4})  # the version says: an iterator
    assert not isinstance(items, list) and list(items) == [0, 1, 2, 3]


def test_predictions_create_wait_reload_cancel_get_and_list(deployed):
    base, hello_version, _, admin, _ = deployed
    client = replicate.Client(api_token=admin, base_url=base)
    started = client.predictions.create(model="lambdaml/v1-hello", input={"name": "ada", "delay": 0.5})
    assert started.status == "starting" and (started.model, started.version) == ("lambdaml/v1-hello", hello_version)
    assert started.urls["get"] == f"{base}/v1/predictions/{started.id}" and None not in started.urls.values()
    started.wait()
    assert started.status == "succeeded" and started.output == "hello ada" and started.metrics["predict_time"] > 0
    started.reload()
    assert started.status == "succeeded"
    assert client.predictions.get(started.id).output == "hello ada"
    wait_until(lambda: started.id in [p.id for p in client.predictions.list().results], "the record is not listed")
    by_version = client.predictions.create(version=hello_version, input={"name": "v"})  # a bare version id
    by_version.wait()  # the client's wait() returns nothing: the prediction is updated in place
    assert by_version.output == "hello v"
    slow = client.predictions.create(model="lambdaml/v1-hello", input={"delay": 30})
    slow.cancel()
    slow.wait()
    assert slow.status == "canceled" and "cancel" in (slow.error or "").lower()
    held = client.models.predictions.create(model=("lambdaml", "v1-hello"), input={"delay": 3}, wait=1)
    assert held.status == "starting"  # the hold ran out: the clients poll only a starting prediction
    held.wait()
    assert held.status == "succeeded"


def test_the_deployments_and_version_routes_and_prefer_wait(deployed):
    base, hello_version, _, admin, _ = deployed
    headers = {"Authorization": f"Bearer {admin}", "Prefer": "wait=30"}
    for url, body in (
        (f"{base}/v1/deployments/lambdaml/v1-hello/predictions", {"input": {"name": "d"}}),
        (f"{base}/v1/predictions", {"version": f"lambdaml/v1-hello:{hello_version}", "input": {"name": "d"}}),
        (f"{base}/v1/predictions", {"version": "lambdaml/v1-hello", "input": {"name": "d"}}),
    ):
        answer = httpx.post(url, json=body, headers=headers, timeout=40)
        assert answer.status_code == 201 and answer.json()["output"] == "hello d", answer.text


def test_bad_requests_through_v1_are_clear_4xx(deployed):
    base, hello_version, _, admin, _ = deployed
    client = replicate.Client(api_token=admin, base_url=base)
    cases = {
        404: [lambda: client.run("lambdaml/no-such-model", input={}),
              lambda: client.predictions.create(version="0123456789abcdef0123", input={}),
              lambda: client.run(f"lambdaml/v1-hello:{'f' * 20}", input={})],  # the client sends the bare id
        422: [lambda: client.run("lambdaml/v1-hello", input={"name": 3}),
              lambda: client.run("lambdaml/v1-hello", input={"delay": 999}),
              lambda: client.run("lambdaml/v1-hello", input={"unknown": 1})],
    }
    for status, calls in cases.items():
        for call in calls:
            with pytest.raises(ReplicateError) as raised:
                call()
            assert raised.value.status == status and raised.value.detail, raised.value
    headers = {"Authorization": f"Bearer {admin}"}
    url = f"{base}/v1/models/lambdaml/v1-hello/predictions"
    for answer in (
        httpx.post(url, content=b"{not json", headers=headers),
        httpx.post(url, json=[1, 2], headers=headers),
        httpx.post(url, json={"input": {}}, headers={**headers, "Prefer": "wait=soon"}),
        httpx.post(f"{base}/v1/predictions", json={"version": "someone/else", "input": {}}, headers=headers),
        httpx.post(f"{base}/v1/predictions", json={"input": {}}, headers=headers),
        httpx.post(f"{base}/v1/predictions", json={"version": f"lambdaml/v1-hello:{'e' * 20}", "input": {}}, headers=headers),
    ):
        assert answer.status_code == 422 and answer.json()["detail"] and answer.json()["invalid_fields"], answer.text


def test_replicate_stream_gets_the_items_as_server_sent_events(deployed):
    base, _, _, admin, _ = deployed
    client = replicate.Client(api_token=admin, base_url=base)
    events = list(client.stream("lambdaml/v1-count", input={"count": 3}))
    assert [str(event) for event in events if event.event.value == "output"] == ["0", "1", "2"]
    assert events[-1].event.value == "done"
    with pytest.raises(ReplicateError, match="does not support streaming"):  # not a generator: no urls.stream
        list(client.stream("lambdaml/v1-hello", input={}))
    # urls.stream is readable without a token (the JavaScript client sends none), by its key alone.
    made = client.predictions.create(model="lambdaml/v1-count", input={"count": 1})
    keyed, bare = made.urls["stream"], made.urls["stream"].partition("?")[0]
    events = httpx.get(keyed, timeout=30).text
    assert "?key=" in keyed and "event: output" in events and "event: done" in events
    assert [httpx.get(url).status_code for url in (bare, bare + "?key=" + "0" * 32)] == [401, 401]


def test_webhooks_verify_with_the_clients_own_helper(deployed, hook):
    base, _, _, admin, _ = deployed
    client = replicate.Client(api_token=admin, base_url=base)
    made = client.predictions.create(model="lambdaml/v1-hello", input={"name": "hook"}, webhook=hook.url("/v1-done"),
                                     webhook_events_filter=["completed"])
    (call,) = hook.wait_for("/v1-done", lambda calls: len(calls) >= 1)
    secret = client.webhooks.default.secret()
    assert secret.key.startswith("whsec_")
    replicate.webhooks.validate(headers=call.headers, body=call.raw, secret=secret)  # raises if the signature is wrong
    assert call.body["id"] == made.id and call.body["status"] == "succeeded" and call.body["output"] == "hello hook"
    with pytest.raises(Exception, match="(?i)signature"):
        replicate.webhooks.validate(headers=call.headers, body=call.raw.replace("hook", "hack"), secret=secret)


def test_local_files_are_uploaded_to_v1_files_and_file_outputs_come_back_readable(deployed, tmp_path):
    base, _, _, admin, user_token = deployed
    client = replicate.Client(api_token=admin, base_url=base)
    source = tmp_path / "in.bin"
    source.write_bytes(b"lambdaml" * 100)
    with source.open("rb") as file:
        output = client.run("lambdaml/v1-flip", input={"data": file})  # the client uploads it with POST /v1/files
    assert isinstance(output, FileOutput) and output.read() == source.read_bytes()[::-1]  # a data: URI
    (uploaded,) = [f for f in client.files.list() if f.name == "in.bin"]
    assert uploaded.size == 800 and uploaded.urls["get"] == f"{base}/v1/files/{uploaded.id}" and uploaded.expires_at
    assert client.files.get(uploaded.id).checksums["sha256"] == uploaded.checksums["sha256"]
    # Another caller can neither see the file nor use it as an input.
    user = replicate.Client(api_token=user_token, base_url=base)
    with pytest.raises(ReplicateError) as raised:
        user.files.get(uploaded.id)
    assert raised.value.status == 404
    with pytest.raises(ReplicateError) as raised:
        user.run("lambdaml/v1-flip", input={"data": uploaded.urls["get"]})
    assert raised.value.status == 422 and "data: no uploaded file" in raised.value.detail
    assert client.files.delete(uploaded.id)
    with pytest.raises(ReplicateError) as raised:
        client.run("lambdaml/v1-flip", input={"data": uploaded.urls["get"]})
    assert raised.value.status == 422 and uploaded.id in raised.value.detail


def test_an_upload_over_the_inline_limit_reaches_the_replica_by_a_signed_reference(deployed, tmp_path):
    base, _, _, admin, _ = deployed
    client = replicate.Client(api_token=admin, base_url=base)
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 // 2))  # 1.5 MiB: more than a data: URI may carry
    with source.open("rb") as file:
        prediction = client.predictions.create(model="lambdaml/v1-digest", input={"data": file})
    prediction.wait()
    assert prediction.status == "succeeded", prediction.error
    assert prediction.output == hashlib.sha256(source.read_bytes()).hexdigest()
    reference = prediction.input["data"]
    assert reference.startswith("lambdaml-file:") and reference.endswith("/big.bin")
    # The key is what lets a replica read it: a reference with another key reads nothing.
    file_id, key, name = reference.split(":", 1)[1].split("/")
    forged = httpx.post(f"{base}/v1-digest/predictions", json={"input": {"data": f"lambdaml-file:{file_id}/{'0' * len(key)}/{name}"}},
                        headers={"Authorization": f"Bearer {admin}"}, timeout=60)
    assert forged.status_code == 422 and "not valid" in forged.text


def test_bad_uploads_are_clear_4xx(deployed):
    base, _, _, admin, _ = deployed
    headers = {"Authorization": f"Bearer {admin}"}
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
    connection.putrequest("POST", "/v1/files")  # says 200 MiB and sends none of it: refused before it is read
    for header, value in {**headers, "Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(200 << 20)}.items():
        connection.putheader(header, value)
    connection.endheaders()
    too_big = connection.getresponse()
    assert too_big.status == 413 and "as a URL" in json.loads(too_big.read())["detail"]
    connection.close()
    for answer in (
        httpx.post(f"{base}/v1/files", files={"other": ("a.txt", b"a")}, headers=headers),
        httpx.post(f"{base}/v1/files", content=b"not a form", headers={**headers, "Content-Type": "text/plain"}),
        httpx.post(f"{base}/v1/files", files={"content": ("a.txt", b"a")}, data={"metadata": "{nope"}, headers=headers),
    ):
        assert answer.status_code == 422 and answer.json()["invalid_fields"], answer.text
    assert httpx.post(f"{base}/v1/files", files={"content": ("a.txt", b"a")}).status_code == 401
    assert httpx.get(f"{base}/v1/files/nope", headers=headers).status_code == 404
    assert httpx.put(f"{base}/v1/files/nope", headers=headers).status_code == 405


@pytest.fixture(scope="module")
def javascript_client():
    """tests/js with the official JavaScript client installed from npm (the version package-lock.json pins)."""
    folder = pathlib.Path(__file__).parent / "js"
    if not (folder / "node_modules" / "replicate").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=folder, check=True, capture_output=True, timeout=300)
    return folder


def test_the_official_javascript_client_runs_creates_cancels_and_streams(deployed, javascript_client):
    base, _, _, admin, _ = deployed
    env = {**os.environ, "LAMBDAML_V1": f"{base}/v1", "TOKEN": admin}  # the JS client's base URL ends in /v1
    done = subprocess.run(["node", "replicate_client.mjs"], cwd=javascript_client, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[:1500]  # the error, not the request object Node prints after it
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["run"] == "hello js" and seen["iterator"] == [0, 1, 2] and seen["file"] == "edon morf"
    assert seen["created"] == {"status": "starting", "model": "lambdaml/v1-hello", "output": "hello poll"}
    assert seen["canceled"] in ("starting", "processing", "canceled")
    assert [event for event in seen["stream"] if event[0] == "output"] == [["output", "0"], ["output", "1"], ["output", "2"]]
    assert seen["stream"][-1][0] == "done"
    assert seen["invalid"]["status"] == 422 and "name" in seen["invalid"]["message"]
