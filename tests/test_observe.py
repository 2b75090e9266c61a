"""Observing deployments: listings, replica states, pending reasons in plain words, logs."""

import re
import time
from collections.abc import Callable

import pytest

import lambdaml
from lambdaml import model, observe


def test_a_gpu_replica_with_no_gpu_left_says_why_it_waits(deployed):
    @model(name="gpu-hungry", gpu="A100", cpu=0.1, min=2, max=2)
    def gpu_hungry() -> str:
        return "ok"

    deployed(gpu_hungry, wait=False)  # the cluster has one (fake) A100: the second replica cannot start
    deadline = time.monotonic() + 60
    report = observe.status("gpu-hungry")
    while not (report["model"].running == 1 and report["pending"]) and time.monotonic() < deadline:
        time.sleep(0.5)
        report = observe.status("gpu-hungry")
    assert report["model"].running == 1 and report["model"].target == 2
    assert report["pending"] == [
        "waiting for a node with 1 A100: every node that has it is busy; it starts when one frees up"
    ]


def test_pending_reason_names_a_missing_gpu_type(cluster):
    reason = observe.pending_reason({"CPU": 1, "GPU": 1, "accelerator_type:H100": 0.001})
    assert reason == "waiting for a node with 1 H100: the cluster has none; the autoscaler may add one"


# Ray Serve's access log line: "POST /observed 200 1.2ms" (or "CALL predict OK 1.2ms" for a handle call)
ACCESS_LINE = re.compile(r" (GET|POST|PUT|CALL) \S+ \S+ [0-9.]+ms$")


def _log_lines_when(name: str, ready: Callable[[list[str]], bool]) -> list[str]:
    """The model's log lines, once ``ready(lines)`` (replicas write their log file every second)."""
    deadline = time.monotonic() + 15
    while not ready(lines := list(observe.logs(name, tail=200))):
        assert time.monotonic() < deadline, lines
        time.sleep(0.5)
    return lines


def test_listing_and_logs_of_a_deployed_model(deployed):
    @model(name="observed", cpu=0.1, min=1)
    def observed(text: str) -> str:
        print("observed says", text)
        return text

    deployment = deployed(observed)
    lambdaml.run("observed", {"text": "hello logs"})
    row = next(m for m in observe.list_models() if m.name == "observed")
    assert (row.version, row.status, row.running, row.target) == (deployment.version, "RUNNING", 1, 1)
    assert row.url == deployment.url
    lambdaml.run("observed", {"text": "again"})  # its print is written after the first request's access line would be
    lines = _log_lines_when("observed", lambda lines: any("observed says again" in line for line in lines))
    assert any("observed says hello logs" in line for line in lines)
    assert not [line for line in lines if ACCESS_LINE.search(line)], lines  # the record says it; the log is the model's


def test_a_debug_deploy_logs_each_request_and_tracebacks(deployed, monkeypatch):
    @model(name="debugged", cpu=0.1, min=1)
    def debugged(text: str) -> str:
        if text == "boom":
            raise ValueError("boom")
        return text

    monkeypatch.setenv("LAMBDAML_DEBUG", "1")
    deployed(debugged)
    lambdaml.run("debugged", {"text": "hello"})
    _log_lines_when("debugged", lambda lines: any(ACCESS_LINE.search(line) for line in lines))
    failed = lambdaml.create_prediction("debugged", {"text": "boom"})
    assert failed["status"] == "failed" and "Traceback" in failed["error"]


def test_logs_of_a_model_scaled_to_zero_are_those_of_its_last_replicas(deployed):
    @model(name="napper", cpu=0.1, min=0, max=1, scaledown_after=1)
    def napper(text: str) -> str:
        print("napper says", text)
        return text

    deployed(napper)
    lambdaml.run("napper", {"text": "before the nap"})
    deadline = time.monotonic() + 60
    while lambdaml.deploy.app_status("napper")["replicas"]:
        assert time.monotonic() < deadline, "napper never scaled to zero"
        time.sleep(0.5)
    lines = list(observe.logs("napper", tail=50))
    assert lines[0].startswith("(napper has no running replica: these are the logs of the 1 that stopped last")
    assert any(line.endswith("napper says before the nap") for line in lines[1:]), lines
    assert not [line for line in lines if line.endswith("] ")], lines  # a print is one line, not a line and an empty one


def test_a_log_that_cannot_be_read_is_an_error_not_silence(deployed):
    @model(name="quiet", cpu=0.1, min=1)
    def quiet() -> int:
        return 1

    deployed(quiet)
    replica = next(m for m in observe.list_models() if m.name == "quiet").replicas[0]
    replica.log_file = "no/such/file.log"
    with pytest.raises(lambdaml.ClusterError, match=f"Could not read the log of replica {replica.id}"):
        list(observe.read_logs([replica]))


def test_unknown_models_say_so(cluster):
    with pytest.raises(lambdaml.NotDeployedError, match="No model named 'ghost'"):
        observe.status("ghost")
