"""Where lambdaml changes Ray's own behaviour, for the Ray version it was read in (2.60.0).

Imported in every worker of the embedded cluster (``RAY_preload_python_modules``,
``lambdaml._head``), before any replica starts. Each change names the Ray file it
concerns; on another Ray version nothing is changed and a warning says so.
"""

from __future__ import annotations

import logging
import os
import sys
import time

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


if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":  # the embedded cluster's local-only mode
    if ray.__version__ == WRITTEN_FOR:
        _replica_grpc_on_loopback()
    else:
        logging.getLogger("ray.serve").warning(
            f"lambdaml: Ray {ray.__version__} is not {WRITTEN_FOR}; replica gRPC servers are left on every interface"
        )
