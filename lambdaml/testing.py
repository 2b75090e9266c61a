"""Helpers for trying lambdaml's file handling without a cloud account.

``local_s3()`` runs moto's S3 server on a loopback port (``pip install
"moto[server]"``) and points this process's AWS settings at it, so models
deployed from here reach it too (lambdaml forwards those settings).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from lambdaml.cluster.head import free_port


@contextlib.contextmanager
def local_s3(key: str = "testing") -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the duration of the block; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    settings = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": key, "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update({**settings, "AWS_ENDPOINT_URL": endpoint})
    try:
        yield endpoint
    finally:
        server.stop()
