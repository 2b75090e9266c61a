"""Where lambdaml changes Ray's own behaviour, for the Ray version it was read in (2.60.0).

Imported in every worker of the embedded cluster (``RAY_preload_python_modules``,
``lambdaml._head``), before any replica starts. Each change names the Ray file it
concerns; on another Ray version nothing is changed and a warning says so.
"""

from __future__ import annotations

import logging
import os

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


if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":  # the embedded cluster's local-only mode
    if ray.__version__ == WRITTEN_FOR:
        _replica_grpc_on_loopback()
    else:
        logging.getLogger("ray.serve").warning(
            f"lambdaml: Ray {ray.__version__} is not {WRITTEN_FOR}; replica gRPC servers are left on every interface"
        )
