"""What a running canary costs a request: the same calls with and without a 10% canary.

Run: ``python bench/bench_canary.py [--quick]``. On a private embedded cluster, a trivial
``async def`` model runs live and a second version of it as a 10% canary
(``lambdaml.canary``). Each round measures the live URL twice, in turn: with the canary's
share published, and with it withdrawn (the key deleted, so the live replicas see no
canary: the case of a model without one). A request handed to the canary takes a second
hop (live replica → canary replica by a Serve handle call).

Latency: sequential ``POST /{name}/predictions``, p50 per state per round. Throughput: 8
threads for a few seconds. Medians over the rounds, in bench/README.md; raw figures in
bench/results/canary.json. That a model without a canary pays nothing is what
bench/bench_skeleton.py's ratio against bare Serve shows.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _child import bench_main, paired_report, throughput  # noqa: E402

from lambdaml import model  # noqa: E402

CLIENTS = 8  # threads of the throughput runs (_child.throughput)
PERCENT = 10


def _version(answer: int):
    @model(name="bench-canary", cpu=0.5, min=1, max=1, concurrency=CLIENTS)
    async def bench_canary(x: int = 1) -> int:
        return x + answer - answer

    return bench_canary


def p50_ms(url: str, count: int) -> float:
    import httpx

    samples = []
    with httpx.Client(timeout=30) as http:
        for index in range(count):
            started = time.perf_counter()
            assert http.post(url, json={"input": {"x": index}}).json()["output"] == index
            samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def poster(url: str) -> Callable[[int], object]:
    """One POST to ``url`` per call, each thread with its own connection."""
    import httpx

    local = threading.local()

    def post(index: int) -> object:
        if not hasattr(local, "http"):
            local.http = httpx.Client(timeout=30)
        return local.http.post(url, json={"input": {"x": index}})

    return post


def measure(quick: bool) -> dict:
    from lambdaml import canary
    from lambdaml.cluster.ray_internals import kv_delete, kv_put
    from lambdaml.serve.canary import REFRESH_S, kv_key

    url = _version(0).deploy().url + "/predictions"
    _version(1).deploy(canary=PERCENT)
    key, running = kv_key("bench-canary"), canary.current("bench-canary")
    post = poster(url)

    def set_state(with_canary: bool) -> None:
        if with_canary:
            kv_put(key, json.dumps(running))
        else:
            kv_delete(key)
        time.sleep(REFRESH_S + 0.5)  # every live replica has reread it

    rounds, count, seconds = (2, 200, 3) if quick else (5, 400, 5)
    p50 = {"canary": [], "none": []}
    rates = {"canary": [], "none": []}
    p50_ms(url, 50)  # warm both paths
    for index in range(rounds):
        order = ["canary", "none"] if index % 2 == 0 else ["none", "canary"]
        for state in order:
            set_state(state == "canary")
            p50[state].append(p50_ms(url, count))
            rates[state].append(throughput(post, seconds))
    return {"p50_ms": p50, "per_s": rates, "percent": PERCENT}


def report(results: dict) -> str:
    labels = {"none": "no canary", "canary": f"{results['percent']}% canary"}
    return paired_report(results, labels, "canary", "none", "requests/s", "state")


if __name__ == "__main__":
    bench_main(__doc__, "canary", 11, measure, report)
