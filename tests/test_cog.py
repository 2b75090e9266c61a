"""The example Cog projects, deployed with the CLI on the session's cluster and driven through Cog's HTTP API."""

from __future__ import annotations

import base64
import http.server
import json
import pathlib
import sys
import threading
import time

import httpx
import pytest
from typer.testing import CliRunner

from lambdaml.cli import app
from lambdaml.control import app as control

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples" / "cog"
FINAL = ("succeeded", "failed", "canceled")


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


class _Uploads(http.server.BaseHTTPRequestHandler):
    """A loopback stand-in for the storage ``cog serve --upload-url`` PUTs to: it keeps files, answers a Location."""

    stored: dict[str, tuple[str, bytes]] = {}

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.stored[self.path] = (self.headers["Content-Type"], body)
        self.send_response(201)
        self.send_header("Location", f"http://files.example{self.path}?X-Signature=secret")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def uploads(cluster):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Uploads)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/uploads/"
    server.shutdown()


@pytest.fixture(scope="module")
def receiver(cluster):
    from tests.webhook_receiver import allowed_receiver

    with allowed_receiver() as hook:
        control.ensure_running(replace=True)  # the control app sends webhooks: it must allow the receiver
        yield hook
    control.ensure_running(replace=True)


@pytest.fixture(scope="module")
def deployed(cluster, receiver, uploads):
    """The three examples, and banner again with --upload-url, deployed with the CLI; base URLs by name."""
    runs = [("banner",), ("chat",), ("tuned",), ("banner", "--name", "banner-up", "--upload-url", uploads)]
    names, outputs = [], ""
    for project, *options in runs:
        code, output = cli("deploy", str(EXAMPLES / project), "--cpu", "0.1", *options)
        assert code == 0, output
        names.append(options[1] if options else project)
        outputs += output
    yield {name: f"{cluster.http_url}/{name}" for name in names}, outputs
    for name in names:
        cli("delete", name)


def post(url: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/predictions", json=body, headers=headers, timeout=60)


def test_a_plain_predictor_with_a_file_output(deployed):
    urls, _ = deployed
    logo = "data:text/plain;base64," + base64.b64encode(b"LOGO").decode()
    answer = post(urls["banner"], {"input": {"text": "hi", "style": "loud", "width": 4, "signature": "abc", "logo": logo}})
    assert answer.status_code == 200, answer.text
    prediction = answer.json()
    assert prediction["status"] == "succeeded" and prediction["input"]["signature"] == "**********"
    assert prediction["logs"] == "wrote 3 lines\n"
    kind, _, data = prediction["output"].partition(";base64,")  # no output location: a data: URI, as Cog does
    assert kind == "data:text/plain"
    # the border from cog.yaml's environment, the style from a file read relative to the project, a helper module
    assert base64.b64decode(data).decode() == "****\nLOGO\nhi!\n-- 3 letters\n****\n"
    assert {"predict_time", "total_time"} <= set(prediction["metrics"])


def test_inputs_are_checked_as_cog_checks_them(deployed):
    urls, _ = deployed
    answer = post(urls["banner"], {"input": {"text": "hi", "width": 100, "style": "shouting"}})
    assert answer.status_code == 422
    detail = answer.json()["detail"]  # Cog's shape: a list of fields with loc, msg and type
    assert {tuple(item["loc"]) for item in detail} == {("body", "input", "width"), ("body", "input", "style")}
    assert all(item["msg"] and item["type"] for item in detail)
    code, output = cli("predict", "banner", "-i", "text=hi", "-i", "width=2")
    assert code == 1 and "width: Input should be greater than or equal to 4" in output


def test_upload_url_puts_files_as_cog_serve_does(deployed):
    urls, _ = deployed
    prediction = post(urls["banner-up"], {"input": {"text": "up"}}).json()
    assert prediction["status"] == "succeeded", prediction
    name = prediction["output"].rsplit("/", 1)[1]
    assert prediction["output"] == f"http://files.example/uploads/{name}"  # the Location, without its query
    content_type, body = _Uploads.stored[f"/uploads/{name}"]
    assert content_type == "text/plain" and b"up" in body


def test_the_openapi_document_is_the_local_one(deployed):
    from lambdaml import cog

    urls, _ = deployed
    for name in ("chat", "tuned"):
        served = httpx.get(f"{urls[name]}/openapi.json", timeout=10).json()
        assert served["components"]["schemas"]["Input"] == cog.load(EXAMPLES / name).openapi()["components"]["schemas"]["Input"]
    served = httpx.get(f"{urls['banner']}/openapi.json", timeout=10).json()
    assert served["components"]["schemas"]["Output"] == {"title": "Output", "type": "string", "format": "uri"}
    assert served["components"]["schemas"]["Input"]["properties"]["old_width"]["deprecated"] is True


def test_an_async_predictor_streams_and_runs_several_at_once(deployed):
    urls, _ = deployed
    sync = post(urls["chat"], {"input": {"prompt": "a b", "delay": 0}}).json()
    assert sync["output"] == ["you ", "said: ", "a ", "b "]  # Cog keeps an iterator's items as a list
    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        pieces, arrivals = [], []
        with client.stream("POST", f"{urls['chat']}/predictions", json={"input": {"prompt": "one two three", "delay": 0.3}},
                           headers={"Accept": "text/event-stream"}) as stream:
            event = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "output":
                    pieces.append(line.removeprefix("data: "))
                    arrivals.append(time.monotonic() - started)
    assert "".join(pieces).split() == ["you", "said:", "one", "two", "three"]
    assert arrivals[-1] - arrivals[0] > 0.9  # in pieces, as they were made
    # concurrency.max: 4 in cog.yaml, so four 1 s predictions on one replica take about 1 s, not 4
    threads_started = time.monotonic()
    answers: list[dict] = []
    workers = [threading.Thread(target=lambda: answers.append(post(urls["chat"], {"input": {"prompt": "x", "delay": 0.5}}).json()))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [a["status"] for a in answers] == ["succeeded"] * 4
    assert time.monotonic() - threads_started < 3.5


def test_async_with_a_filtered_webhook_then_cancel(deployed, receiver):
    urls, _ = deployed
    path = "/cog-chat"
    body = {"input": {"prompt": "w " * 40, "delay": 0.25}, "webhook": receiver.url(path),
            "webhook_events_filter": ["start", "completed"]}
    answer = post(urls["chat"], body, Prefer="respond-async")
    assert answer.status_code == 202 and answer.json()["status"] in ("starting", "processing")
    prediction_id = answer.json()["id"]
    receiver.wait_for(path, lambda calls: any(c.body["status"] == "processing" for c in calls))
    cancel = httpx.post(f"{urls['chat']}/predictions/{prediction_id}/cancel", timeout=10)
    assert cancel.status_code == 200
    calls = receiver.wait_for(path, lambda calls: any(c.body["status"] in FINAL for c in calls), timeout=20)
    assert calls[-1].body["status"] == "canceled" and calls[-1].body["id"] == prediction_id
    assert all(c.body["status"] in ("starting", "processing", "canceled") for c in calls)  # no output or logs events
    assert httpx.post(f"{urls['chat']}/predictions/nosuch/cancel", timeout=10).status_code == 404


def test_put_is_idempotent_and_health_check_is_cogs(deployed):
    urls, _ = deployed
    first = httpx.put(f"{urls['tuned']}/predictions/cog-put-1", json={"input": {"name": "ada"}}, timeout=60)
    again = httpx.put(f"{urls['tuned']}/predictions/cog-put-1", json={"input": {"name": "ada"}}, timeout=60)
    assert first.json()["output"] == "hello, ada"  # setup(weights) got the project's ./weights
    assert first.json()["metrics"]["name_length"] == 3  # current_scope().record_metric
    assert again.json()["id"] == "cog-put-1" and again.json()["output"] == "hello, ada"
    health = httpx.get(f"{urls['tuned']}/health-check", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "READY"


def test_the_cli_says_which_python_and_predicts(deployed, tmp_path):
    _, output = deployed
    here = "{}.{}".format(*sys.version_info[:2])  # the cluster's Python: the suite's own
    for name, asked in (("chat", "3.13"), ("tuned", "3.11"), ("banner", "3.12")):  # their cog.yaml's
        note = f"{name}: cog.yaml asks for Python {asked}; the model runs on the cluster's Python {here}"
        assert (note in output) is (asked != here), output
    code, listed = cli("ls")
    assert code == 0 and all(name in listed for name in ("banner", "chat", "tuned", "banner-up"))
    logo = tmp_path / "logo.txt"
    logo.write_text("TOP")
    code, output = cli("predict", "banner", "-i", "text=cli", "-i", f"logo=@{logo}", "-o", str(tmp_path / "out"))
    assert code == 0, output
    saved = list((tmp_path / "out").iterdir())
    assert len(saved) == 1 and saved[0].read_text().splitlines()[1:3] == ["TOP", "cli"]
    assert json.loads(cli("predict", "chat", "-i", "prompt=z", "-i", "delay=0", "--json")[1])["output"][-1] == "z "


def test_the_safety_checks_run_on_a_cog_project(deployed):
    code, output = cli("check", str(EXAMPLES / "tuned"))  # lint, compatibility with the live version, fuzzing
    assert code == 0, output
    assert "fuzz" in output and "FAIL" not in output


def test_a_cog_training_makes_a_version_whose_setup_gets_the_weights(deployed):
    urls, outputs = deployed
    trainer = urls["tuned"] + "-train"
    assert f"POST {trainer}/trainings" in outputs.replace("\n", "")  # deploy said where trainings go
    document = httpx.get(f"{trainer}/openapi.json", timeout=60).json()
    assert "/trainings" in document["paths"] and "greeting" in document["components"]["schemas"]["Input"]["properties"]
    answer = httpx.post(f"{trainer}/trainings", json={"input": {"greeting": "ahoy"}}, headers={"Prefer": "wait"}, timeout=60)
    assert answer.status_code == 200, answer.text
    training = answer.json()
    assert training["status"] == "succeeded", training["error"]
    owner_name, _, version = training["output"]["version"].partition(":")
    assert owner_name == "lambdaml/tuned" and training["output"]["weights"].endswith("/greeting.txt")
    until = time.monotonic() + 60
    while (prediction := post(urls["tuned"], {"input": {"name": "bo"}}).json())["version"] != version:
        assert time.monotonic() < until, prediction
        time.sleep(0.2)
    assert prediction["output"] == "ahoy, bo"  # the predictor's setup(weights) got the training's file
    assert httpx.post(f"{trainer}/trainings/no-such-training/cancel", timeout=10).status_code == 404
