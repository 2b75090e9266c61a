"""Node types a cluster can add, and the simulated cluster built from them.

Ray's autoscaler knows which node types it may launch but does not tell
drivers. A deploy needs to know: to pick a GPU from a fallback list by what the
cluster can add (not only by what is running now), and to refuse a model that
no node type can ever hold instead of leaving its requests waiting forever.
So the node types of a cluster-launcher YAML (``cluster.yaml``) are published
in Ray's key-value store under lambdaml's own key, by the cluster's start-up:
the simulated cluster publishes them itself, and on a real cluster one line of
``head_start_ray_commands`` does (``lambdaml node-types ...``).

The simulated cluster is Ray's fake multi-node provider (what
``ray.cluster_utils.AutoscalingCluster`` uses) with the YAML's worker types:
every node it "launches" is one more raylet on this machine, with the
resources the node type declares, fake GPUs included.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lambdaml._settings import ClusterSettings
from lambdaml.cluster.prices import instance_type, overrides_in, price_per_hour

_KV_NAMESPACE = "lambdaml"
_KV_KEY = "node_types"
# Each simulated node is a raylet with its own object store; keep that small.
_FAKE_OBJECT_STORE_BYTES = 100 * 1024 * 1024

# name -> {"resources": {...}, "max_workers": n, "instance_type": str | None, "price_per_hour": float | None}
NodeTypes = dict[str, dict[str, Any]]


def read_cluster_yaml(path: str | Path) -> tuple[dict[str, float], NodeTypes]:
    """The head's resources and the worker node types of a cluster-launcher YAML."""
    config = yaml.safe_load(Path(path).read_text())
    try:
        types = config["available_node_types"]
        head_type = config["head_node_type"]
        head = dict(types[head_type].get("resources", {}))
    except (KeyError, TypeError):
        raise ValueError(
            f"{path} is not a Ray cluster-launcher config: it needs available_node_types and a head_node_type "
            "naming one of them"
        ) from None
    prices = overrides_in(config)
    workers = {
        name: {
            "resources": dict(node.get("resources", {})),
            "max_workers": int(node.get("max_workers", 0)),
            "instance_type": instance_type(node),
            "price_per_hour": price_per_hour(name, node, prices),  # lambdaml.cost
        }
        for name, node in types.items()
        if name != head_type
    }
    return head, workers


def publish(node_types: NodeTypes) -> None:
    """Record the node types the connected cluster can add (this process must be a Ray driver)."""
    from lambdaml.cluster.ray_internals import kv_put

    kv_put(_KV_KEY, json.dumps(node_types))


def published() -> NodeTypes:
    """The node types the connected cluster said it can add; empty when it said nothing."""
    from lambdaml.cluster.ray_internals import kv_get

    raw = kv_get(_KV_KEY)
    return json.loads(raw) if raw else {}


def fake_provider_config(node_types: NodeTypes, head: dict[str, float], gcs_address: str, idle_timeout_s: float) -> dict:
    """An autoscaling config for Ray's fake multi-node provider with these node types.

    ``gcs_address`` makes new nodes join our head on its loopback port (the
    provider's default is the machine's address and port 6379).
    """
    available = {
        name: {
            "resources": {**node["resources"], "object_store_memory": _FAKE_OBJECT_STORE_BYTES},
            "node_config": {},
            "min_workers": 0,
            "max_workers": node["max_workers"],
        }
        for name, node in node_types.items()
    }
    available["ray.head.default"] = {"resources": head, "node_config": {}, "max_workers": 0}
    return {
        "cluster_name": "lambdaml-simulated",
        "max_workers": sum(node["max_workers"] for node in node_types.values()),
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": available,
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "auth": {},
        "docker": {},
        **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                               "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
                               "cluster_synced_files", "rsync_exclude", "rsync_filter")},
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


@dataclass(frozen=True)
class Simulation:
    """A simulated multi-node cluster: the node types of ``cluster_yaml``, launched as local fake nodes."""

    cluster_yaml: Path
    idle_timeout_s: float = 60.0  # idle seconds before a node is removed (cluster.yaml's idle_timeout_minutes is for clouds)

    def prepare(self, settings: ClusterSettings, environment: dict[str, str]) -> tuple[dict[str, float], Path, Path]:
        """Write the fake provider's config and the node types; returns the head's resources and both paths."""
        head, node_types = read_cluster_yaml(self.cluster_yaml)
        head.setdefault("GPU", 0)  # exactly the YAML's head: no fake GPU from LAMBDAML_NUM_GPUS
        config = fake_provider_config(node_types, head, f"127.0.0.1:{settings.ray_port}", self.idle_timeout_s)
        config_path = settings.temp_dir / "simulated-cluster.json"
        config_path.write_text(json.dumps(config))
        types_path = settings.temp_dir / "node-types.json"
        types_path.write_text(json.dumps(node_types))
        environment.update(
            {
                "RAY_FAKE_CLUSTER": "1",  # Ray's fake provider refuses to run without it
                "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # the autoscaler acts every second, not every 5
                # A fake 96-CPU node would start 96 worker processes at once on this machine's few
                # real cores, starving every replica's health check; start as many as there are cores.
                "RAY_worker_maximum_startup_concurrency": str(os.cpu_count() or 1),
            }
        )
        return head, config_path, types_path
