"""What a node costs an hour: a table of common cloud instance types, which cluster.yaml can override.

Ray's cluster-launcher schema allows no extra keys under a node type, so a cluster.yaml
gives prices in its top-level ``metadata`` (which Ray keeps and does not read)::

    metadata:
      lambdaml:
        prices:            # US dollars per node-hour, by node type name or instance type
          a100: 21.96
          g6.xlarge: 0.80

Without one, the instance type (``node_config.InstanceType`` on AWS, ``machineType`` on
GCP) is looked up in ``LIST_PRICES``. ``lambdaml.cost`` turns these into estimates.
"""

from __future__ import annotations

from typing import Any

# On-demand Linux list prices in US dollars per hour, AWS us-east-1 and GCP us-central1, as
# published in 2024 (GPU included). They are a starting point, not a quote: prices differ by
# region and change (AWS lowered its P4 and P5 prices in 2025), spot and committed-use prices
# are lower. Put your own in cluster.yaml (above); `lambdaml deploy` says which it used.
LIST_PRICES: dict[str, float] = {
    # AWS: CPU
    "m6i.large": 0.096, "m6i.xlarge": 0.192, "m6i.2xlarge": 0.384, "m6i.4xlarge": 0.768, "m6i.8xlarge": 1.536,
    # AWS: T4, A10G, L4
    "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.12xlarge": 5.672, "g5.48xlarge": 16.288,
    "g6.xlarge": 0.8048, "g6.2xlarge": 0.9776, "g6.12xlarge": 4.6016,
    # AWS: 8x A100 40 GB, 8x A100 80 GB, 8x H100
    "p4d.24xlarge": 32.7726, "p4de.24xlarge": 40.9657, "p5.48xlarge": 98.32,
    # GCP: CPU, L4, A100 40 GB, A100 80 GB, H100
    "n2-standard-8": 0.3885, "n2-standard-16": 0.7769,
    "g2-standard-4": 0.7068, "g2-standard-8": 0.8536,
    "a2-highgpu-1g": 3.6731, "a2-highgpu-8g": 29.3879,
    "a2-ultragpu-1g": 5.0688, "a2-ultragpu-8g": 40.5504,
    "a3-highgpu-8g": 88.2522,
}


def instance_type(node_type: dict[str, Any]) -> str | None:
    """The cloud instance type a cluster.yaml node type launches, if it names one."""
    config = node_type.get("node_config") or {}
    return config.get("InstanceType") or config.get("machineType")


def price_per_hour(name: str, node_type: dict[str, Any], overrides: dict[str, Any]) -> float | None:
    """A node type's hourly price: cluster.yaml's, by name or instance type, else the list price; None if unknown."""
    kind = instance_type(node_type)
    for key in (name, kind):
        if key is not None and key in overrides:
            try:
                return float(overrides[key])
            except (TypeError, ValueError):
                raise ValueError(f"metadata.lambdaml.prices.{key} in cluster.yaml must be a number of dollars, "
                                 f"not {overrides[key]!r}") from None
    return LIST_PRICES.get(kind) if kind else None


def overrides_in(config: dict[str, Any]) -> dict[str, Any]:
    """``metadata.lambdaml.prices`` of a cluster.yaml (empty when it has none)."""
    prices = ((config.get("metadata") or {}).get("lambdaml") or {}).get("prices") or {}
    if not isinstance(prices, dict):
        raise ValueError("metadata.lambdaml.prices in cluster.yaml must map node types to dollars per hour")
    return prices
