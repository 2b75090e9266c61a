"""One real embedded Ray cluster per test session, on loopback ports of its own.

The environment is set at import time so that every lambdaml call in the
session, and every example run as a subprocess, finds this cluster rather
than a developer's own. The head has a fake A100 (one GPU plus the
``accelerator_type:A100`` resource) so GPU placement can be tested on CPU.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


TEST_TEMP_DIR = Path(tempfile.gettempdir()) / f"lmt-{os.getpid()}"  # short: socket paths are capped
os.environ.update(
    {
        "LAMBDAML_TEMP_DIR": str(TEST_TEMP_DIR),
        "LAMBDAML_ARTIFACTS": str(TEST_TEMP_DIR / "artifacts"),
        "LAMBDAML_RAY_PORT": str(_free_port()),
        "LAMBDAML_HTTP_PORT": str(_free_port()),
        "LAMBDAML_DASHBOARD_PORT": str(_free_port()),
        "LAMBDAML_NUM_CPUS": "2",
        "LAMBDAML_NUM_GPUS": "1",
    }
)
for variable in ("LAMBDAML_ADDRESS", "RAY_ADDRESS", "LAMBDAML_URL"):
    os.environ.pop(variable, None)

FAKE_GPU_RESOURCES = {"accelerator_type:A100": 1}


@pytest.fixture(scope="session")
def cluster():
    """The session's cluster, started on first use and stopped at the end."""
    from lambdaml import cluster as lambdaml_cluster

    lambdaml_cluster.start(resources=FAKE_GPU_RESOURCES)
    info = lambdaml_cluster.connect()
    yield info
    lambdaml_cluster.shutdown()


@pytest.fixture
def deployed(cluster):
    """Deploy models in a test and delete them afterwards: ``deployed(model)``."""
    models = []

    def deploy(model, **kwargs):
        models.append(model)
        return model.deploy(**kwargs)

    yield deploy
    for model in models:
        model.delete()
