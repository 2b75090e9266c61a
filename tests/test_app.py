"""The Serve application of an artifact: options from the spec and its placement, runtime_env."""

import os
import re
import time

import httpx
import pytest
from pydantic import ValidationError

import lambdaml
import lambdaml.artifacts
from lambdaml import model
from lambdaml.app import OVERFLOW_MARGIN, AppArgs, serve_options
from lambdaml.placement import ClusterShape, place


def test_serve_options_map_the_spec_onto_ray_serve():
    @model(name="big", gpu=["H100:2", "A100:2"], cpu=4, memory="16Gi", min=1, max=50,
           concurrency=4, max_concurrency=8, queue=10, scaledown_after=120)
    def big(x: int) -> int:
        return x

    a100_node = {"CPU": 96.0, "GPU": 8.0, "accelerator_type:A100": 1.0}
    options = serve_options(big.spec, place(big.spec, ClusterShape([a100_node])))
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


def test_a_fixed_size_model_gets_its_replicas_without_autoscaling():
    """min == max: nothing to decide, so no replica records and pushes its load four times a second."""

    @model(name="fixed", min=2, max=2)
    def fixed(x: int) -> int:
        return x

    options = serve_options(fixed.spec, place(fixed.spec, ClusterShape()))
    assert options["num_replicas"] == 2
    assert "autoscaling_config" not in options
    scaled = serve_options(fixed.spec.with_settings({"min": 0}), place(fixed.spec, ClusterShape()))
    assert "num_replicas" not in scaled and scaled["autoscaling_config"]["min_replicas"] == 0


def test_serve_access_log_only_when_debugging():
    """Each prediction has its record; the per-request access line is for LAMBDAML_DEBUG=1 deploys."""

    @model(name="quiet-log")
    def quiet_log() -> str:
        return ""

    placement = place(quiet_log.spec, ClusterShape())
    assert serve_options(quiet_log.spec, placement)["logging_config"] == {"enable_access_log": False}
    assert serve_options(quiet_log.spec, placement, debug=True)["logging_config"] == {"enable_access_log": True}


def test_only_missing_packages_become_a_runtime_env():
    @model(name="tab")
    def tab() -> str:
        return ""

    options = serve_options(tab.spec, place(tab.spec, ClusterShape()), install=["tabulate==0.9.0"])
    assert options["ray_actor_options"]["runtime_env"] == {"pip": {"packages": ["tabulate==0.9.0"], "pip_check": False}}


def test_builder_args_are_validated():
    assert AppArgs.model_validate({"artifact": "s3://b/m/v"}).install is None
    with pytest.raises(ValidationError, match="secret"):
        AppArgs.model_validate({"artifact": "s3://b/m/v", "secret": {}})


def test_builder_deploys_a_stored_artifact_from_its_url_alone(deployed, cluster, monkeypatch):
    """What a Serve config file (import_path: lambdaml.app:build, args: {artifact: URL}) does."""
    from ray import serve

    from lambdaml.app import build
    from lambdaml.deploy import delete

    token = "decl-" + os.urandom(8).hex()
    monkeypatch.setenv("LMT_DECLARED_TOKEN", token)

    @model(name="declared", cpu=0.1, min=1, env={"LMT_GREETING": "hej"}, secrets=["LMT_DECLARED_TOKEN"])
    def declared(name: str) -> str:
        import os

        print("token", os.environ["LMT_DECLARED_TOKEN"])
        return f"{os.environ['LMT_GREETING']} {name} {len(os.environ['LMT_DECLARED_TOKEN'])}"

    deployed(declared)
    artifact = next(v for v in lambdaml.versions("declared") if v.current)
    store = lambdaml.artifacts.ArtifactStore()
    delete("declared")
    # No secret values in the args: the replica reads them from its own environment, as from a
    # Kubernetes Secret. Here the builder's ``environment`` puts it there.
    args = {"artifact": store.artifact_url("declared", artifact.version), "environment": {"LMT_DECLARED_TOKEN": token},
            "price_per_hour": 0.25}
    handle = serve.run(build(args), name="declared", route_prefix="/declared")
    prediction = handle.predict.remote({"name": "ada"}).result()["prediction"]
    assert prediction["output"] == f"hej ada {len(token)}"
    assert token not in prediction["logs"] and "token **********" in prediction["logs"]
    # The replica's share of its node's price, for the Grafana cost panel (docs/cost.md).
    deadline = time.monotonic() + 30
    while not re.search(r'ray_lambdaml_replica_dollars_per_hour\{[^}]*model="declared"[^}]*\} 0\.25', httpx.get(cluster.metrics_url).text):
        assert time.monotonic() < deadline, "the price gauge was not exported"
        time.sleep(1)
