"""What a model costs: the estimate a deploy prints, from the node types' hourly prices.

A replica lands on a node type that can hold it (the cheapest, when several can); a node
of that type holds as many replicas as its CPUs, GPUs and memory allow; a model at ``n``
replicas keeps ``ceil(n / per node)`` such nodes up. That is the arithmetic of
docs/cost.md, with its limits: a node shared with other models is counted whole, a
fractional GPU is a fraction of a node only if the replicas of one model fill it, and
prices are what cluster.yaml or lambdaml's list says (``lambdaml.cluster.prices``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lambdaml.placement import ClusterShape, Placement, Resources

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


def estimate(min_replicas: int, max_replicas: int, placement: Placement, shape: ClusterShape) -> Estimate:
    """The cost of running ``min_replicas``..``max_replicas`` replicas placed as ``placement`` on ``shape``."""
    fitting = [
        (name, node, per_node)
        for name, node in shape.node_types.items()
        if (per_node := replicas_per_node(placement.needs, node["resources"])) > 0
    ]
    if not fitting:
        return Estimate(min_replicas, max_replicas)
    priced = [entry for entry in fitting if entry[1].get("price_per_hour") is not None]
    name, node, per_node = min(priced or fitting, key=lambda entry: (entry[1].get("price_per_hour") or 0) / entry[2])
    return Estimate(min_replicas, max_replicas, name, node.get("instance_type"), per_node, node.get("max_workers", 0),
                    node.get("price_per_hour"))
