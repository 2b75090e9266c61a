"""What a model costs: the estimate a deploy prints, and what it cost, from the node types' hourly prices.

A replica lands on a node type that can hold it (the cheapest, when several can); a node
of that type holds as many replicas as its CPUs, GPUs and memory allow; a model at ``n``
replicas keeps ``ceil(n / per node)`` such nodes up. That is the arithmetic of
docs/cost.md, with its limits: a node shared with other models is counted whole, a
fractional GPU is a fraction of a node only if the replicas of one model fill it, and
prices are what cluster.yaml or lambdaml's list says (``lambdaml.cluster.prices``).

What a model cost (``actual``, ``lambdaml cost``) is its replica-time, reported by every
replica (``lambdaml.serve.presence``), each hour priced at its share of a node
(``price / per node``), against what keeping ``max`` replicas, or one, up would have cost.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from lambdaml.placement import ClusterShape, Resources

PRICES_HINT = "set metadata.lambdaml.prices in cluster.yaml (docs/cost.md)"


@dataclass(frozen=True)
class Estimate:
    """The hourly cost of one model's configuration on one cluster."""

    min_replicas: int
    max_replicas: int
    node_type: str | None = None  # None: no node type the cluster can add holds a replica
    instance_type: str | None = None
    per_node: int = 0
    max_nodes: int = 0  # how many nodes of that type the cluster may add
    price_per_hour: float | None = None  # of one node

    @property
    def per_replica(self) -> float | None:
        """An hour of one replica: its share of a node's price (what the Grafana cost panel adds up)."""
        return None if self.price_per_hour is None else self.price_per_hour / self.per_node

    def nodes_for(self, replicas: int) -> int:
        return math.ceil(replicas / self.per_node) if replicas else 0

    def hourly(self, replicas: int) -> float | None:
        """Dollars an hour with ``replicas`` running; None when the price is unknown."""
        return None if self.price_per_hour is None else self.nodes_for(replicas) * self.price_per_hour

    def line(self) -> str:
        """What ``lambdaml deploy`` prints, e.g. ``$0.00/h idle (scales to zero), up to $229.41/h at 50 replicas on 7 a100 nodes``."""
        if self.node_type is None:
            return "no hourly cost known: it runs on the cluster's own nodes, and no node type the cluster can add holds it"
        kind = f" ({self.instance_type})" if self.instance_type else ""
        where = f"lands on {self.node_type} nodes{kind}, {self.per_node} replica{'s' * (self.per_node != 1)} per node"
        if self.price_per_hour is None:
            return f"{where}; no price known for {self.instance_type or self.node_type}: {PRICES_HINT}"
        low = self.hourly(self.min_replicas)
        idle = ("idle (scales to zero)" if self.min_replicas == 0 else
                f"at min ({self.min_replicas} replica{'s' * (self.min_replicas != 1)} on "
                f"{self.nodes_for(self.min_replicas)} node{'s' * (self.nodes_for(self.min_replicas) != 1)})")
        top = f"up to ${self.hourly(self.max_replicas):,.2f}/h at {self.max_replicas} replicas on " \
              f"{self.nodes_for(self.max_replicas)} {self.node_type} node{'s' * (self.nodes_for(self.max_replicas) != 1)}"
        short = ""
        if self.nodes_for(self.max_replicas) > self.max_nodes:
            short = (f" (the cluster may add only {self.max_nodes} {self.node_type} nodes: at most "
                     f"{self.max_nodes * self.per_node} replicas)")
        return f"{where} at ${self.price_per_hour:,.2f}/h: ${low:,.2f}/h {idle}, {top}{short}"


def replicas_per_node(needs: Resources, node: Resources) -> int:
    """How many replicas needing ``needs`` one node of ``node``'s resources holds (0: not one)."""
    counts = []
    for resource, amount in needs.items():
        if node.get(resource, 0) < amount:
            return 0
        if not resource.startswith("accelerator_type:"):  # a label: any amount of it marks the node
            counts.append(math.floor(node[resource] / amount + 1e-9))
    return min(counts) if counts else 1


def estimate(min_replicas: int, max_replicas: int, needs: Resources, shape: ClusterShape) -> Estimate:
    """The cost of running ``min_replicas``..``max_replicas`` replicas, each needing ``needs``, on ``shape``."""
    fitting = [
        (name, node, per_node)
        for name, node in shape.node_types.items()
        if (per_node := replicas_per_node(needs, node["resources"])) > 0
    ]
    if not fitting:
        return Estimate(min_replicas, max_replicas)
    priced = [entry for entry in fitting if entry[1].get("price_per_hour") is not None]
    name, node, per_node = min(priced or fitting, key=lambda entry: (entry[1].get("price_per_hour") or 0) / entry[2])
    return Estimate(min_replicas, max_replicas, name, node.get("instance_type"), per_node, node.get("max_workers", 0),
                    node.get("price_per_hour"))


@dataclass(frozen=True)
class ModelCost:
    """What one model cost over a period, and what it would have cost kept up."""

    model: str
    replica_hours: float
    dollars: float | None  # None: no price known for the nodes it ran on
    kept_at_max: float | None  # its max replicas up the whole period, whole nodes
    kept_at_one: float | None  # one replica up the whole period (min=1)


def price_spans(spans: list[dict[str, Any]], since_ts: float, until_ts: float, max_replicas: dict[str, int],
                shape: ClusterShape) -> list[ModelCost]:
    """Per model, the replica-hours of ``spans`` inside ``since_ts``..``until_ts`` and their price."""
    hours = (until_ts - since_ts) / 3600
    by_model: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_model.setdefault(span["model"], []).append(span)
    costs = []
    for model, rows in sorted(by_model.items()):
        replica_hours, dollars = 0.0, 0.0  # dollars becomes None at the first span without a price
        for row in rows:
            inside = max(0.0, min(row["seen_ts"], until_ts) - max(row["started_ts"], since_ts)) / 3600
            share = estimate(1, 1, _needs(row["resources"]), shape).per_replica
            replica_hours += inside
            dollars = None if dollars is None or share is None else dollars + inside * share
        latest = estimate(1, max_replicas.get(model, 1), _needs(rows[-1]["resources"]), shape)
        at_max, at_one = latest.hourly(latest.max_replicas), latest.hourly(1)
        costs.append(ModelCost(model, replica_hours, dollars, None if at_max is None else at_max * hours,
                               None if at_one is None else at_one * hours))
    return costs


def _needs(resources: dict[str, float] | None) -> Resources:
    """What a replica held, as placement needs: Ray also lists its memory and custom resources."""
    return {name: amount for name, amount in (resources or {}).items()
            if name in ("CPU", "GPU", "memory") or name.startswith("accelerator_type:")}


def actual(name: str | None = None, since_s: float = 86400.0) -> list[ModelCost]:
    """What each model (or ``name``) cost over the last ``since_s`` seconds, from its replicas' reports."""
    from lambdaml import cluster
    from lambdaml._settings import CONTROL_APP
    from lambdaml.artifacts import ArtifactStore
    from lambdaml.placement import cluster_shape

    cluster.connect()
    until = time.time()
    spans = cluster.call_app(CONTROL_APP, "replica_time", until - since_s, name)
    store = ArtifactStore()
    max_replicas = {}
    for model in {span["model"] for span in spans}:
        version = store.current_version(model)
        settings = store.deployed_settings(model, version) if version else None
        max_replicas[model] = (settings or {}).get("max", 1)
    return price_spans(spans, until - since_s, until, max_replicas, cluster_shape())
