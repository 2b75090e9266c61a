"""The autoscaling policy of every model: Serve's own, plus the predictions no request waits for.

Serve's default policy counts requests in flight. An async prediction (or a
sync one past its hold, answered ``202``) runs in its replica after its
request has ended, so Serve would see an idle replica and scale it away. Each
replica reports those as the custom metric ``background``
(``ModelServer.record_autoscaling_stats``); this policy adds them to the
request count. Serve still applies min/max, the delays and the cold-start
fast path around it (``ray.serve.autoscaling_policy``, Ray 2.60).
"""

from __future__ import annotations

from typing import Any

POLICY = "lambdaml.serve.autoscaling:policy"  # import path, as Serve's controller loads it


def policy(ctx: Any) -> tuple[float, dict[str, Any]]:
    """Replicas wanted: (requests in flight + background predictions) / target per replica."""
    if ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, {}
    background = sum((ctx.aggregated_metrics or {}).get("background", {}).values())
    load = ctx.total_num_requests + background
    return load / ctx.config.get_target_ongoing_requests(), {}
