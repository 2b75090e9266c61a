"""Toward 50 replicas: @model(cpu=0.1, min=0, max=50) on a simulated cluster.yaml cluster.

In a child process with a cluster of its own, started as ``lambdaml up --simulate
cluster.yaml`` would (Ray's fake multi-node provider: every node is local processes,
GPUs are fake). The head takes no replicas, so the first request makes the autoscaler
add a node. Deploys a model that holds each request 0.5 s (``concurrency=1``,
``cpu=0.1``; with ``--gpu A100`` also one fake A100 per replica, 8 per p4d node), then
sends a bounded loopback load of ``--clients`` concurrent clients until the replica
count reaches ``--max`` or ``--seconds`` pass, and keeps it there 10 s more. Every second it records running replicas and live nodes. After the
load it waits for zero replicas and for the nodes to go. Memory is the drop in this
machine's MemAvailable from before the cluster started, and the proportional set size
(PSS) of the cluster's processes, at the peak. Usage:
``python bench/bench_scale.py [--max 50] [--clients 50]``. Writes ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import collections
import threading
import time
from pathlib import Path

from _child import measure_in_own_cluster, save

CLUSTER_YAML = Path(__file__).parent.parent / "cluster.yaml"
IDLE_TIMEOUT_S = 10
WORK_S = 0.5


def hold(x: int = 1) -> int:
    time.sleep(WORK_S)  # a model holding its replica (sleeping: 2 cores cannot run 50 busy replicas)
    return x


def _mem_available_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _cluster_pss_bytes() -> int:
    """Proportional set size of every process of the embedded cluster (shared pages counted once)."""
    from lambdaml import cluster
    from lambdaml.cluster.head import _cluster_processes

    info = cluster.current()
    total = 0
    for pid in _cluster_processes(Path(info.temp_dir), info.supervisor_pid):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                total += next(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
    return total


def measure(target: int, clients: int, seconds: float, gpu: str | None) -> dict:
    import httpx
    import ray

    from lambdaml import cluster, model
    from lambdaml.cluster.node_types import Simulation
    from lambdaml.deploy import app_status

    before = _mem_available_bytes()
    started_cluster = time.monotonic()
    cluster.start(simulate=Simulation(CLUSTER_YAML, IDLE_TIMEOUT_S))
    cluster.connect()
    cluster_start_s = time.monotonic() - started_cluster
    deployed = model(name="scale", gpu=gpu, cpu=0.1, min=0, max=target, concurrency=1, scaledown_after=5)(hold)
    deployment = deployed.deploy()
    url = f"{deployment.url}/predictions"
    statuses: list[int] = []
    timeline: list[tuple[float, int, int]] = []  # (seconds since load began, running replicas, live nodes)
    peak = {"replicas": 0, "memory_drop": 0, "cluster_pss": 0, "measured_at": 0.0}  # when memory was last read
    load_started = time.monotonic()
    stop = {"at": load_started + seconds}

    def client() -> None:
        with httpx.Client(timeout=300) as session:
            while time.monotonic() < stop["at"]:
                try:
                    statuses.append(session.post(url, json={"input": {"x": 1}}).status_code)
                except httpx.HTTPError:
                    statuses.append(0)

    def sample() -> tuple[int, int]:
        running = app_status("scale")["replicas"].get("RUNNING", 0)
        nodes = sum(1 for node in ray.nodes() if node["Alive"])
        timeline.append((round(time.monotonic() - load_started, 1), running, nodes))
        return running, nodes

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    reached_at = None
    while time.monotonic() < stop["at"]:
        running, _ = sample()
        # Memory at each new peak, at most every 10 s: reading every process's smaps costs CPU here too.
        if running > peak["replicas"] and time.monotonic() - peak["measured_at"] > 10 or running >= target:
            peak.update(replicas=running, memory_drop=before - _mem_available_bytes(), cluster_pss=_cluster_pss_bytes(),
                        measured_at=time.monotonic())
        if running >= target and reached_at is None:
            reached_at = time.monotonic() - load_started
            stop["at"] = min(stop["at"], time.monotonic() + 10)  # hold the peak 10 s, then end the load
        time.sleep(1)
    for thread in threads:
        thread.join()
    load_ended = time.monotonic() - load_started
    zero_at = nodes_gone_at = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and nodes_gone_at is None:
        running, nodes = sample()
        if running == 0 and zero_at is None:
            zero_at = time.monotonic() - load_started
        if running == 0 and nodes == 1:
            nodes_gone_at = time.monotonic() - load_started
        time.sleep(1)
    deployed.delete()
    return {
        "target_replicas": target,
        "gpu": gpu,
        "clients": clients,
        "work_s": WORK_S,
        "cluster_start_s": round(cluster_start_s, 1),
        "peak_replicas": max(running for _, running, _ in timeline),
        "peak_nodes": max(nodes for _, _, nodes in timeline),
        "seconds_to_target": None if reached_at is None else round(reached_at, 1),
        "requests": len(statuses),
        "ok": statuses.count(200),
        "lost": len(statuses) - statuses.count(200),
        "status_codes": dict(collections.Counter(statuses)),
        "memory_drop_at_peak_gib": round(peak["memory_drop"] / 2**30, 2),
        "cluster_pss_at_peak_gib": round(peak["cluster_pss"] / 2**30, 2),
        "zero_replicas_after_load_s": None if zero_at is None else round(zero_at - load_ended, 1),
        "nodes_removed_after_load_s": None if nodes_gone_at is None else round(nodes_gone_at - load_ended, 1),
        "timeline": timeline,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max", type=int, default=50, help="the model's max replicas")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=240, help="give up on reaching --max after this long")
    parser.add_argument("--gpu", default=None, help="also ask for this GPU per replica, e.g. A100 (fake)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    forwarded = ["--max", str(args.max), "--clients", str(args.clients), "--seconds", str(args.seconds)]
    forwarded += ["--gpu", args.gpu] if args.gpu else []
    run = lambda: measure(args.max, args.clients, args.seconds, args.gpu)  # noqa: E731
    result = measure_in_own_cluster(args.child, run, forwarded, "scale", 5)
    if result is None:
        return
    save("scale" if not args.gpu else f"scale-{args.gpu.lower()}", result)
    print("\n".join(f"{key}: {value}" for key, value in result.items() if key != "timeline"))


if __name__ == "__main__":
    main()
