"""Where a request's CPU goes: each process's CPU time per request, lambdaml against bare Serve.

On a machine whose cores every process shares (2 here), throughput is the inverse of the CPU
one request costs in all of them together: client, HAProxy, replica, control application,
Ray's own actors. This script serves the same trivial function with lambdaml (``async def``)
and with a bare Ray Serve deployment, drives each with 8 loopback clients for a few seconds
at a time, and divides every process's CPU time (``/proc/<pid>/stat``) over that stretch by
the requests served. Rounds alternate between the two servers; the table shows medians.

Usage: ``python bench/bench_cpu_split.py [--rounds 3]``. Writes ``bench/results/cpu_split.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _child import measure_in_own_cluster, save
from bench_skeleton import CLIENTS, throughput

SECONDS = 6
SERVERS = ("cpu-lambdaml", "cpu-bare")  # one row for both: the idle one adds its ~0.01 ms to each side alike
TICK = os.sysconf("SC_CLK_TCK")


def echo(x: int = 1) -> int:
    return x


async def async_echo(x: int = 1) -> int:
    return x


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """Per pid: its kind (a Serve replica by its app name) and the CPU seconds it has used so far.

    By pid, not by name: Ray retitles an actor's process while a call runs (``ray::ServeController``
    becomes ``ray::ServeController.listen_for_change``), and a name that changed within a window
    would count the process's whole lifetime.
    """
    found: dict[int, tuple[str, float]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if "ServeReplica:" in command:
            app = command.split("ServeReplica:")[1].split(":")[0]
            name = "replica of the server measured" if app in SERVERS else f"replica of {app}"
        elif int(pid) == os.getpid():
            name = "client (this process)"
        else:
            name = command.split()[0].rsplit("/", 1)[-1].split(".")[0] if command else "?"
        found[int(pid)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return found


def cpu_used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds used between two readings, per process kind (a process started meanwhile counts whole)."""
    used: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        used[name] = used.get(name, 0.0) + seconds - (before[pid][1] if pid in before else 0.0)
    return used


def measure(rounds: int) -> dict:
    from ray import serve
    from starlette.requests import Request

    from lambdaml import model
    from lambdaml.cluster import connect

    info = connect()
    model(name="cpu-lambdaml", cpu=0.5, min=1, max=1, concurrency=CLIENTS)(async_echo).deploy()

    @serve.deployment(name="cpu-bare", num_replicas=1, max_ongoing_requests=CLIENTS, ray_actor_options={"num_cpus": 0.5})
    class Bare:
        async def __call__(self, request: Request) -> dict:
            return {"output": echo(**(await request.json())["input"])}

    serve.run(Bare.bind(), name="cpu-bare", route_prefix="/cpu-bare")
    time.sleep(2)  # let the ingress pick up the route
    urls = {"lambdaml": f"{info.http_url}/cpu-lambdaml/predictions", "bare": f"{info.http_url}/cpu-bare"}
    body = {"input": {"x": 1}}
    for url in urls.values():
        throughput(url, body, 2, {})  # warm
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in urls}
    for _ in range(rounds):
        for name, url in urls.items():
            before = cpu_by_process()
            served = throughput(url, body, SECONDS, {}) * SECONDS
            used = cpu_used(before, cpu_by_process())
            for process, seconds in used.items():
                per_request_ms = seconds * 1000 / served
                samples[name].setdefault(process, []).append(per_request_ms)
            samples[name].setdefault("requests/s", []).append(served / SECONDS)
    return {name: {process: statistics.median(values) for process, values in figures.items()}
            for name, figures in samples.items()}


def report(result: dict) -> str:
    processes = sorted({p for figures in result.values() for p in figures if p != "requests/s"},
                       key=lambda p: -result["bare"].get(p, 0.0) - result["lambdaml"].get(p, 0.0))
    lines = ["| process | bare Serve, CPU ms per request | lambdaml | difference |", "|---|---:|---:|---:|"]
    for process in processes:
        bare, ours = result["bare"].get(process, 0.0), result["lambdaml"].get(process, 0.0)
        if max(bare, ours) >= 0.005:
            lines.append(f"| {process} | {bare:.3f} | {ours:.3f} | {ours - bare:+.3f} |")
    totals = {name: sum(v for p, v in figures.items() if p != "requests/s") for name, figures in result.items()}
    lines.append(f"| all | {totals['bare']:.3f} | {totals['lambdaml']:.3f} | {totals['lambdaml'] - totals['bare']:+.3f} |")
    lines.append(f"| requests/s | {result['bare']['requests/s']:.0f} | {result['lambdaml']['requests/s']:.0f} | "
                 f"{result['lambdaml']['requests/s'] / result['bare']['requests/s']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    result = measure_in_own_cluster(args.child, lambda: measure(args.rounds), ["--rounds", str(args.rounds)], "cpu", 6)
    if result is not None:
        save("cpu_split", result)
        print(report(result))


if __name__ == "__main__":
    main()
