"""The cost of the /v1 facade: the official ``replicate`` client's ``run`` against ``lambdaml.run``.

Run: ``python bench/bench_v1.py [--quick]``. On a private embedded cluster of its own, with an
API token on (both clients send it), the same trivial ``async def`` model is called:

- ``lambdaml.run("bench-v1", ...)``: ``POST /bench-v1/predictions``, held until it ends;
- ``replicate.Client(base_url=...).run("lambdaml/bench-v1", ...)``: ``POST
  /v1/models/lambdaml/bench-v1/predictions`` with ``Prefer: wait``, which the control
  application hands to the model's replica through a Serve handle call;
- the same request from a plain ``httpx`` client (``v1_httpx``), which tells the cost of the
  facade on the server from the cost of the Replicate client's own work.

Latency: sequential calls, the two clients alternating call by call (so a drifting VM slows
both alike), p50 per round. Throughput: 8 threads per client for a few seconds, the two in
turn. Medians over the rounds, in bench/README.md; raw figures in bench/results/v1.json.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _child import bench_main, paired_report, throughput  # noqa: E402

from lambdaml import model  # noqa: E402

CLIENTS = 8


@model(name="bench-v1", cpu=0.5, min=1, max=1, concurrency=CLIENTS)
async def bench_v1(x: int = 1) -> int:
    return x


def callers(base: str, token: str) -> dict[str, Callable[[int], object]]:
    """One call of each client, by name (each thread makes its own Replicate client, as an app would)."""
    import httpx
    import replicate

    import lambdaml

    os.environ.update({"LAMBDAML_URL": base, "LAMBDAML_API_TOKEN": token})
    local = threading.local()

    def with_replicate(x: int) -> object:
        if not hasattr(local, "client"):
            local.client = replicate.Client(api_token=token, base_url=base)
        return local.client.run("lambdaml/bench-v1", input={"x": x})

    def with_httpx(x: int) -> object:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}", "Prefer": "wait"})
        return local.http.post("/v1/models/lambdaml/bench-v1/predictions", json={"input": {"x": x}}).json()["output"]

    return {"lambdaml_run": lambda x: lambdaml.run("bench-v1", {"x": x}), "replicate_run": with_replicate,
            "v1_httpx": with_httpx}


def p50s(calls: dict[str, Callable[[int], object]], count: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for index in range(count):
        for name in names if index % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            assert calls[name](index) == index
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}


def measure(quick: bool) -> dict:
    from lambdaml import tokens

    base = bench_v1.deploy().url.rsplit("/", 1)[0]
    _, token = tokens.create("bench-v1", "predict")
    time.sleep(1.5)  # the replicas take up the new token
    calls = callers(base, token)
    p50s(calls, 20)  # warm both paths
    rounds, count, seconds = (2, 100, 3) if quick else (5, 300, 5)
    latency: dict[str, list[float]] = {name: [] for name in calls}
    rates: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(rounds):
        for name, value in p50s(calls, count).items():
            latency[name].append(value)
        for name in list(calls)[round_index % 2:] + list(calls)[: round_index % 2]:  # who goes first alternates
            rates[name].append(throughput(calls[name], seconds))
    return {"p50_ms": latency, "per_s": rates}


def report(results: dict) -> str:
    labels = {name: name for name in ("lambdaml_run", "replicate_run", "v1_httpx")}
    return paired_report(results, labels, "replicate_run", "lambdaml_run", "calls/s", "client")


if __name__ == "__main__":
    bench_main(__doc__, "v1", 10, measure, report)
