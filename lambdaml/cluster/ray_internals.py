"""Every use lambdaml makes of Ray's internals, for the Ray version they were read in (2.60.0).

Two kinds, each naming the Ray file it concerns:

* Calls to what Ray has no public API for: the raylet's gRPC service (warm workers), the
  GCS key-value store (published node types), the driver's auto-connect constants, the
  thread a driver's handles run on. ``check_version`` refuses another Ray version at
  ``lambdaml up`` and at connect, with a message that says what to install.
* Changes to Ray's behaviour, made when this module is imported in every worker of the
  embedded cluster (``RAY_preload_python_modules``, ``lambdaml.cluster.head``), before any
  replica starts; on another Ray version nothing is changed and a warning says so.

Environment settings lambdaml gives Ray (``RAY_SERVE_ENABLE_HA_PROXY``, the HAProxy paths
and throughput mode in ``head``) are Ray's documented knobs, not internals.
tests/test_ray_internals.py checks that each internal named here is still there.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import sys
import time
from typing import Any

WRITTEN_FOR = "2.60.0"
RAY_VERSION = importlib.metadata.version("ray")  # not ray.__version__: importing Ray here would read its settings early
_KV_NAMESPACE = "lambdaml"


def check_version() -> None:
    """Refuse a Ray other than the one lambdaml's internals were written for."""
    if RAY_VERSION != WRITTEN_FOR:
        from lambdaml.errors import ClusterError

        raise ClusterError(
            f"lambdaml needs Ray {WRITTEN_FOR} and this environment has Ray {RAY_VERSION}. "
            f'Install the version it was tested with: pip install "ray[serve]=={WRITTEN_FOR}"'
        )


def driver_stays_on_loopback() -> None:
    """``ray/_private/ray_constants.py`` and ``auto_init_hook.py`` read their settings when Ray is
    imported: a Ray imported before lambdaml set them gets its constants updated too."""
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False
    auto_init = sys.modules.get("ray._private.auto_init_hook")
    if auto_init is not None:
        auto_init.enable_auto_connect = False


def driver_uses_auth_token(environment: dict[str, str]) -> None:
    """Have this process show the cluster's token (``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN_PATH``).

    Ray reads both into caches when it is imported; a process that imported Ray before
    connecting (a notebook, ``from ray import serve`` at the top of a module) would keep
    "no authentication". The caches are refreshed as Ray's own ``_enable_token_auth``
    (``ray/_private/authentication/authentication_token_setup.py``) refreshes them.
    """
    os.environ.update(environment)
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def dashboard_headers() -> dict[str, str]:
    """``ray/_private/authentication/http_token_authentication.py``: the ``Authorization`` header the
    dashboard's REST API asks for on a cluster with token authentication (none otherwise)."""
    from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled

    return get_auth_headers_if_auth_enabled({})


def kv_put(key: str, value: str, overwrite: bool = True) -> None:
    """``ray/experimental/internal_kv.py``: a value in the GCS, for every driver and worker of the cluster."""
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(key, value, overwrite=overwrite, namespace=_KV_NAMESPACE)


def kv_get(key: str) -> str | None:
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(key, namespace=_KV_NAMESPACE)
    return raw.decode() if isinstance(raw, bytes) else raw


def kv_delete(key: str) -> None:
    from ray.experimental.internal_kv import _internal_kv_del

    _internal_kv_del(key, namespace=_KV_NAMESPACE)


def raylet_stub() -> Any:
    """A client of the raylet of this driver's node (``src/ray/protobuf/node_manager.proto``, through
    Ray's generated stubs in ``ray/core/generated``)."""
    import ray
    from ray._private.grpc_utils import init_grpc_channel  # with the cluster's auth token, when it has one
    from ray.core.generated import node_manager_pb2_grpc

    node_id = ray.get_runtime_context().get_node_id()
    node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
    channel = init_grpc_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
    return node_manager_pb2_grpc.NodeManagerServiceStub(channel)


def python_workers(stub: Any) -> dict[int, bool]:
    """The node's Python worker processes (``GetNodeStats``): PID -> whether no job has claimed it yet."""
    import ray
    from ray.core.generated import common_pb2, node_manager_pb2

    nil_job = ray.JobID.nil().binary()
    stats = stub.GetNodeStats(node_manager_pb2.GetNodeStatsRequest(), timeout=10)
    return {worker.pid: worker.job_id == nil_job for worker in stats.core_workers_stats if worker.worker_type == common_pb2.WORKER}


def unclaimed_workers(stub: Any) -> set[int]:
    """PIDs of the node's worker processes that no job has claimed yet."""
    return {pid for pid, unclaimed in python_workers(stub).items() if unclaimed}


def prestart_workers(stub: Any, count: int, keep_alive_s: int) -> None:
    """Ask the raylet for ``count`` unclaimed Python workers (``PrestartWorkers``, as Ray's core
    worker does for a backlog), left alone by its idle-worker killer for ``keep_alive_s``."""
    from ray.core.generated import common_pb2, node_manager_pb2

    request = node_manager_pb2.PrestartWorkersRequest(
        language=common_pb2.PYTHON, num_workers=count, keep_alive_duration_secs=keep_alive_s
    )
    stub.PrestartWorkers(request, timeout=10)


def _replica_grpc_on_loopback() -> None:
    """``ray/serve/_private/replica.py`` binds each replica's inter-deployment gRPC server to
    ``[::]:0``, every interface, with no setting. In the embedded cluster (local-only mode)
    every caller is on this machine, so bind it to 127.0.0.1."""
    from ray.serve._private import replica

    bind = replica.add_port_to_grpc_server

    def on_loopback(server, address: str) -> int:
        return bind(server, address.replace("[::]", "127.0.0.1", 1))

    replica.add_port_to_grpc_server = on_loopback


def stop_handle_loop(timeout_s: float = 2.0) -> None:
    """Stop the thread a driver's Serve handles run on, before ``ray.shutdown()``.

    ``ray/serve/_private/router.py`` (``SingletonThreadRouter``) runs every handle's router
    on one event loop in a daemon thread, which keeps polling the Serve controller and
    recording metrics after the handles are shut down. A Ray call from it while the core
    worker shuts down ends the process with exit status 1 ("The core worker has already
    been shutdown"). The next handle made in this process starts a new loop.
    """
    if RAY_VERSION != WRITTEN_FOR or "ray.serve._private.router" not in sys.modules:
        return
    from ray.serve._private.router import SingletonThreadRouter

    loop = SingletonThreadRouter._asyncio_loop
    if loop is None:
        return
    # A controller update that arrives after this makes Serve's long-poll client log an ERROR that
    # the loop is not running (``long_poll.py``, ``_schedule_to_event_loop``): we stopped it on purpose.
    logging.getLogger("ray.serve").addFilter(_stopped_on_purpose)
    loop.call_soon_threadsafe(loop.stop)
    deadline = time.monotonic() + timeout_s
    while loop.is_running() and time.monotonic() < deadline:
        time.sleep(0.01)
    SingletonThreadRouter._asyncio_loop = None


def _stopped_on_purpose(record: logging.LogRecord) -> bool:
    return "Bound asyncio event loop is not running" not in record.getMessage()


_LOST = (
    "The replica running this request stopped before it answered (it crashed, ran out of memory, "
    "or was stopped). The prediction's record, if it has one, says failed; try again."
)


def proxy_error_body(code: int, message: str) -> dict[str, Any]:
    """lambdaml's JSON error for an answer Serve's proxy makes itself (no replica answered)."""
    if code == 503 and (app := re.search(r"app='([^']+)'", message)) is not None and "failed to deploy" in message:
        name = app[1]
        return {"title": "Model cannot start", "status": 503,
                "detail": f"{name} cannot start a replica: it failed to deploy. `lambdaml status {name}` says why."}
    if code == 503:
        return {"title": "Service unavailable", "status": 503, "detail": message or "No replica can take this request now; try again."}
    if code == 408:
        return {"title": "Request timeout", "status": 408, "detail": message or "The request took too long."}
    if code >= 500:  # the message is a Ray traceback with actor ids: nothing for a caller
        return {"title": "Replica lost", "status": code, "detail": _LOST}
    return {"title": "Error", "status": code, "detail": message or "The request failed."}


def _proxy_errors_as_json() -> None:
    """``ray/serve/_private/http_util.py`` (``send_http_response_on_exception``, which ``proxy.py``
    imports by name): the proxy answers its own errors in plain text, and a 500 (a replica lost
    mid-request) with no answer at all, an empty reply. Answer each with lambdaml's JSON error."""
    from ray.serve._private import http_util

    def as_json(status: Any, response_started: bool) -> list[dict[str, Any]]:
        if response_started:  # the replica's answer is on its way: too late to change it
            return []
        body = proxy_error_body(int(status.code), status.message or "")
        return http_util.convert_object_to_asgi_messages(body, status_code=int(status.code), extra_headers=status.headers)

    http_util.send_http_response_on_exception = as_json
    proxy = sys.modules.get("ray.serve._private.proxy")
    if proxy is not None:  # already imported, with its own reference to the original
        proxy.send_http_response_on_exception = as_json


def _haproxy_errors_as_json() -> None:
    """``ray/serve/_private/haproxy.py`` (``HAProxyApi._initialize_directories_and_error_files``)
    writes the page HAProxy answers its 502, 503 and 504 with (a replica lost mid-request, none
    left to take it) as a plain-text 500. Write lambdaml's JSON error there instead."""
    import json

    from ray.serve._private import haproxy

    initialize = haproxy.HAProxyApi._initialize_directories_and_error_files

    def initialize_with_json_errors(self: Any) -> None:
        initialize(self)
        body = json.dumps(proxy_error_body(500, "")).encode()
        head = f"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        with open(self.cfg.error_file_path, "wb") as page:
            page.write(head.encode() + body)

    haproxy.HAProxyApi._initialize_directories_and_error_files = initialize_with_json_errors


def _replica_errors_as_json() -> None:
    """``ray/serve/_private/replica.py`` (``UserCallableWrapper.handle_exception``, and the
    module's ``convert_object_to_asgi_messages`` for its direct-ingress refusals): when HAProxy
    sends requests to a replica directly, the replica answers Serve's own refusals (its
    ``max_queued_requests`` bound, an unavailable deployment) in plain text. In JSON instead."""
    from ray.serve._private import replica

    from lambdaml._http import error_response

    handle = replica.UserCallableWrapper.handle_exception

    def handle_as_json(self: Any, exc: Exception) -> Any:
        plain = handle(self, exc)
        retry = {"Retry-After": plain.headers["retry-after"]} if "retry-after" in plain.headers else None
        if plain.status_code == 500:  # the replica's own handler failed: no replica was lost
            return error_response(500, "Internal error", "The replica failed to handle the request; `lambdaml logs NAME` shows why.")
        error = proxy_error_body(plain.status_code, bytes(plain.body).decode(errors="replace"))
        return error_response(plain.status_code, error["title"], error["detail"], retry)

    replica.UserCallableWrapper.handle_exception = handle_as_json
    convert = replica.convert_object_to_asgi_messages  # the direct-ingress backpressure refusal uses it

    def convert_errors_as_json(obj: Any = None, status_code: int = 200, extra_headers: Any = None) -> Any:
        if isinstance(obj, str) and status_code >= 400:
            obj = proxy_error_body(status_code, obj)
        return convert(obj, status_code=status_code, extra_headers=extra_headers)

    replica.convert_object_to_asgi_messages = convert_errors_as_json


def _fail_waiting_requests_when_serve_gives_up() -> None:
    """``ray/serve/_private/router.py`` (``AsyncioRouter.update_deployment_targets``): once Serve
    gives up starting a deployment's replicas, new requests fail at once with
    ``DeploymentUnavailableError``, but those already waiting for a replica wait on for good.
    Fail those the same way (the proxy then answers them in JSON, as above)."""
    from ray.serve._private import router
    from ray.serve.exceptions import DeploymentUnavailableError

    update = router.AsyncioRouter.update_deployment_targets

    def update_and_fail_waiters(self: Any, deployment_target_info: Any) -> None:
        update(self, deployment_target_info)
        request_router = getattr(self, "_request_router", None)
        if deployment_target_info.is_available or request_router is None:
            return
        for pending in list(request_router._pending_requests_to_fulfill):
            if not pending.future.done():
                pending.future.set_exception(DeploymentUnavailableError(self.deployment_id))

    router.AsyncioRouter.update_deployment_targets = update_and_fail_waiters


def _scale_up_from_zero_at_once() -> None:
    """``ray/serve/_private/router.py`` (``RouterMetricsManager.wrap_queued_request``): a request
    for a deployment at zero replicas pushes the handle's metrics to the controller at once, so
    that it scales up without waiting for the next periodic push. But the report carries the
    queue lengths recorded so far (``_add_autoscaling_metrics_point``, every 0.25 s here), not
    the request just queued: the controller sees zeros and decides only after the next record
    and push, 0.1-0.5 s later (bench/README.md, cold start). Record the queue as it is now,
    just before that push."""
    from ray.serve._private import router

    should_push = router.RouterMetricsManager.should_send_scaled_to_zero_optimized_push

    def record_then_push(self: Any, curr_num_replicas: int) -> bool:
        push = should_push(self, curr_num_replicas)
        if push:  # the push that follows now carries this request
            self._add_autoscaling_metrics_point()
        return push

    router.RouterMetricsManager.should_send_scaled_to_zero_optimized_push = record_then_push


if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":  # the embedded cluster's local-only mode
    if RAY_VERSION == WRITTEN_FOR:
        _replica_grpc_on_loopback()
        _proxy_errors_as_json()
        _haproxy_errors_as_json()
        _replica_errors_as_json()
        _fail_waiting_requests_when_serve_gives_up()
        _scale_up_from_zero_at_once()
    else:
        logging.getLogger("ray.serve").warning(
            f"lambdaml: Ray {RAY_VERSION} is not {WRITTEN_FOR}; replica gRPC servers are left on every "
            "interface, Serve's proxy answers its own errors in plain text, requests wait on a model that cannot start, "
            "and a scale-up from zero waits for the next metrics push"
        )
