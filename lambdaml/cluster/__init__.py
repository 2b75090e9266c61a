"""The cluster stage: reach the Ray cluster, embedded or given by address, and call models on it.

``connect`` starts the embedded head if needed (``lambdaml.cluster.head``) and joins
it as a Ray driver; with ``LAMBDAML_ADDRESS`` (or ``RAY_ADDRESS``) it joins
that cluster instead. Serve handles to applications are cached here. The head's
helpers are this package's modules: ``head`` (start, find, stop), ``keeper``,
``warm_workers``, ``node_types`` and ``ray_internals``, the one module that uses Ray's internals.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
from typing import Any

from lambdaml.cluster.head import LOCAL_ONLY, ClusterInfo, auth_environment, haproxy_driver_environment, read_state, start, stop
from lambdaml._settings import cluster_settings
from lambdaml.errors import ClusterError

__all__ = ["ClusterInfo", "app_handle", "call_app", "connect", "current", "forget_handle", "shutdown", "start"]


def shutdown() -> bool:
    """Stop the embedded cluster this machine started. Returns False if none ran.

    Deployments on it are gone afterwards. A cluster given by address is never
    stopped; only this process disconnects from it.
    """
    settings = cluster_settings()
    if _connected is not None and _connected.temp_dir == str(settings.temp_dir):
        _disconnect()
    return stop(settings)


# ---------------------------------------------------------------- connecting

_connected: ClusterInfo | None = None


def is_loopback(address: str) -> bool:
    """True for a cluster address on this machine's loopback (``127.0.0.1:6379``, ``localhost:6379``)."""
    return address.split(":")[0] in ("127.0.0.1", "localhost")


def connect(start_embedded: bool = True) -> ClusterInfo:
    """Connect this process to the cluster (embedded by default) with Serve running.

    ``start_embedded=False`` is for commands that only look: with no cluster
    running they fail with a ClusterError instead of starting one.
    """
    global _connected
    if _connected is not None:
        return _connected
    settings = cluster_settings()
    if not settings.address and not start_embedded and read_state(settings) is None:
        raise ClusterError(
            "No lambdaml cluster is running on this machine. Start one with `lambdaml up` "
            "(or deploy a model), or set LAMBDAML_ADDRESS to use another cluster."
        )
    if settings.address:
        info = ClusterInfo(
            address=settings.address,
            http_url=os.environ.get("LAMBDAML_URL", settings.http_url).rstrip("/"),
            dashboard_url=settings.dashboard_url,
            embedded=False,
            ingress=settings.ingress,
        )
    else:
        info = start()
    if info.ingress == "haproxy":
        # Serve reads these when it is imported, in the driver too. Throughput
        # mode would also run handles' routers on the caller's event loop,
        # which a synchronous client like ours does not have.
        os.environ.update(haproxy_driver_environment())
        os.environ["RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"] = "1"
    if info.embedded:
        from lambdaml.cluster.ray_internals import driver_uses_auth_token

        driver_uses_auth_token(auth_environment(settings))
    if info.embedded or is_loopback(info.address):
        _driver_on_loopback()
    from lambdaml.cluster.ray_internals import check_version

    check_version()
    import atexit

    import ray
    from ray import serve

    # Serve's driver-side INFO lines ("Started Serve", "Connecting to existing
    # Serve app") are noise for lambdaml users; warnings still show.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    if not ray.is_initialized():
        try:
            ray.init(address=info.address, logging_level="ERROR", log_to_driver=False)
        except ConnectionError as exc:
            raise ClusterError(
                f"Cannot reach the Ray cluster at {info.address}: {exc}\n"
                "Check LAMBDAML_ADDRESS (or RAY_ADDRESS), or unset it to use the local cluster."
            ) from None
    if not info.embedded:
        serve.start()  # the embedded cluster's keeper has already started Serve on loopback
    _connected = info
    # After Ray's own exit hook was registered, so ours runs first (see _disconnect).
    atexit.unregister(_disconnect)
    atexit.register(_disconnect)
    return info


def _driver_on_loopback() -> None:
    """Make this process see itself as 127.0.0.1, as the embedded head does.

    Otherwise the driver looks for its raylet on the machine's public address
    and never connects.
    """
    os.environ.update(LOCAL_ONLY)
    # Never let a stray Ray call start a second, non-loopback Ray instance.
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"
    from lambdaml.cluster.ray_internals import driver_stays_on_loopback  # imports Ray: after the settings

    driver_stays_on_loopback()


_handles: dict[str, Any] = {}


def app_handle(name: str) -> Any:
    """A cached Serve ``DeploymentHandle`` for the application ``name``."""
    from ray import serve

    connect()
    if name not in _handles:
        _handles[name] = serve.get_app_handle(name)
    return _handles[name]


def call_app(name: str, method: str, *args: Any, timeout_s: float | None = None) -> Any:
    """Call ``method`` of application ``name`` through its handle and wait for the result.

    Works where an event loop is already running (a Jupyter kernel): Serve's
    blocking ``result()`` refuses to run on such a thread, so the wait moves to
    a short-lived helper thread instead.
    """
    response = getattr(app_handle(name), method).remote(*args)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop here: wait on this thread
        return response.result(timeout_s=timeout_s)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as waiter:
        return waiter.submit(response.result, timeout_s=timeout_s).result()


def forget_handle(name: str) -> None:
    """Drop the cached handle of a deleted application."""
    handle = _handles.pop(name, None)
    if handle is not None:
        handle.shutdown()


def _disconnect() -> None:
    """Close handles, then leave Ray.

    A handle's metrics thread outlives ``ray.shutdown()`` and would otherwise
    make Ray start a new local instance at interpreter exit; the thread the
    handles ran on is stopped too (see ``ray_internals.stop_handle_loop``).
    """
    global _connected
    _connected = None
    while _handles:
        _handles.popitem()[1].shutdown()
    if "ray" in sys.modules:
        import ray

        from lambdaml.cluster.ray_internals import stop_handle_loop

        stop_handle_loop()
        if ray.is_initialized():
            ray.shutdown()


def current() -> ClusterInfo | None:
    """The cluster this process would talk to, without starting anything."""
    settings = cluster_settings()
    if _connected is not None:
        return _connected
    if settings.address:
        return None
    return read_state(settings)
