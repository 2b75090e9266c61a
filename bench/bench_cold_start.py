"""Cold start from zero replicas, on a freshly started cluster and on a settled one (issue 15 item 7).

Each round runs in a child process with an embedded cluster of its own, started for it.
The child deploys a second model with ``min=1`` (as a user's cluster has: it takes a ready
worker) and ``bench-cold`` (``min=0``, ``scaledown_after=1``), then times the first request
to ``bench-cold`` once it has no replica ("fresh": seconds after the cluster started), and
``--settled`` more cold starts after the cluster has been up ``--settle`` seconds
("settled"). A cold start is the time from sending the request to its answer. Prints the
p50 and max of each kind over every round, with the machine. Usage:
``python bench/bench_cold_start.py [--rounds 3] [--settled 3] [--settle 30]``.
Writes ``bench/results/cold_start.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from _child import measure_in_own_cluster, save


def echo(text: str = "x") -> str:
    return text


def _cold_start(url: str, replicas) -> float:
    deadline = time.monotonic() + 120
    while replicas() and time.monotonic() < deadline:
        time.sleep(0.1)
    if replicas():
        raise RuntimeError("bench-cold did not scale to zero")
    started = time.perf_counter()
    response = httpx.post(url, json={"input": {"text": "x"}}, timeout=120)
    response.raise_for_status()
    return time.perf_counter() - started


def measure(settled: int, settle_s: float) -> dict:
    from lambdaml import model
    from lambdaml.cluster import connect
    from lambdaml.deploy import app_status

    started = time.monotonic()
    info = connect()  # starts this child's own cluster
    model(name="bench-other", cpu=0.1, min=1)(echo).deploy()
    model(name="bench-cold", cpu=0.1, min=0, max=1, scaledown_after=1)(echo).deploy()
    url = f"{info.http_url}/bench-cold/predictions"

    def replicas() -> dict:
        return app_status("bench-cold")["replicas"]

    fresh = _cold_start(url, replicas)
    fresh_after_s = time.monotonic() - started
    time.sleep(max(0.0, settle_s - (time.monotonic() - started)))
    return {"fresh": fresh, "fresh_after_s": fresh_after_s, "settled": [_cold_start(url, replicas) for _ in range(settled)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="fresh clusters to start")
    parser.add_argument("--settled", type=int, default=3, help="cold starts per cluster once it has settled")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after start before the settled ones")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    forwarded = ["--settled", str(args.settled), "--settle", str(args.settle)]
    if args.child:
        measure_in_own_cluster(True, lambda: measure(args.settled, args.settle), forwarded, "cold-start", 9)
        return
    rounds = [measure_in_own_cluster(False, lambda: {}, forwarded, "cold-start", 9) for _ in range(args.rounds)]
    fresh = [r["fresh"] for r in rounds]
    settled = [s for r in rounds for s in r["settled"]]
    summary = {
        "fresh_s": {"p50": statistics.median(fresh), "max": max(fresh), "all": fresh},
        "settled_s": {"p50": statistics.median(settled), "max": max(settled), "all": settled},
        "fresh_measured_after_start_s": [r["fresh_after_s"] for r in rounds],
    }
    save("cold_start", summary)
    print("| cold start | p50 s | max s | samples |\n|---|---:|---:|---:|")
    for kind in ("fresh", "settled"):
        figures = summary[f"{kind}_s"]
        print(f"| {kind} | {figures['p50']:.2f} | {figures['max']:.2f} | {len(figures['all'])} |")


if __name__ == "__main__":
    main()
