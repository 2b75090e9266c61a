"""Reliability under load: what callers see while the cluster is overloaded, redeployed, or loses a replica.

Run: ``python bench/bench_reliability.py``. On a private embedded cluster of its own, loopback only,
bounded in time (about 2 minutes):

- ``overload``: 64 clients for 15 s against a ``max=1, concurrency=1, queue=8`` model that takes
  0.2 s: past the queue, 503 with ``Retry-After``; every accepted request answered.
- ``redeploy``: 8 clients for 20 s; new code deployed 6 s in (tests/test_reliability.py: 0 failed).
- ``replica killed``: 8 clients for 20 s; the replica SIGKILLed 4 s in. Callers of the lost replica
  get a JSON error; recovery is the time from the kill to the first success after the last failure.

Also the replica's resident memory before and after each load. Figures in bench/README.md;
raw ones in bench/results/reliability.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))  # tests.load: the same load the tests put on
from _child import measure_in_own_cluster, save  # noqa: E402

import lambdaml  # noqa: E402
from lambdaml import model  # noqa: E402
from tests.load import LoadResult, steady_load  # noqa: E402


@model(name="rel-queue", cpu=0.1, min=1, max=1, concurrency=1, queue=8)
async def queued(x: int = 1) -> int:
    await asyncio.sleep(0.2)
    return os.getpid()


def _rolling(greeting: str):
    @model(name="rel-rolling", cpu=0.1, min=1, max=1)
    def rolling(x: int = 1) -> str:
        return greeting

    return rolling


@model(name="rel-victim", cpu=0.1, min=1, max=1)
def victim(x: int = 1) -> int:
    return os.getpid()


def _rss_mib(pid: int) -> float:
    """Resident memory of a replica process, from /proc (this machine's)."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _figures(result: LoadResult, before: float, after: float | None) -> dict:
    return {
        "sent": len(result.answers), "failed": len(result.failed), "statuses": result.statuses,
        "not_json": sum(not answer.json for answer in result.answers), "recovery_s": result.recovery_s(),
        "rss_before_mib": round(before, 1), "rss_after_mib": None if after is None else round(after, 1),
    }


def measure() -> dict:
    results = {}
    url = queued.deploy().url
    pid = lambdaml.run("rel-queue", {})
    before = _rss_mib(pid)
    results["overload"] = _figures(steady_load(f"{url}/predictions", {"input": {}}, clients=64, seconds=15), before,
                                   _rss_mib(pid))
    queued.delete()

    url = _rolling("v1").deploy().url
    result = steady_load(f"{url}/predictions", {"input": {}}, clients=8, seconds=20,
                         during=lambda: _rolling("v2").deploy(), at=6)
    results["redeploy"] = _figures(result, 0.0, None)
    _rolling("v2").delete()

    url = victim.deploy().url
    pid = lambdaml.run("rel-victim", {})
    before = _rss_mib(pid)
    result = steady_load(f"{url}/predictions", {"input": {}}, clients=8, seconds=20,
                         during=lambda: os.kill(pid, signal.SIGKILL), at=4)
    results["replica killed"] = _figures(result, before, _rss_mib(lambdaml.run("rel-victim", {})))
    victim.delete()
    return results


def report(results: dict) -> str:
    lines = ["| scenario | sent | failed | status counts | not JSON | recovery | replica RSS before / after |",
             "|---|---|---|---|---|---|---|"]
    for scenario, figures in results.items():
        statuses = ", ".join(f"{status}: {count}" for status, count in sorted(figures["statuses"].items()))
        recovery = "-" if figures["recovery_s"] is None else f"{figures['recovery_s']:.1f} s"
        memory = "-" if figures["rss_after_mib"] is None else f"{figures['rss_before_mib']} / {figures['rss_after_mib']} MiB"
        lines.append(f"| {scenario} | {figures['sent']} | {figures['failed']} | {statuses} | {figures['not_json']} "
                     f"| {recovery} | {memory} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    results = measure_in_own_cluster(args.child, measure, [], "reliability", 8)
    if results is None:
        return
    save("reliability", results)
    print(report(results))


if __name__ == "__main__":
    main()
