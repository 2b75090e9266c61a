"""Deploying on a real local Ray: function and class forms, placement, scale to zero."""

import functools
import json
import os
import re
import sys
import time
from pathlib import Path

import httpx
import pytest

import lambdaml
from lambdaml import DeployError, Input, model
from lambdaml.deploy import app_status
from lambdaml.observe import status


@model(name="greet", cpu=0.1, min=0, max=2, scaledown_after=30)
def greet(name: str = Input(description="Who", min_length=1), times: int = Input(default=1, ge=1, le=5)) -> str:
    return " ".join([f"hello {name}"] * times)


@model(name="counter", cpu=0.1, min=1, max=1)
class Counter:
    def setup(self) -> None:
        self.calls = 0
        self.pid = os.getpid()

    def predict(self, step: int = 1) -> dict:
        self.calls += step
        return {"calls": self.calls, "pid": self.pid}


def test_function_deploys_and_answers_locally_remotely_and_by_name(deployed):
    deployment = deployed(greet)
    assert deployment.url.endswith("/greet") and deployment.url.startswith("http://127.0.0.1:")
    assert len(deployment.version) == 20
    assert greet(name="ada") == "hello ada"
    assert greet.remote(name="ada", times=2) == "hello ada hello ada"
    assert lambdaml.run("greet", input={"name": "bob"}) == "hello bob"


def test_redeploying_the_same_code_keeps_the_version(deployed):
    assert deployed(greet).version == greet.deploy().version


def test_class_runs_setup_once_per_replica(deployed):
    deployed(Counter)
    first = Counter.remote(step=1)
    second = Counter.remote(step=2)
    assert second["calls"] == first["calls"] + 2 and first["pid"] == second["pid"] != os.getpid()


def test_teardown_runs_when_a_replica_stops(cluster, tmp_path):
    stopped = tmp_path / "torn-down"

    @model(name="tidy", cpu=0.1, min=1)
    class Tidy:
        def setup(self) -> None:
            self.pid = os.getpid()

        def predict(self) -> int:
            return self.pid

        def teardown(self) -> None:
            stopped.write_text(str(self.pid))  # this machine's disk: the replica runs here

    Tidy.deploy()
    pid = lambdaml.run("tidy", {})
    Tidy.delete()
    deadline = time.monotonic() + 60
    while not stopped.exists():
        assert time.monotonic() < deadline, "teardown() never ran"
        time.sleep(0.25)
    assert stopped.read_text() == str(pid)


def test_failed_setup_is_reported_by_deploy_and_health_check(deployed):
    @model(name="broken-setup", cpu=0.1, min=1, max=1)
    class Broken:
        def setup(self):
            raise RuntimeError("no weights at /models/x.pt")

        def predict(self) -> str:
            return "never"

    with pytest.raises(DeployError, match="no weights at /models/x.pt"):
        deployed(Broken)
    health = httpx.get(f"{lambdaml.cluster.current().http_url}/broken-setup/health-check")
    assert health.status_code == 503 and health.json() == {"status": "SETUP_FAILED"}  # no error text for callers
    assert "no weights at /models/x.pt" in "\n".join(status("broken-setup")["errors"])


def test_fake_a100_gives_the_replica_the_gpu_and_the_accelerator_constraint(deployed):
    @model(name="gpu-probe", gpu="A100", cpu=0.1, min=1, max=1)
    def gpu_probe() -> dict:
        import os

        import ray

        context = ray.get_runtime_context()
        return {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "resources": context.get_assigned_resources()}

    deployed(gpu_probe)
    probe = gpu_probe.remote()
    assert probe["cuda"] == "0"
    assert probe["resources"]["GPU"] == 1
    assert "accelerator_type:A100" in probe["resources"]


def test_scales_to_zero_and_the_first_request_after_succeeds(deployed):
    @model(name="sleeper", cpu=0.1, min=0, max=1, scaledown_after=1)
    def sleeper(x: int = 1) -> int:
        return x * 2

    deployment = deployed(sleeper)
    assert lambdaml.run("sleeper", {"x": 2}) == 4
    deadline = time.monotonic() + 60
    while app_status("sleeper")["replicas"] and time.monotonic() < deadline:
        time.sleep(0.25)
    assert app_status("sleeper")["replicas"] == {}, "did not scale to zero within 60 s"
    started = time.perf_counter()
    response = httpx.post(f"{deployment.url}/predictions", json={"input": {"x": 21}}, timeout=60)
    cold_start = time.perf_counter() - started
    assert response.status_code == 200 and response.json()["output"] == 42
    print(f"cold start from zero replicas: {cold_start:.2f} s")


def test_a_model_no_node_can_hold_fails_fast_in_plain_words(cluster):
    @model(name="too-big", gpu="H100", min=1)
    def too_big() -> str:
        return "never"

    with pytest.raises(DeployError, match=r"accelerator_type:H100=0.001.*no node has that"):
        too_big.deploy(timeout=10)
    with pytest.raises(lambdaml.NotDeployedError):
        app_status("too-big")
    with pytest.raises(lambdaml.NotDeployedError):  # refused before its artifact was stored
        lambdaml.versions("too-big")


@pytest.fixture
def tmp_helper(tmp_path, monkeypatch):
    """A helper module that exists only in a temporary folder, unknown to the cluster."""
    (tmp_path / "lmt_deploy_helper.py").write_text("def greet(name):\n    return f'hi {name} from a helper'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lmt_deploy_helper

    yield lmt_deploy_helper
    sys.modules.pop("lmt_deploy_helper", None)


def test_a_helper_module_only_this_machine_has_ships_with_the_model(deployed, tmp_helper):
    @model(name="helped", cpu=0.1, min=1)
    def helped(name: str) -> str:
        return tmp_helper.greet(name)

    deployed(helped)
    assert helped.remote(name="ada") == "hi ada from a helper"


def test_env_and_secrets_reach_replicas_but_no_listing_artifact_or_log(deployed, monkeypatch, cluster):
    secret = "tok-" + os.urandom(8).hex()
    monkeypatch.setenv("LMT_API_TOKEN", secret)

    @model(name="secretive", cpu=0.1, min=1, env={"LMT_MODE": "strict"}, secrets=["LMT_API_TOKEN"])
    def secretive(fail: bool = False) -> dict:
        import os

        token = os.environ["LMT_API_TOKEN"]
        print("using token", token)
        if fail:
            raise PermissionError(f"the service refused token {token}")
        print("secretive-done")  # once this line is in Ray's log files, the one before it is too
        return {"mode": os.environ["LMT_MODE"], "token_length": len(token)}

    deployment = deployed(secretive)
    prediction = lambdaml.create_prediction("secretive", {})
    assert prediction["output"] == {"mode": "strict", "token_length": len(secret)}
    assert "using token **********" in prediction["logs"]
    failed = lambdaml.create_prediction("secretive", {"fail": True})
    assert failed["status"] == "failed" and "refused token **********" in failed["error"]
    shown = [str(app_status("secretive")), str(lambdaml.versions("secretive")), str(deployment), str(prediction),
             str(failed)]
    assert all(secret not in text for text in shown)
    store = Path(os.environ["LAMBDAML_ARTIFACTS"]) / "secretive"
    assert all(secret.encode() not in path.read_bytes() for path in store.rglob("*") if path.is_file())
    ray_logs = Path(cluster.temp_dir, "ray", "session_latest", "logs")

    def contents(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:  # Ray removed it (monitor.log, once) between the listing and the read
            return b""

    def logged(text: bytes) -> bool:
        return any(text in contents(path) for path in ray_logs.rglob("*") if path.is_file())

    deadline = time.monotonic() + 60
    while not logged(b"secretive-done"):
        assert time.monotonic() < deadline, "the replica's output never reached Ray's log files"
        time.sleep(1)
    assert logged(b"using token **********") and not logged(secret.encode())


def test_a_package_the_cluster_lacks_is_installed_through_runtime_env(deployed):
    @model(name="tabulated", cpu=0.1, min=1, packages=["tabulate==0.9.0"])
    def tabulated() -> str:
        import tabulate

        return tabulate.__version__

    with pytest.raises(ImportError):
        import tabulate  # noqa: F401  (the cluster shares this Python: it must lack tabulate too)
    deployed(tabulated, timeout=240)
    assert tabulated.remote() == "0.9.0"


def test_a_package_pip_cannot_install_stops_the_deploy_before_anything_rolls_out(cluster):
    @model(name="uninstallable", cpu=0.1, min=0, packages=["tabulate==0.0.0.0.1"])
    def uninstallable() -> int:
        return 1

    with pytest.raises(DeployError, match=r"(?s)pip cannot install.*No matching distribution found for tabulate==0.0.0.0.1"):
        uninstallable.deploy()
    with pytest.raises(lambdaml.NotDeployedError):
        app_status("uninstallable")


def _greeter(name: str, greeting: str):
    """A model whose code differs by ``greeting``: each greeting is a version of its own."""

    @model(name=name, cpu=0.1, min=1)
    def greeter() -> str:
        return greeting

    return greeter


def test_redeploy_is_a_no_op_new_code_is_a_new_version_and_rollback_restores(deployed):
    make = functools.partial(_greeter, "versioned")
    first = deployed(make("v1"))
    assert make("v1").deploy().version == first.version
    second = make("v2").deploy()
    assert second.version != first.version and lambdaml.run("versioned", {}) == "v2"
    listed = lambdaml.versions("versioned")
    assert [row.version for row in listed] == [first.version, second.version] and listed[-1].current
    assert lambdaml.rollback("versioned").version == first.version
    assert lambdaml.run("versioned", {}) == "v1"
    assert lambdaml.rollback("versioned", version=second.version).version == second.version
    assert lambdaml.run("versioned", {}) == "v2"
    with pytest.raises(lambdaml.NotDeployedError, match="no version 'nope'"):
        lambdaml.rollback("versioned", version="nope")


def test_artifacts_are_signed_with_the_cluster_key_and_a_changed_one_is_not_rolled_back_to(deployed):
    from lambdaml._signing import KV_KEY, key_id
    from lambdaml.artifacts import ArtifactTampered
    from lambdaml.cluster.ray_internals import kv_get

    key_file = Path(os.environ["LAMBDAML_SIGNING_KEY_FILE"])
    assert key_file.stat().st_mode & 0o777 == 0o600  # written by the keeper at `up`, for restarts
    assert kv_get(KV_KEY) == key_file.read_text().strip()

    make = functools.partial(_greeter, "signed")
    first = deployed(make("v1"))
    make("v2").deploy()
    folder = Path(os.environ["LAMBDAML_ARTIFACTS"]) / "signed" / first.version
    assert (folder / "signatures" / key_id(key_file.read_text().strip().encode())).is_file()
    manifest = folder / "manifest.json"
    changed = json.loads(manifest.read_text())
    changed["requirements"].append("evil @ https://example.com/evil.tar.gz")  # pip would run its setup.py
    manifest.write_text(json.dumps(changed))
    with pytest.raises(ArtifactTampered, match="does not match its signature"):
        lambdaml.rollback("signed")
    assert lambdaml.run("signed", {}) == "v2"  # what runs is untouched


def test_a_python_version_mismatch_stops_the_deploy(cluster, monkeypatch):
    from lambdaml import _installs

    monkeypatch.setattr(_installs, "CLIENT_PYTHON", "3.99")  # pretend this client runs another Python

    @model(name="mismatch", cpu=0.1)
    def mismatch() -> int:
        return 1

    here = "{}.{}".format(*sys.version_info[:2])  # the cluster's, which the test session started
    with pytest.raises(DeployError, match=rf"runs Python 3.99 but the cluster runs Python {re.escape(here)}"):
        mismatch.deploy()
    with pytest.raises(lambdaml.NotDeployedError):
        app_status("mismatch")


@model(name="hw-probe", cpu=0.1, min=1, max=1)
def hw_probe() -> dict:
    import ray

    return ray.get_runtime_context().get_assigned_resources()


def test_hardware_and_scaling_change_without_a_new_version(deployed):
    first = deployed(hw_probe, gpu="A100", max=2)  # over what @model says, for this deploy
    assert hw_probe.remote()["GPU"] == 1
    (row,) = lambdaml.versions("hw-probe")
    assert row.settings["gpu"] == [{"type": "A100", "count": 1}] and row.settings["max"] == 2
    moved = lambdaml.reconfigure("hw-probe", gpu=None, cpu=0.2)  # `lambdaml hardware hw-probe --gpu none --cpu 0.2`
    assert moved.version == first.version
    resources = hw_probe.remote()
    assert "GPU" not in resources and resources["CPU"] == pytest.approx(0.2)
    (row,) = lambdaml.versions("hw-probe")
    assert len(row.deployed_at) == 2 and row.settings["gpu"] == [] and row.settings["max"] == 2  # the rest is kept
    # A bad value is refused with @model's message before anything changes.
    with pytest.raises(lambdaml.ConfigError, match=r"min \(3\) is larger than max \(2\)"):
        lambdaml.reconfigure("hw-probe", min=3)
    with pytest.raises(lambdaml.ConfigError, match="name cannot be changed at deploy time"):
        lambdaml.reconfigure("hw-probe", name="other")
    with pytest.raises(lambdaml.ConfigError, match="Invalid deploy settings:\n  gpu: unknown GPU 'Z80'"):
        hw_probe.deploy(gpu="Z80")
    assert len(lambdaml.versions("hw-probe")[0].deployed_at) == 2
    # The same code deployed again with @model's own settings: still the same version. min == max
    # again, so Serve goes from autoscaling (max=2) to a fixed replica (lambdaml.app._scaling).
    assert hw_probe.deploy().version == first.version and "GPU" not in hw_probe.remote()
