"""Cost estimates from cluster.yaml's node types: which node type, replicas per node, dollars an hour."""

import time
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from lambdaml.cluster.node_types import read_cluster_yaml
from lambdaml.cost import estimate, price_spans, replicas_per_node
from lambdaml.placement import ClusterShape, place
from lambdaml.spec import build_spec

CLUSTER_YAML = Path(__file__).parent.parent / "cluster.yaml"


def line_for(shape: ClusterShape, **spec) -> str:
    model = build_spec(name="m", **spec)
    return estimate(model.min, model.max, place(model, shape).needs, shape).line()


@pytest.fixture(scope="module")
def aws() -> ClusterShape:
    return ClusterShape([], read_cluster_yaml(CLUSTER_YAML)[1])


def test_a_gpu_model_lands_on_its_node_type_and_costs_whole_nodes(aws):
    assert line_for(aws, gpu="A100", min=0, max=50) == (
        "lands on a100 nodes (p4d.24xlarge), 8 replicas per node at $32.77/h: $0.00/h idle (scales to zero), "
        "up to $229.41/h at 50 replicas on 7 a100 nodes"
    )
    assert line_for(aws, gpu="T4", cpu=2, min=1, max=3) == (
        "lands on t4 nodes (g4dn.xlarge), 1 replica per node at $0.53/h: $0.53/h at min (1 replica on 1 node), "
        "up to $1.58/h at 3 replicas on 3 t4 nodes"
    )
    # CPUs bound a node too: 16 CPUs hold 4 replicas of 4 CPUs.
    assert "lands on cpu nodes (m6i.4xlarge), 4 replicas per node" in line_for(aws, cpu=4, max=8)


def test_more_replicas_than_the_cluster_may_add_are_named(aws):
    assert line_for(aws, gpu="A100", max=60).endswith(
        "(the cluster may add only 7 a100 nodes: at most 56 replicas)")


def test_no_price_or_no_node_type_says_what_to_do(aws):
    assert line_for(aws, gpu="H200") == (
        "lands on h200 nodes (p5e.48xlarge), 8 replicas per node; no price known for p5e.48xlarge: "
        "set metadata.lambdaml.prices in cluster.yaml (docs/cost.md)"
    )
    assert line_for(ClusterShape([{"CPU": 2.0}]), cpu=0.5).startswith("no hourly cost known")


def test_prices_in_cluster_yaml_metadata_override_the_list_and_pass_rays_schema(tmp_path):
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    config["metadata"] = {"lambdaml": {"prices": {"a100": 21.96, "p5e.48xlarge": 60}}}
    validate_config(prepare_config(config))  # Ray keeps metadata and does not read it
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    shape = ClusterShape([], read_cluster_yaml(path)[1])
    assert "at $21.96/h" in line_for(shape, gpu="A100") and "at $60.00/h" in line_for(shape, gpu="H200")
    config["metadata"]["lambdaml"]["prices"]["a100"] = "cheap"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="metadata.lambdaml.prices.a100 in cluster.yaml must be a number"):
        read_cluster_yaml(path)


def test_replicas_per_node_counts_every_resource_asked_for():
    node = {"CPU": 16, "GPU": 8, "memory": 64 * 2**30, "accelerator_type:A100": 1}
    assert replicas_per_node({"CPU": 1, "GPU": 1, "accelerator_type:A100": 0.001}, node) == 8
    assert replicas_per_node({"CPU": 1, "memory": 24 * 2**30}, node) == 2
    assert replicas_per_node({"CPU": 0.5, "GPU": 0.25}, node) == 32
    assert replicas_per_node({"CPU": 1, "accelerator_type:H100": 0.001}, node) == 0


def test_replica_time_is_priced_at_its_share_of_a_node_against_keeping_replicas_up(aws):
    now = 1_000_000.0
    spans = [  # one A100 replica 2 h inside the last day, one more that started before it
        {"model": "captioner", "resources": {"CPU": 1.0, "GPU": 1.0, "accelerator_type:A100": 0.001},
         "started_ts": now - 5 * 3600, "seen_ts": now - 3 * 3600},
        {"model": "captioner", "resources": {"CPU": 1.0, "GPU": 1.0, "accelerator_type:A100": 0.001},
         "started_ts": now - 30 * 3600, "seen_ts": now - 23 * 3600},
        {"model": "local", "resources": {"CPU": 0.1}, "started_ts": now - 3600, "seen_ts": now},
    ]
    captioner, local = price_spans(spans, now - 24 * 3600, now, {"captioner": 16}, aws)
    assert captioner.replica_hours == pytest.approx(3.0)
    assert captioner.dollars == pytest.approx(3 * 32.7726 / 8)  # an eighth of a p4d.24xlarge per replica
    assert captioner.kept_at_max == pytest.approx(2 * 32.7726 * 24) and captioner.kept_at_one == pytest.approx(32.7726 * 24)
    assert local.replica_hours == pytest.approx(1.0) and local.dollars == pytest.approx(0.768 / 160)
    unpriced = price_spans(spans[2:], now - 3600, now, {}, ClusterShape([{"CPU": 2.0}]))[0]
    assert unpriced.replica_hours == pytest.approx(1.0) and unpriced.dollars is None and unpriced.kept_at_max is None


def test_lambdaml_cost_counts_a_running_replica_on_the_embedded_cluster(deployed):
    from typer.testing import CliRunner

    from lambdaml import cluster, model
    from lambdaml._settings import CONTROL_APP
    from lambdaml.cli import app

    @model(name="cost-probe", cpu=0.1, min=1, max=1)
    def cost_probe() -> int:
        return 1

    deployed(cost_probe)
    deadline = time.monotonic() + 30  # the replica reports at its first health probe, within a second or two
    while not cluster.call_app(CONTROL_APP, "replica_time", time.time() - 60, "cost-probe"):
        assert time.monotonic() < deadline, "no presence report from the replica"
        time.sleep(0.5)
    result = CliRunner().invoke(app, ["cost", "cost-probe", "--since", "1h"])
    assert result.exit_code == 0, result.output
    assert "cost-probe" in result.output and "no price known for the nodes it ran on" in result.output
    assert CliRunner().invoke(app, ["cost", "--since", "soon"]).exit_code == 1
