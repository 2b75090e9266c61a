"""Per-request work lambdaml adds, in process: no network, no Ray, the same Starlette request.

Calls ``ModelServer.__call__`` (routing, token check, envelope and input validation, the
prediction's task and record, log capture) for ``async def echo`` and ``def echo``, and a bare Serve-style
handler that reads the JSON body and calls ``echo``, 5,000 times each after a warm-up,
and prints the microseconds per call (median of 5 runs). Usage:
``python bench/bench_overhead.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import tempfile
import time
import unittest.mock

from starlette.requests import Request

from lambdaml import model
from lambdaml.artifacts import ArtifactStore
from lambdaml.control.auth import AuthState, AuthWatcher
from lambdaml.package import build
from lambdaml.serve.server import ModelServer

BODY = json.dumps({"input": {"x": 1}}).encode()


def echo(x: int = 1) -> int:
    return x


async def async_echo(x: int = 1) -> int:
    return x


def request() -> Request:
    async def receive() -> dict:
        return {"type": "http.request", "body": BODY, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/m/predictions", "root_path": "/m", "headers": [],
             "query_string": b""}
    return Request(scope, receive)


async def bare(incoming: Request) -> dict:
    body = await incoming.json()
    return {"output": echo(**body["input"])}


NO_TOKENS = AuthState(required=False, tokens={})


async def _no_tokens() -> AuthState:
    return NO_TOKENS


async def _records_dropped(updates: list, running: list) -> dict:
    return {}  # no control application here: its side is bench_cpu_split's


def server_for(function, store: ArtifactStore) -> ModelServer:
    """A replica's server outside Ray: tokens off, as a cluster without tokens publishes; records
    go nowhere (the tracker still collects and hands them over every 100 ms)."""
    deployable = model(name="m")(function)
    manifest = store.save(*build(deployable, {}))
    open_cluster = AuthWatcher(_no_tokens, NO_TOKENS)
    with unittest.mock.patch("lambdaml.serve.server.published_watcher", lambda: open_cluster):
        server = ModelServer(store.artifact_url("m", manifest.version))
    server.tracker._send = _records_dropped
    return server


async def per_call_us(handler, calls: int = 5000) -> float:
    """Each call a task of its own, as Ray Serve runs each request: the event loop turns between
    calls, as in a replica (awaited inline, an eager prediction task would never let it turn)."""
    loop = asyncio.get_running_loop()

    async def one() -> None:
        await handler(request())

    for _ in range(200):
        await loop.create_task(one())
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            await loop.create_task(one())
        runs.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(runs)


async def main() -> None:
    os.environ.setdefault("LAMBDAML_SIGNING_KEY", secrets.token_hex(32))  # no cluster here to keep the key
    with tempfile.TemporaryDirectory() as folder:
        store = ArtifactStore(folder)
        handlers = {
            "bare handler": bare,
            "lambdaml async def": server_for(async_echo, store),
            "lambdaml def": server_for(echo, store),
        }
        print("| handler | us per call |\n|---|---:|")
        for name, handler in handlers.items():
            print(f"| {name} | {await per_call_us(handler):.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
