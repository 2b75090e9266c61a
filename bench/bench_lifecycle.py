"""Prediction lifecycle benchmark: async throughput, the records' delay, and what a cancel costs.

Run: ``python bench/bench_lifecycle.py [--quick]``. On a private embedded cluster of its own:

- ``202s per second``: 8 clients sending ``Prefer: respond-async`` to a trivial ``async def`` model,
  beside the same clients' sync requests (200s per second) to the same model, interleaved in rounds.
- ``submit to succeeded``: one client at a time submits async and polls ``urls.get`` every 2 ms;
  the time from the submit to reading ``succeeded``, minus ``predict_time`` (goal <= 50 ms).
- ``cancel to free slot``: a ``concurrency=1`` model runs a long predict, a second prediction waits
  for the slot; the time from the cancel call to the second one's ``started_at``, for an
  ``async def`` (goal <= 1 s), a busy-looping ``def`` (goal <= 1 s), and a ``def`` stuck in C
  (``time.sleep``; goal <= grace + 5 s, through the replica's replacement; grace 10 s here).

Medians, and the machine, in bench/README.md; raw figures in bench/results/lifecycle.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _child import measure_in_own_cluster, save  # noqa: E402

from lambdaml import model  # noqa: E402

CLIENTS = 8


@model(name="bench-async", cpu=0.1, min=1, max=1, concurrency=8)
async def bench_async(x: int = 1) -> int:
    return x


@model(name="bench-cancel-async", cpu=0.1, min=1, max=1, concurrency=1)
async def bench_cancel_async(seconds: float = 0.0) -> str:
    import asyncio

    await asyncio.sleep(seconds)
    return "done"


@model(name="bench-cancel-sync", cpu=0.1, min=1, max=1, concurrency=1)
def bench_cancel_sync(seconds: float = 0.0, in_c: bool = False) -> str:
    import time as clock

    if in_c:
        clock.sleep(seconds)
    started = clock.time()
    while clock.time() - started < seconds:
        pass
    return "done"


def rate(url: str, headers: dict[str, str], seconds: float, expected: int) -> float:
    """Answers per second with status ``expected``, from CLIENTS threads for ``seconds``."""
    counts = [0] * CLIENTS
    stop = time.monotonic() + seconds

    def loop(index: int) -> None:
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < stop:
                response = client.post(f"{url}/predictions", json={"input": {"x": index}}, headers=headers)
                counts[index] += response.status_code == expected

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


def record_delay(url: str, count: int) -> list[float]:
    """Seconds from an async submit to reading ``succeeded``, minus the predict time."""
    delays = []
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            created = client.post(f"{url}/predictions", json={"input": {}}, headers={"Prefer": "respond-async"}).json()
            while (got := client.get(created["urls"]["get"])).status_code != 200 or got.json()["status"] != "succeeded":
                time.sleep(0.002)
            delays.append(time.perf_counter() - started - got.json()["metrics"]["predict_time"])
    return delays


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def cancel_to_free(url: str, base: str, long_input: dict, rounds: int) -> list[float]:
    """Seconds from the cancel call to the start of the prediction that waited for the slot."""
    figures = []
    with httpx.Client(timeout=60) as client:
        for _ in range(rounds):
            first = client.post(f"{url}/predictions", json={"input": long_input}, headers={"Prefer": "respond-async"}).json()
            second = client.post(f"{url}/predictions", json={"input": {}}, headers={"Prefer": "respond-async"}).json()
            while client.get(first["urls"]["get"]).json()["status"] != "processing":
                time.sleep(0.01)
            asked = time.time()
            client.post(f"{base}/v1/predictions/{first['id']}/cancel")
            while (waiting := client.get(second["urls"]["get"]).json())["started_at"] is None:
                if waiting["status"] == "canceled":  # its replica is being replaced: the next one, elsewhere
                    while (retry := client.post(f"{url}/predictions", json={"input": {}})).status_code == 503:
                        time.sleep(0.05)
                    waiting = retry.json()
                    break
                time.sleep(0.01)
            figures.append(_epoch(waiting["started_at"]) - asked)
            while client.get(waiting["urls"]["get"]).json()["status"] not in ("succeeded", "failed", "canceled"):
                time.sleep(0.01)
    return figures


def measure(quick: bool) -> dict:
    seconds, rounds = (3, 2) if quick else (8, 5)
    url = bench_async.deploy().url
    base = url.rsplit("/", 1)[0]
    rate(url, {}, 2, 200)  # warm up
    sync_rates, async_rates = [], []
    for _ in range(rounds):
        sync_rates.append(rate(url, {}, seconds, 200))
        async_rates.append(rate(url, {"Prefer": "respond-async"}, seconds, 202))
    time.sleep(2)  # let the async ones finish
    delays = record_delay(url, 20 if quick else 100)
    cancel_async = cancel_to_free(bench_cancel_async.deploy().url, base, {"seconds": 60}, rounds)
    sync_url = bench_cancel_sync.deploy().url
    cancel_busy = cancel_to_free(sync_url, base, {"seconds": 60}, rounds)
    cancel_stuck = cancel_to_free(sync_url, base, {"seconds": 60, "in_c": True}, 1 if quick else 3)
    return {
        "sync_200_per_s": sync_rates, "async_202_per_s": async_rates, "submit_to_succeeded_minus_predict_s": delays,
        "cancel_async_def_s": cancel_async, "cancel_busy_def_s": cancel_busy, "cancel_stuck_in_c_s": cancel_stuck,
    }


def report(results: dict) -> str:
    median = statistics.median
    ms = 1000 * median(results["submit_to_succeeded_minus_predict_s"])
    return "\n".join([
        "| figure | median | goal |",
        "|---|---|---|",
        f"| sync 200s per second, 8 clients | {median(results['sync_200_per_s']):.0f} | (baseline) |",
        f"| async 202s per second, 8 clients | {median(results['async_202_per_s']):.0f} | |",
        f"| submit to succeeded minus predict time | {ms:.1f} ms | <= 50 ms |",
        f"| cancel to free slot, async def | {median(results['cancel_async_def_s']):.2f} s | <= 1 s |",
        f"| cancel to free slot, busy-looping def | {median(results['cancel_busy_def_s']):.2f} s | <= 1 s |",
        f"| cancel to free slot, def stuck in C (grace 10 s) | {median(results['cancel_stuck_in_c_s']):.2f} s | <= 15 s |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    results = measure_in_own_cluster(args.child, lambda: measure(args.quick), ["--quick"] if args.quick else [],
                                     "lifecycle", 7)
    if results is None:
        return
    save("lifecycle", results)
    print(report(results))


if __name__ == "__main__":
    main()
