"""Load step: a CPU model with max > 1 scales up under load and back down, losing no request.

On an embedded cluster of its own (loopback), deploys a model that takes ~50 ms per
request (``min=1, max=4, concurrency=1, scaledown_after=3``), then sends a bounded load
step: 8 loopback clients for ``--seconds`` (default 20). It records every response
status, the replica count every 0.25 s, the time until the count reached its peak,
and after the load how long until the count is back to ``min``. Usage:
``python bench/bench_load.py [--seconds 20]``. Writes ``bench/results/load.json``.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from _child import measure_in_own_cluster, save

RESULTS = Path(__file__).parent / "results"
CLIENTS = 8


def slow_echo(x: int = 1) -> int:
    time.sleep(0.05)  # a model doing 50 ms of work (sleeping, so replicas are not CPU-bound here)
    return x


def measure(seconds: float) -> dict:
    import httpx

    from lambdaml import model
    from lambdaml.deploy import app_status

    deployed = model(name="load", cpu=0.1, min=1, max=4, concurrency=1, scaledown_after=3)(slow_echo)
    deployment = deployed.deploy()
    url = f"{deployment.url}/predictions"
    statuses: list[int] = []
    replicas: list[tuple[float, int]] = []
    stop_at = time.monotonic() + seconds
    started = time.monotonic()

    def client() -> None:
        with httpx.Client(timeout=60) as session:
            while time.monotonic() < stop_at:
                try:
                    statuses.append(session.post(url, json={"input": {"x": 1}}).status_code)
                except httpx.HTTPError:
                    statuses.append(0)

    def watch(until: float) -> None:
        while time.monotonic() < until:
            running = app_status("load")["replicas"].get("RUNNING", 0)
            replicas.append((round(time.monotonic() - started, 2), running))
            time.sleep(0.25)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    watcher = threading.Thread(target=watch, args=(stop_at + 60,))
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    watcher.join()
    deployed.delete()
    peak = max(count for _, count in replicas)
    time_to_peak = next(t for t, count in replicas if count == peak)
    back_down = next((t for t, count in replicas if t > seconds and count <= 1), None)
    return {
        "requests": len(statuses),
        "ok": statuses.count(200),
        "lost": len(statuses) - statuses.count(200),
        "peak_replicas": peak,
        "seconds_to_peak": time_to_peak,
        "back_to_min_after_load_s": None if back_down is None else round(back_down - seconds, 2),
        "replica_timeline": replicas,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    result = measure_in_own_cluster(args.child, lambda: measure(args.seconds), ["--seconds", str(args.seconds)], "load", 3)
    if result is None:
        return
    save("load", result)
    summary = {k: v for k, v in result.items() if k != "replica_timeline"}
    print("\n".join(f"{key}: {value}" for key, value in summary.items()))


if __name__ == "__main__":
    main()
