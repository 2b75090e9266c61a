"""Where lambdaml changes Ray's own behaviour, for the Ray version it was read in (2.60.0).

Imported in every worker of the embedded cluster (``RAY_preload_python_modules``,
``lambdaml._head``), before any replica starts. Each change names the Ray file it
concerns; on another Ray version nothing is changed and a warning says so.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any

import ray

WRITTEN_FOR = "2.60.0"


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
    if ray.__version__ != WRITTEN_FOR or "ray.serve._private.router" not in sys.modules:
        return
    from ray.serve._private.router import SingletonThreadRouter

    loop = SingletonThreadRouter._asyncio_loop
    if loop is None:
        return
    loop.call_soon_threadsafe(loop.stop)
    deadline = time.monotonic() + timeout_s
    while loop.is_running() and time.monotonic() < deadline:
        time.sleep(0.01)
    SingletonThreadRouter._asyncio_loop = None


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


if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":  # the embedded cluster's local-only mode
    if ray.__version__ == WRITTEN_FOR:
        _replica_grpc_on_loopback()
        _proxy_errors_as_json()
        _fail_waiting_requests_when_serve_gives_up()
    else:
        logging.getLogger("ray.serve").warning(
            f"lambdaml: Ray {ray.__version__} is not {WRITTEN_FOR}; replica gRPC servers are left on every "
            "interface, Serve's proxy answers its own errors in plain text, and requests wait on a model that cannot start"
        )
