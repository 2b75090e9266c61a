"""The deploy stage: a packaged model becomes a Ray Serve application.

One application per model, named after it and routed at ``/{name}``. This is
the only module that translates ``@model`` parameters into Ray Serve options;
read ``serve_options`` to see exactly what a spec means to Serve.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from lambdaml import cluster
from lambdaml._resources import GpuRequest
from lambdaml._settings import debug_enabled
from lambdaml.errors import DeployError, NotDeployedError
from lambdaml.model import Model
from lambdaml.package import pack, version_id
from lambdaml.spec import ModelSpec

# Autoscaling metrics every 0.5 s over a 2 s window, instead of Serve's 10 s
# push and 30 s window: a request arriving at zero replicas gets a replica in
# ~1.5 s instead of ~12 s on a laptop, and idle replicas go away on time.
METRICS_INTERVAL_S = 0.25
LOOK_BACK_PERIOD_S = 2.0
UPSCALE_DELAY_S = 0.0
DEFAULT_CPUS = 1.0


@dataclass(frozen=True)
class Deployment:
    """A model running on the cluster."""

    name: str
    url: str
    version: str
    dashboard_url: str

    def delete(self) -> None:
        """Remove the application and its replicas."""
        delete(self.name)

    def status(self) -> dict[str, Any]:
        """Serve's view of the application: its status and its replicas' states."""
        return app_status(self.name)


def choose_gpu(preferences: tuple[GpuRequest, ...], available: set[str]) -> GpuRequest | None:
    """The first preferred GPU type the cluster has; else the first (an autoscaler may add it)."""
    if not preferences:
        return None
    for request in preferences:
        if request.accelerator_type in available:
            return request
    return preferences[0]


def serve_options(spec: ModelSpec, available_gpus: set[str] = frozenset()) -> dict[str, Any]:
    """Keyword arguments for ``serve.deployment(...).options()`` that implement ``spec``."""
    actor_options: dict[str, Any] = {"num_cpus": DEFAULT_CPUS if spec.cpu is None else spec.cpu}
    gpu = choose_gpu(spec.gpu, set(available_gpus))
    if gpu is not None:
        actor_options.update(num_gpus=gpu.count, accelerator_type=gpu.accelerator_type)
    if spec.memory is not None:
        actor_options["memory"] = spec.memory
    return {
        "name": spec.name,
        "max_ongoing_requests": spec.ongoing_limit,
        "ray_actor_options": actor_options,
        "autoscaling_config": {
            "min_replicas": spec.min,
            "max_replicas": spec.max,
            "target_ongoing_requests": spec.concurrency,
            "metrics_interval_s": METRICS_INTERVAL_S,
            "look_back_period_s": LOOK_BACK_PERIOD_S,
            "upscale_delay_s": UPSCALE_DELAY_S,
            "downscale_delay_s": spec.scaledown_after,
            "downscale_to_zero_delay_s": spec.scaledown_after,
        },
    }


def _cluster_gpu_types() -> set[str]:
    import ray

    prefix = "accelerator_type:"
    return {key[len(prefix) :] for key in ray.cluster_resources() if key.startswith(prefix)}


def deploy(model: Model, wait: bool = True, timeout: float = 300.0) -> Deployment:
    """Package ``model``, run it as a Serve application and (by default) wait for it."""
    from ray import serve

    from lambdaml.server import ModelServer

    info = cluster.connect()
    model.schema  # describe now: a bad annotation fails here, not in a replica
    payload = pack(model)
    version = version_id(payload)
    options = serve_options(model.spec, _cluster_gpu_types())
    app = serve.deployment(ModelServer).options(**options).bind(payload, debug_enabled())
    target = serve.RunTarget(target=app, name=model.name, route_prefix=f"/{model.name}")
    serve.run_many([target], wait_for_applications_running=False)
    if wait:
        deadline = time.monotonic() + timeout
        _wait_until_running(model, deadline)
        _wait_for_route(info.http_url, model.name, deadline)
    return Deployment(model.name, f"{info.http_url}/{model.name}", version, info.dashboard_url)


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


def app_status(name: str) -> dict[str, Any]:
    """Status of one application: ``{"status", "message", "replicas": {state: count}}``."""
    from ray import serve

    cluster.connect()
    app = serve.status().applications.get(name)
    if app is None:
        raise NotDeployedError(f"No model named {name!r} is deployed on this cluster.")
    replicas: dict[str, int] = {}
    messages = [app.message] if app.message else []
    for deployment in app.deployments.values():
        for state, count in deployment.replica_states.items():
            replicas[_enum_value(state)] = replicas.get(_enum_value(state), 0) + count
        if deployment.message:
            messages.append(deployment.message)
    return {"status": _enum_value(app.status), "message": "\n".join(messages), "replicas": replicas}


def _wait_until_running(model: Model, deadline: float) -> None:
    while True:
        state = app_status(model.name)
        if state["status"] == "RUNNING":
            break
        if state["status"] in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise DeployError(f"Deploying {model.name!r} failed: {state['message'] or state['status']}")
        if time.monotonic() > deadline:
            raise DeployError(
                f"{model.name!r} was not ready in time ({state['status']}, replicas: "
                f"{state['replicas'] or 'none'}). {state['message']}".strip()
            )
        time.sleep(0.1)
    if model.spec.min > 0:
        health = cluster.app_handle(model.name).health.remote().result()
        if health["status"] == "SETUP_FAILED":
            setup = health["setup"]
            raise DeployError(
                f"{model.name!r} is deployed but its setup() failed: {setup['error']}\n"
                f"Setup logs:\n{setup['logs']}".rstrip()
            )


def _wait_for_route(http_url: str, name: str, deadline: float) -> None:
    """Wait until the HTTP ingress routes ``/{name}``: HAProxy reloads shortly after Serve."""
    while time.monotonic() < deadline:
        try:
            routes = httpx.get(f"{http_url}/-/routes", timeout=5).json()
        except httpx.ConnectError:
            return  # the ingress is not reachable from here (a remote cluster): nothing to wait for
        except (httpx.HTTPError, ValueError):
            routes = {}
        if routes.get(f"/{name}") == name:
            return
        time.sleep(0.05)
    raise DeployError(f"{name!r} is running but the HTTP ingress at {http_url} does not route /{name} yet")


def delete(name: str) -> None:
    """Delete the application named ``name`` (no error if it is already gone)."""
    from ray import serve

    cluster.connect()
    cluster.forget_handle(name)
    serve.delete(name)
