"""Node types: read from cluster.yaml, published for deploys, and a simulated autoscaling cluster built from them.

The simulated cluster is a second embedded cluster with its own temp dir and
loopback ports, driven only through the ``lambdaml`` command and HTTP, so it
never touches the session's shared head. Its node types are cluster.yaml's
own (the head, the CPU type and the A100 type), so the test shows that those
node types work, not merely some test configuration.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml
from ray.autoscaler._private.util import validate_config

from lambdaml.cluster.head import free_port
from lambdaml.cluster.node_types import fake_provider_config, read_cluster_yaml

CLUSTER_YAML = Path(__file__).parent.parent / "cluster.yaml"
KEPT_TYPES = ("head", "cpu", "a100")  # no H100 type: gpu=["H100", "A100"] must fall back to A100
IDLE_TIMEOUT_S = 5


def test_cluster_yaml_node_types_are_read_with_their_resources():
    head, types = read_cluster_yaml(CLUSTER_YAML)
    assert head == {"CPU": 0}
    assert types["a100"] == {
        "resources": {"CPU": 96, "GPU": 8, "accelerator_type:A100": 1, "accelerator_type:A100-40G": 1},
        "max_workers": 7,
        "instance_type": "p4d.24xlarge",
        "price_per_hour": 32.7726,  # lambdaml's list price: cluster.yaml sets none (tests/test_cost.py)
    }
    assert "head" not in types


def test_a_file_that_is_not_a_cluster_config_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: x\n")
    with pytest.raises(ValueError, match="available_node_types"):
        read_cluster_yaml(bad)


def test_the_simulated_cluster_config_passes_rays_schema():
    head, types = read_cluster_yaml(CLUSTER_YAML)
    config = fake_provider_config(types, head, "127.0.0.1:6379", idle_timeout_s=5)
    validate_config(config)  # prepare_config would need the example.yaml the Ray wheel leaves out
    assert config["available_node_types"]["a100"]["min_workers"] == 0
    assert config["idle_timeout_minutes"] == pytest.approx(5 / 60)


# ------------------------------------------------------------------ the simulated cluster

MODELS = '''
from lambdaml import model


def where() -> dict:
    import ray
    context = ray.get_runtime_context()
    return {"node": context.get_node_id(), "gpus": context.get_accelerator_ids()["GPU"]}


@model(name="captioner", gpu="A100", min=0, max=2, cpu=1, scaledown_after=2)
def captioner(x: int) -> dict:
    return {"x": x, **where()}


@model(name="fallback", gpu=["H100", "A100"], min=0, max=1, cpu=1, scaledown_after=2)
def fallback(x: int) -> dict:
    return {"x": x, **where()}
'''

H100_ONLY = '''
from lambdaml import model


@model(name="needs-h100", gpu="H100")
def needs_h100(x: int) -> int:
    return x
'''


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A simulated cluster with cluster.yaml's head, CPU and A100 node types; yields (env, cli runner)."""
    workdir = tmp_path_factory.mktemp("simulated")
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    config["available_node_types"] = {k: v for k, v in config["available_node_types"].items() if k in KEPT_TYPES}
    config["metadata"] = {"lambdaml": {"prices": {"a100": 21.96}}}  # what this cluster pays, over the list price
    trimmed = workdir / "cluster.yaml"
    trimmed.write_text(yaml.safe_dump(config, sort_keys=False))
    temp_dir = Path(tempfile.gettempdir()) / f"lms-{os.getpid()}"  # short: socket paths are capped
    env = {
        **os.environ,
        "LAMBDAML_TEMP_DIR": str(temp_dir),
        "LAMBDAML_ARTIFACTS": str(temp_dir / "artifacts"),
        "LAMBDAML_DATABASE_URL": f"sqlite:///{workdir / 'records.db'}",
        "LAMBDAML_RAY_PORT": str(free_port()),
        "LAMBDAML_HTTP_PORT": str(free_port()),
        "LAMBDAML_DASHBOARD_PORT": str(free_port()),
    }

    def lambdaml(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lambdaml.cli", *args], env=env, capture_output=True,
                              text=True, timeout=timeout, cwd=workdir)

    started = lambdaml("up", "--simulate", str(trimmed), "--idle-timeout", str(IDLE_TIMEOUT_S))
    try:
        assert started.returncode == 0, started.stderr
        assert "Simulated cluster" in started.stdout
        (workdir / "models.py").write_text(MODELS)
        (workdir / "h100.py").write_text(H100_ONLY)
        yield env, lambdaml
    finally:
        lambdaml("down")


def _alive_nodes(env: dict[str, str]) -> list[SimpleNamespace]:
    """The simulated cluster's live nodes, from its dashboard's state API, with that cluster's token."""
    token = (Path(env["LAMBDAML_TEMP_DIR"]) / "ray-auth-token").read_text().strip()
    response = httpx.get(f"http://127.0.0.1:{env['LAMBDAML_DASHBOARD_PORT']}/api/v0/nodes",
                         params={"detail": "1", "limit": "100"}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    response.raise_for_status()
    return [SimpleNamespace(**node) for node in response.json()["data"]["result"]["result"] if node["state"] == "ALIVE"]


def _predict(http_url: str, name: str, x: int) -> dict:
    response = httpx.post(f"{http_url}/{name}/predictions", json={"input": {"x": x}}, timeout=180)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded", response.json()
    return response.json()["output"]


def test_a100_node_is_added_on_demand_and_removed_when_idle(simulated):
    env, lambdaml = simulated
    http_url = f"http://127.0.0.1:{env['LAMBDAML_HTTP_PORT']}"
    (head,) = _alive_nodes(env)  # no worker node yet
    assert head.is_head_node and head.resources_total.get("CPU", 0) == 0  # the head takes no replicas

    deployed = lambdaml("deploy", "models.py")
    assert deployed.returncode == 0, deployed.stderr
    assert "0 (scales up on demand)" in deployed.stdout
    assert ("captioner: lands on a100 nodes (p4d.24xlarge), 8 replicas per node at $21.96/h: $0.00/h idle "
            "(scales to zero), up to $21.96/h at 2 replicas on 1 a100 node") in " ".join(deployed.stdout.split())
    assert len(_alive_nodes(env)) == 1  # min=0: deploying adds nothing

    # 1-3: the first request makes the autoscaler add an A100 node; the replica runs there and answers.
    output = _predict(http_url, "captioner", 7)
    nodes = {node.node_id: node for node in _alive_nodes(env)}
    assert output["x"] == 7 and output["node"] != head.node_id
    assert nodes[output["node"]].resources_total["accelerator_type:A100"] == 1
    assert output["gpus"] == ["0"]  # Ray gave the replica one of the fake node's GPUs
    # Its record was written like any other, from the fake node, by the control application on the head.
    deadline = time.monotonic() + 10  # records are sent in batches, every 0.1 s
    while not (records := httpx.get(f"{http_url}/v1/predictions", params={"model": "captioner"}, timeout=30).json()["results"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert [(r["status"], r["output"]) for r in records] == [("succeeded", output)]

    # The fallback list: no H100 type exists, so gpu=["H100", "A100"] is served by an A100 node.
    fallback = _predict(http_url, "fallback", 8)
    assert fallback["node"] in {node.node_id for node in _alive_nodes(env)}
    assert fallback["node"] != head.node_id

    # 4: idle, the replicas go to zero, then the node is removed (idle_timeout 5 s, plus Ray's reaction).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_alive_nodes(env)) > 1:
        time.sleep(2)
    assert [node.node_id for node in _alive_nodes(env)] == [head.node_id]
    status = lambdaml("status", "captioner")
    assert status.returncode == 0, status.stderr
    assert "0 replicas" in status.stdout or "no replicas" in status.stdout.lower(), status.stdout
    # 5: what it cost: its replica's seconds on the A100 node, at an eighth of the node's $21.96/h.
    spent = lambdaml("cost", "captioner", "--since", "1h")
    assert spent.returncode == 0, spent.stderr
    (row,) = [line for line in spent.stdout.splitlines() if "captioner" in line]
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[1] != "0:00:00" and cells[2].startswith("$") and cells[3] == "$21.96"  # max=2: one node for the hour


def test_a_dry_run_prints_placement_and_cost_for_other_settings_and_deploys_nothing(simulated):
    _, lambdaml = simulated
    planned = lambdaml("deploy", "h100.py", "--gpu", "A100", "--max", "50", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    shown = " ".join(planned.stdout.split())
    assert "needs-h100: A100 x1, 0-50 replicas" in shown
    assert "$0.00/h idle (scales to zero), up to $153.72/h at 50 replicas on 7 a100 nodes" in shown
    assert "Nothing was deployed (--dry-run)." in shown
    on_cpus = lambdaml("deploy", "h100.py", "--gpu", "none", "--min", "1", "--max", "20", "--dry-run")
    assert ("lands on cpu nodes (m6i.4xlarge), 16 replicas per node at $0.77/h: $0.77/h at min (1 replica on 1 node), "
            "up to $1.54/h at 20 replicas on 2 cpu nodes") in " ".join(on_cpus.stdout.split())
    assert lambdaml("status", "needs-h100").returncode == 1  # nothing was deployed


def test_a_gpu_no_node_type_has_is_refused_at_deploy_time(simulated):
    _, lambdaml = simulated
    # What cluster.yaml's head runs after `ray start` (the simulated cluster already did the same).
    published = lambdaml("node-types", "cluster.yaml")
    assert published.returncode == 0, published.stderr
    assert "This cluster can add: cpu, a100." in published.stdout
    refused = lambdaml("deploy", "h100.py", timeout=120)  # refused at once: a wait for a node would time out
    assert refused.returncode == 1
    message = " ".join(refused.stderr.split())
    assert "'needs-h100' cannot run on this cluster" in message
    assert "accelerator_type:H100" in message and "no node or node type of this cluster has that" in message
    assert "Traceback" not in refused.stderr
