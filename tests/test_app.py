"""The Serve application of an artifact: options from the spec, runtime_env, placement checks."""

import pytest
from pydantic import ValidationError

import lambdaml
import lambdaml.artifacts
from lambdaml import model
from lambdaml._resources import GpuRequest
from lambdaml.app import OVERFLOW_MARGIN, AppArgs, choose_gpu, replica_needs, serve_options, unschedulable_reason


def test_serve_options_map_the_spec_onto_ray_serve():
    @model(name="big", gpu=["H100:2", "A100:2"], cpu=4, memory="16Gi", min=1, max=50,
           concurrency=4, max_concurrency=8, queue=10, scaledown_after=120)
    def big(x: int) -> int:
        return x

    a100_node = {"CPU": 96.0, "GPU": 8.0, "accelerator_type:A100": 1.0}
    options = serve_options(big.spec, [a100_node])
    # 8 run at once, 10 more queue where the autoscaler sees them, and the replica answers a margin past that with 503
    assert options["max_ongoing_requests"] == 8 + 10 + OVERFLOW_MARGIN
    assert options["backpressure_config"] == {"status_code": 503, "retry_after_s": 1}
    assert options["ray_actor_options"] == {
        "num_cpus": 4, "num_gpus": 2, "accelerator_type": "A100", "memory": 16 * 1024**3,
    }
    scaling = options["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"], scaling["target_ongoing_requests"]) == (1, 50, 4)
    assert scaling["downscale_delay_s"] == scaling["downscale_to_zero_delay_s"] == 120
    assert "runtime_env" not in options["ray_actor_options"]  # nothing to install: warm workers can be reused


def test_only_missing_packages_become_a_runtime_env():
    @model(name="tab")
    def tab() -> str:
        return ""

    options = serve_options(tab.spec, install=["tabulate==0.9.0"])
    assert options["ray_actor_options"]["runtime_env"] == {"pip": {"packages": ["tabulate==0.9.0"], "pip_check": False}}


def test_builder_args_are_validated():
    assert AppArgs.model_validate({"artifact": "s3://b/m/v"}).install is None
    with pytest.raises(ValidationError, match="secret"):
        AppArgs.model_validate({"artifact": "s3://b/m/v", "secret": {}})


def _gpu_node(accelerator: str, gpus: float = 1.0) -> dict[str, float]:
    return {"CPU": 8.0, "GPU": gpus, f"accelerator_type:{accelerator}": 1.0}


def test_gpu_fallbacks_pick_the_first_request_a_node_can_hold():
    preferences = (GpuRequest("H100"), GpuRequest("A100"))
    assert choose_gpu(preferences, [_gpu_node("A100")]) == GpuRequest("A100")
    assert choose_gpu(preferences, [_gpu_node("A100"), _gpu_node("H100")]) == GpuRequest("H100")
    assert choose_gpu(preferences, []) == GpuRequest("H100")  # node types unknown: an autoscaler may add one
    assert choose_gpu((), [_gpu_node("A100")]) is None
    # The count matters too: no node has 16 H100s, so the A100 fallback is taken.
    assert choose_gpu((GpuRequest("H100", 16), GpuRequest("A100")), [_gpu_node("H100", 8), _gpu_node("A100")]) == (
        GpuRequest("A100")
    )


def test_unschedulable_reason_compares_needs_with_each_node():
    node = {"CPU": 2.0, "GPU": 1.0, "accelerator_type:A100": 1.0, "memory": 8e9, "node:127.0.0.1": 1.0}
    gpu_replica = replica_needs({"num_cpus": 1.0, "num_gpus": 1, "accelerator_type": "A100"})
    assert gpu_replica == {"CPU": 1.0, "GPU": 1, "accelerator_type:A100": 0.001}
    assert unschedulable_reason(gpu_replica, [node]) is None
    reason = unschedulable_reason(replica_needs({"num_cpus": 4.0}), [node])
    assert reason.startswith("a replica needs CPU=4") and "node:" not in reason
    too_much = unschedulable_reason(replica_needs({"num_cpus": 1.0, "memory": 16 * 2**30}), [node])
    assert "memory=16.0 GiB" in too_much and "memory=7.5 GiB" in too_much  # bytes, said for people


def test_builder_deploys_a_stored_artifact_from_its_url_alone(deployed, cluster):
    """What a Serve config file (import_path: lambdaml.app:build, args: {artifact: URL}) does."""
    from ray import serve

    from lambdaml.app import build
    from lambdaml.deploy import delete

    @model(name="declared", cpu=0.1, min=1, env={"LMT_GREETING": "hej"})
    def declared(name: str) -> str:
        import os

        return f"{os.environ['LMT_GREETING']} {name}"

    deployed(declared)
    artifact = next(v for v in lambdaml.versions("declared") if v.current)
    store = lambdaml.artifacts.ArtifactStore()
    delete("declared")
    handle = serve.run(build({"artifact": store.artifact_url("declared", artifact.version)}), name="declared",
                       route_prefix="/declared")
    assert handle.predict.remote({"name": "ada"}).result()["prediction"]["output"] == "hej ada"
