"""The deploy stage, Serve side: one artifact as a Ray Serve application.

``build`` is a Serve *application builder*: Serve config files and KubeRay
``RayService`` objects can deploy an artifact with
``import_path: lambdaml.app:build`` and ``args: {artifact: <URL>}`` (see
docs/declarative-deploys.md); ``lambdaml.deploy`` calls the same function.
This is the only module that translates ``@model`` parameters into Ray Serve
options; read ``serve_options`` to see exactly what a spec means to Serve.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lambdaml.serve.autoscaling import POLICY
from lambdaml._settings import SHUTDOWN_WAIT_S, cancel_grace
from lambdaml.artifacts import load_manifest
from lambdaml._installs import installed_here, missing, runtime_env
from lambdaml.placement import ClusterShape, Placement, cluster_shape, place
from lambdaml.spec import ModelSpec

# Autoscaling metrics every 0.25 s over a 2 s window, instead of Serve's 10 s
# push and 30 s window: a request arriving at zero replicas gets its answer in
# ~1 s instead of 6-12 s (bench/README.md), and idle replicas go away on time.
METRICS_INTERVAL_S = 0.25
LOOK_BACK_PERIOD_S = 2.0
UPSCALE_DELAY_S = 0.0
OVERFLOW_MARGIN = 16  # requests past a replica's queue that still reach it, to be told 503 in JSON


class AppArgs(BaseModel):
    """The ``args`` of ``lambdaml.app:build``."""

    model_config = ConfigDict(extra="forbid")

    artifact: str = Field(description="URL of the artifact folder, e.g. s3://bucket/lambdaml/hello/3f2a9c81d0e4b7a65c21")
    install: list[str] | None = Field(
        default=None, description="Packages to install; by default, those the builder's Python lacks"
    )
    secrets: dict[str, str] | None = Field(
        default=None, description="Secret values; by default the replicas read them from their environment"
    )
    environment: dict[str, str] = Field(
        default_factory=dict, description="Storage credentials and file settings for the replicas' environment"
    )
    debug: bool = Field(default=False, description="Add tracebacks to failed predictions, and Serve's access log to the replicas' logs")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Hardware and scaling over the model's own, e.g. {gpu: H100, min: 1} (what `lambdaml deploy --gpu` sets)",
    )
    price_per_hour: float | None = Field(
        default=None, description="A replica's share of its node's hourly price, shown by the Grafana cost panel"
    )


def serve_options(spec: ModelSpec, placement: Placement, install: list[str] = (), debug: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``serve.deployment(...).options()`` that implement ``spec`` where ``placement`` says
    (``debug``: deployed with ``LAMBDAML_DEBUG=1``)."""
    actor_options = dict(placement.actor_options)
    env = runtime_env(list(install))
    if env is not None:  # only then: a replica without one reuses a warm worker
        actor_options["runtime_env"] = env
    return {
        "name": spec.name,
        # What runs at once plus @model(queue=...): the replica queues the extra requests itself
        # (ModelRuntime's semaphore), where Serve's autoscaler counts them (requests that wait in
        # HAProxy are invisible to it: a model at its limit would never scale up), and answers the
        # ones past the queue with a JSON 503 (lambdaml.serve.server). The margin lets those reach it;
        # Serve's own bound, behind it, only catches a burst that outruns the replica's answers.
        "max_ongoing_requests": spec.running_limit + spec.queue + OVERFLOW_MARGIN,
        "max_queued_requests": OVERFLOW_MARGIN,
        "backpressure_config": {"status_code": 503, "retry_after_s": 1},
        "ray_actor_options": actor_options,
        **_scaling(spec),
        # A stopping replica (scale-down, rollout) first lets its predictions finish: those of
        # requests (Serve waits for them) and async ones (ModelServer.__del__ waits for them).
        "graceful_shutdown_timeout_s": (spec.timeout or SHUTDOWN_WAIT_S) + cancel_grace() + 10,
        # A predict that ignores its cancel makes check_health fail: replaced within seconds, not 30.
        "health_check_period_s": 1.0,
        # Serve's access log (a line per request in the replica's log) only when debugging: each prediction
        # has its record (status, times, caller), `lambdaml logs` shows the model's own output, and the
        # line cost ~0.018 ms of replica CPU a request, ~1.5% of a trivial model's throughput (bench/README.md).
        "logging_config": {"enable_access_log": debug},
    }


def _scaling(spec: ModelSpec) -> dict[str, Any]:
    """Serve's autoscaling between ``min`` and ``max``, or a fixed number of replicas when they are equal.

    Fixed, as a Serve user would write it: an autoscaling replica records and pushes its load four
    times a second, which cost an idle replica ~7.6 ms of CPU a second here (bench/README.md,
    stop 32) for a decision that can only keep the count where it is.
    """
    if spec.min == spec.max:
        return {"num_replicas": spec.min}
    batch_size = spec.batch.max_size if spec.batch else 0  # a batch can only fill if that many requests get in
    return {
        "autoscaling_config": {
            "min_replicas": spec.min,
            "max_replicas": spec.max,
            "target_ongoing_requests": max(spec.concurrency, batch_size),
            "metrics_interval_s": METRICS_INTERVAL_S,
            "look_back_period_s": LOOK_BACK_PERIOD_S,
            "upscale_delay_s": UPSCALE_DELAY_S,
            "downscale_delay_s": spec.scaledown_after,
            "downscale_to_zero_delay_s": spec.scaledown_after,
            # Serve's policy plus the async predictions it cannot see (they run after their request ended).
            "policy": {"policy_function": POLICY},
        },
    }


def build(args: dict[str, Any]) -> Any:
    """Serve application builder: the model stored at ``args["artifact"]`` as an application."""
    return build_with_fingerprint(args)[0]


def build_with_fingerprint(args: dict[str, Any], shape: ClusterShape | None = None) -> tuple[Any, str]:
    """The application, and a digest of everything that makes it (its replicas report it back).

    ``shape``: the cluster's, if the caller (``deploy``) has read it already.

    Serve restarts every replica at each ``serve.run`` of an application built in Python
    (its ``version`` option is gone), so ``deploy`` compares this digest with the running
    replicas' and leaves them alone when nothing changed. Secret values are in it: new
    values must reach the replicas.
    """
    from ray import serve

    from lambdaml.serve.server import ModelServer

    parsed = AppArgs.model_validate(args)
    manifest = load_manifest(parsed.artifact)
    install = parsed.install if parsed.install is not None else missing(manifest.requirements, installed_here()[1])
    spec = manifest.model_spec().with_settings(parsed.settings)
    options = serve_options(spec, place(spec, shape or cluster_shape()), install, parsed.debug)
    arguments = (parsed.artifact, parsed.secrets, parsed.environment, parsed.debug, parsed.settings, parsed.price_per_hour)
    made_of = json.dumps([arguments, options], sort_keys=True, default=str)
    fingerprint = hashlib.sha256(made_of.encode()).hexdigest()[:16]
    return serve.deployment(ModelServer).options(**options).bind(*arguments, fingerprint), fingerprint
