"""Canary deploys on the session's cluster: a share of 200 requests, promotion and rollback under load, 0 failures."""

import time

import httpx
import pytest
from typer.testing import CliRunner

import lambdaml
from lambdaml import ConfigError, DeployError, canary, model
from lambdaml.cli import app
from lambdaml.deploy import delete
from tests.conftest import wait_until
from tests.load import steady_load

NAME = "canaried"


def _version(greeting: str):
    """The model, its code differing by ``greeting``: each greeting is a version of its own."""

    @model(name=NAME, cpu=0.1, min=1, max=1, concurrency=4)
    def canaried() -> str:
        return greeting

    return canaried


def _outputs(url: str, count: int) -> list[str]:
    with httpx.Client(timeout=60) as http:
        return [http.post(url, json={"input": {}}).json()["output"] for _ in range(count)]


@pytest.fixture
def live(cluster):
    deployment = _version("one").deploy()
    yield deployment
    delete(NAME)


def test_a_canary_needs_a_share_a_live_version_and_new_code(cluster, live):
    with pytest.raises(ConfigError, match="between 1 and 99"):
        _version("two").deploy(canary=100)
    with pytest.raises(DeployError, match="already live"):
        _version("one").deploy(canary=10)
    with pytest.raises(DeployError, match="no live version"):
        _other_model().deploy(canary=10)
    assert canary.current(NAME) is None


def _other_model():
    @model(name="never-deployed", cpu=0.1)
    def never_deployed() -> str:
        return ""

    return never_deployed


def test_a_canary_takes_its_share_and_is_promoted_then_dropped_without_a_failed_request(live):
    url = f"{live.url}/predictions"
    new = _version("two").deploy(canary=25)
    assert new.version != live.version and canary.current(NAME)["percent"] == 25
    time.sleep(2)  # every live replica has read the canary's share (lambdaml.serve.canary.REFRESH_S)
    outputs = _outputs(url, 200)
    assert set(outputs) == {"one", "two"} and 25 <= outputs.count("two") <= 80, outputs.count("two")  # 50 expected
    # Records carry the version that served each prediction; status shows the two side by side.
    # Each replica sends its records in batches, off the request path: wait for both versions' to land.
    expected = {new.version: outputs.count("two"), live.version: outputs.count("one")}
    wait_until(lambda: {version: figures["count"] for version, figures in canary.compare(NAME).items()} == expected,
               "the records of both versions")
    shown = CliRunner().invoke(app, ["status", NAME])
    assert shown.exit_code == 0 and "canary" in shown.output and "live" in shown.output, shown.output
    assert new.version in shown.output and f"{outputs.count('two')} " in shown.output

    promoted = steady_load(url, {"input": {}}, clients=4, seconds=25, during=lambda: canary.promote(NAME), at=2)
    assert not promoted.failed, promoted.statuses
    assert canary.current(NAME) is None and set(_outputs(url, 20)) == {"two"}
    assert next(row for row in lambdaml.versions(NAME) if row.current).version == new.version

    third = _version("three").deploy(canary=50)
    time.sleep(2)
    dropped = steady_load(url, {"input": {}}, clients=4, seconds=12, during=lambda: lambdaml.rollback(NAME), at=2)
    assert not dropped.failed, dropped.statuses
    assert canary.current(NAME) is None and set(_outputs(url, 20)) == {"two"}
    assert third.version not in {row.version for row in lambdaml.versions(NAME) if row.current}
    from ray import serve

    assert f"{NAME}.canary" not in serve.status().applications
