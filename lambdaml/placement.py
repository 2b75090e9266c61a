"""Where a model's replicas can run: worked out once per deploy, from the spec and the cluster's shape.

A deploy reads the cluster's shape once (``cluster_shape``: its live nodes and the node
types its autoscaler can add) and ``place`` turns the spec into a ``Placement``: the GPU
picked from the spec's fallbacks and the Ray resources one replica asks for.
``check_fits`` refuses, before anything starts, a model no node could ever hold;
``app.serve_options`` builds Serve's options from the placement; ``observe`` explains a
pending replica with the same ``unschedulable_reason``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lambdaml._resources import GpuRequest
from lambdaml.errors import DeployError
from lambdaml.spec import ModelSpec

DEFAULT_CPUS = 1.0
Resources = dict[str, float]


@dataclass(frozen=True)
class ClusterShape:
    """The nodes a cluster has (their total resources) and the node types it said it can add."""

    nodes: list[Resources] = field(default_factory=list)
    node_types: dict[str, dict[str, Any]] = field(default_factory=dict)  # cluster.node_types.published()

    @property
    def possible(self) -> list[Resources]:
        """Resources of the live nodes, then of each node type the cluster can add."""
        return self.nodes + [node_type["resources"] for node_type in self.node_types.values()]

    @property
    def growing(self) -> bool:
        """Whether the cluster can add nodes we know of (else, embedded, it is fixed; or it grows unseen)."""
        return bool(self.node_types)


def cluster_shape() -> ClusterShape:
    """The connected cluster's shape, read once."""
    import ray

    from lambdaml.cluster.node_types import published

    return ClusterShape([node["Resources"] for node in ray.nodes() if node["Alive"]], published())


@dataclass(frozen=True)
class Placement:
    """What one replica of a model asks Ray for on a given cluster."""

    gpu: GpuRequest | None
    actor_options: dict[str, Any]  # Ray's num_cpus, num_gpus, accelerator_type, memory

    @property
    def needs(self) -> Resources:
        """The Ray resources one replica asks for, as the scheduler sees them."""
        options = self.actor_options
        needs = {"CPU": options["num_cpus"], "GPU": options.get("num_gpus", 0)}
        if "accelerator_type" in options:
            needs[f"accelerator_type:{options['accelerator_type']}"] = 0.001
        if "memory" in options:
            needs["memory"] = options["memory"]
        return {name: amount for name, amount in needs.items() if amount}


def choose_gpu(preferences: tuple[GpuRequest, ...], nodes: list[Resources]) -> GpuRequest | None:
    """The first preferred GPU request some node can hold; else the first.

    ``nodes`` are the resources of the nodes the cluster has or can add
    (``ClusterShape.possible``). When none fits, the first preference is kept: a
    cluster whose node types are unknown may still be able to add it.
    """
    for request in preferences:
        wanted = f"accelerator_type:{request.accelerator_type}"
        if any(node.get(wanted, 0) > 0 and node.get("GPU", 0) >= request.count for node in nodes):
            return request
    return preferences[0] if preferences else None


def place(spec: ModelSpec, shape: ClusterShape) -> Placement:
    """The resources one replica of ``spec`` asks for on a cluster of this shape."""
    options: dict[str, Any] = {"num_cpus": DEFAULT_CPUS if spec.cpu is None else spec.cpu}
    gpu = choose_gpu(spec.gpu, shape.possible)
    if gpu is not None:
        options.update(num_gpus=gpu.count, accelerator_type=gpu.accelerator_type)
    if spec.memory is not None:
        options["memory"] = spec.memory
    return Placement(gpu, options)


def _amount(resource: str, amount: float) -> str:
    """``16.1 GiB`` for Ray's memory resources (bytes), the plain number for the rest."""
    return f"{amount / 2**30:.1f} GiB" if resource in ("memory", "object_store_memory") else f"{amount:g}"


def unschedulable_reason(needs: Resources, nodes: list[Resources]) -> str | None:
    """Why no node of ``nodes`` (their total resources) could ever hold a replica needing ``needs``; None if one can."""
    if any(all(node.get(name, 0) >= amount for name, amount in needs.items()) for node in nodes):
        return None
    wanted = ", ".join(f"{name}={_amount(name, amount)}" for name, amount in needs.items())
    have = "; ".join(
        ", ".join(f"{name}={_amount(name, amount)}" for name, amount in sorted(node.items()) if not name.startswith("node:"))
        for node in nodes
    )
    return f"a replica needs {wanted}, and no node has that (nodes: {have or 'none'})"


def check_fits(name: str, placement: Placement, shape: ClusterShape, embedded: bool) -> None:
    """Fail now, not at the first request, when no node the cluster has or can add could hold a replica.

    Only where the answer is known: the embedded cluster (fixed), or one that published its
    node types; another cluster may grow in ways we cannot see.
    """
    if not (embedded or shape.growing):
        return
    reason = unschedulable_reason(placement.needs, shape.possible)
    if reason is None:
        return
    if shape.growing:
        reason = reason.replace("no node has that", "no node or node type of this cluster has that")
        advice = "add a node type with it to the cluster's config (cluster.yaml), or lower @model(cpu=..., gpu=..., memory=...)."
    else:
        advice = (
            "the embedded local cluster cannot add nodes; lower @model(cpu=..., gpu=..., memory=...), "
            "or deploy to a cluster that has such nodes (set LAMBDAML_ADDRESS)."
        )
    raise DeployError(f"{name!r} cannot run on this cluster: {reason}. To fix it, {advice}")
