"""Deploying on a real local Ray: function and class forms, placement, scale to zero."""

import os
import time

import httpx
import pytest

import lambdaml
from lambdaml import DeployError, Input, model
from lambdaml.deploy import app_status, choose_gpu, serve_options
from lambdaml._resources import GpuRequest


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
    assert len(deployment.version) == 12
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


def test_failed_setup_is_reported_by_deploy_and_health_check(deployed):
    @model(name="broken-setup", cpu=0.1, min=1, max=1)
    class Broken:
        def setup(self):
            raise RuntimeError("no weights at /models/x.pt")

        def predict(self) -> str:
            return "never"

    with pytest.raises(DeployError, match="no weights at /models/x.pt"):
        deployed(Broken)
    health = httpx.get(f"{lambdaml.cluster.current().http_url}/broken-setup/health-check").json()
    assert health["status"] == "SETUP_FAILED"


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


def test_serve_options_map_the_spec_onto_ray_serve():
    @model(name="big", gpu=["H100:2", "A100:2"], cpu=4, memory="16Gi", min=1, max=50,
           concurrency=4, max_concurrency=8, scaledown_after=120)
    def big(x: int) -> int:
        return x

    options = serve_options(big.spec, available_gpus={"A100"})
    assert options["max_ongoing_requests"] == 8
    assert options["ray_actor_options"] == {
        "num_cpus": 4, "num_gpus": 2, "accelerator_type": "A100", "memory": 16 * 1024**3,
    }
    scaling = options["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"], scaling["target_ongoing_requests"]) == (1, 50, 4)
    assert scaling["downscale_delay_s"] == scaling["downscale_to_zero_delay_s"] == 120


def test_gpu_fallbacks_pick_the_first_type_the_cluster_has():
    preferences = (GpuRequest("H100"), GpuRequest("A100"))
    assert choose_gpu(preferences, {"A100"}) == GpuRequest("A100")
    assert choose_gpu(preferences, {"H100", "A100"}) == GpuRequest("H100")
    assert choose_gpu(preferences, set()) == GpuRequest("H100")  # an autoscaler may add one
    assert choose_gpu((), {"A100"}) is None
