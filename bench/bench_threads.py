"""One thread hop for a sync ``predict``: ``asyncio.to_thread`` against ``lambdaml.serve.threads.SyncRunner``.

Run: ``python bench/bench_threads.py [--calls 5000] [--rounds 5]``. In process, no Ray: the
median over rounds of the mean time per hop of a function that does nothing, awaited one at a
time from an event loop, the way a replica awaits a ``def predict``. The figure threads.py
and bench/README.md quote.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _child import machine  # noqa: E402

from lambdaml.serve.threads import SyncRunner  # noqa: E402


def nothing() -> None:
    return None


async def per_hop_us(calls: int) -> tuple[float, float]:
    runner = SyncRunner("bench")
    for _ in range(100):  # threads started, caches warm
        await asyncio.to_thread(nothing)
        await runner.run(nothing, {})
    started = time.perf_counter()
    for _ in range(calls):
        await asyncio.to_thread(nothing)
    to_thread = (time.perf_counter() - started) / calls * 1e6
    started = time.perf_counter()
    for _ in range(calls):
        await runner.run(nothing, {})
    sync_runner = (time.perf_counter() - started) / calls * 1e6
    return to_thread, sync_runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds = [asyncio.run(per_hop_us(args.calls)) for _ in range(args.rounds)]
    to_thread = statistics.median(r[0] for r in rounds)
    sync_runner = statistics.median(r[1] for r in rounds)
    print(f"Machine: {machine()}\n")
    print("| hop | median us per call |\n|---|---:|")
    print(f"| asyncio.to_thread | {to_thread:.0f} |\n| SyncRunner.run | {sync_runner:.0f} |")
    print(f"\nSyncRunner / to_thread: {sync_runner / to_thread:.2f}")


if __name__ == "__main__":
    main()
