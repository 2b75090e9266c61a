"""cluster.yaml: valid for Ray's cluster launcher, and every @model(gpu=...) value has a node type."""

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from lambdaml._resources import GPU_TYPES

CLUSTER_YAML = Path(__file__).parent.parent / "cluster.yaml"


def load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_rays_own_schema():
    validate_config(prepare_config(load()))  # Ray's defaults filled in, as `ray up` does, then its JSON schema


def test_the_head_takes_no_replicas_and_gpu_workers_start_at_zero():
    config = load()
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["CPU"] == 0
    for name, node_type in types.items():
        if "GPU" in node_type.get("resources", {}):
            assert node_type["min_workers"] == 0 and node_type["max_workers"] > 0, name


def test_every_gpu_name_maps_to_a_node_type():
    advertised = {
        resource.split(":", 1)[1]
        for node_type in load()["available_node_types"].values()
        for resource in node_type.get("resources", {})
        if resource.startswith("accelerator_type:")
    }
    assert set(GPU_TYPES.values()) <= advertised


def test_dashboard_and_metrics_ports_are_set():
    head_start = " ".join(load()["head_start_ray_commands"])
    assert "--dashboard-port=8265" in head_start and "--metrics-export-port=8080" in head_start


def test_the_head_publishes_its_node_types_for_deploys():
    last = load()["head_start_ray_commands"][-1]
    assert "lambdaml --address 127.0.0.1:6379 node-types ~/ray_bootstrap_config.yaml" in last
