"""Walking-skeleton benchmark: lambdaml against bare Ray Serve, in one run.

For each ingress mode (HAProxy, Ray's Python proxy) it starts an embedded
cluster of its own and measures, on the same trivial function:

* warm latency (p50, p99) of sequential requests over one keep-alive connection,
  with two bare baselines: the function called inline in an ``async`` handler, and
  run in a thread (``asyncio.to_thread``), the fair baseline for a plain ``def``;
* requests/s with 8 concurrent loopback clients, in short windows that alternate between the
  servers (the throughput ratios pair adjacent windows);
* cold start from zero replicas: lambdaml's defaults, and a bare Serve
  deployment with Ray's default autoscaling timings (on the same cluster).

With ``--auth`` an API token is made first, so lambdaml checks every request's
``Authorization`` header (all servers are sent it; the bare ones ignore it).

Usage: ``python bench/bench_skeleton.py [--quick] [--auth]``. Prints a Markdown table and
writes ``bench/results/skeleton.json``. Numbers are medians of the rounds run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from pathlib import Path

import httpx
from _child import machine, run_child

RESULTS = Path(__file__).parent / "results"
CLIENTS = 8


def echo(x: int = 1) -> int:
    return x


async def async_echo(x: int = 1) -> int:
    return x


# ------------------------------------------------------------------ measuring


def latencies(urls: dict[str, str], body: dict, count: int, headers: dict[str, str]) -> dict[str, list[float]]:
    """Sequential requests to every server in turn (order alternating), each over its own keep-alive connection.

    Interleaving request by request means a machine whose speed drifts (a shared VM)
    slows every server alike; measuring one server's block after another's did not.
    """
    clients = {name: httpx.Client(timeout=30, headers=headers) for name in urls}
    try:
        for name, client in clients.items():
            for _ in range(20):  # warm the connection and the replica
                client.post(urls[name], json=body)
        samples: dict[str, list[float]] = {name: [] for name in urls}
        names = list(urls)
        for index in range(count):
            for name in names if index % 2 == 0 else names[::-1]:
                started = time.perf_counter()
                response = clients[name].post(urls[name], json=body)
                samples[name].append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
        return samples
    finally:
        for client in clients.values():
            client.close()


def throughput(url: str, body: dict, seconds: float, headers: dict[str, str]) -> float:
    done = [0] * CLIENTS
    stop = time.perf_counter() + seconds

    def client_loop(index: int) -> None:
        with httpx.Client(timeout=30, headers=headers) as client:
            while time.perf_counter() < stop:
                if client.post(url, json=body).status_code == 200:
                    done[index] += 1

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / seconds


def wait_for_zero(replica_count, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while replica_count() and time.monotonic() < deadline:
        time.sleep(0.25)
    if replica_count():
        raise RuntimeError("the deployment did not scale to zero")


def cold_start(url: str, body: dict, replica_count, headers: dict[str, str]) -> float:
    wait_for_zero(replica_count)
    started = time.perf_counter()
    response = httpx.post(url, json=body, timeout=120, headers=headers)
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


# ------------------------------------------------------------------ one ingress mode


def measure(quick: bool, auth: bool) -> dict:
    from ray import serve
    from starlette.requests import Request

    from lambdaml import model, tokens
    from lambdaml.cluster import connect
    from lambdaml.deploy import app_status

    info = connect()
    # The same trivial function in both shapes. lambdaml runs ``async def`` on the
    # replica's loop, as a bare Serve handler does, and ``def`` in a worker thread.
    lambdaml_async = model(name="bench-lambdaml-async", cpu=0.5, min=1, max=1, concurrency=CLIENTS)(async_echo)
    lambdaml_sync = model(name="bench-lambdaml-sync", cpu=0.5, min=1, max=1, concurrency=CLIENTS)(echo)
    lambdaml_async.deploy()
    lambdaml_sync.deploy()
    headers = {"Authorization": f"Bearer {tokens.create('bench', 'predict')[1]}"} if auth else {}

    @serve.deployment(name="bench-bare", num_replicas=1, max_ongoing_requests=CLIENTS, ray_actor_options={"num_cpus": 0.5})
    class Bare:
        async def __call__(self, request: Request) -> dict:
            body = await request.json()
            return {"output": echo(**body["input"])}

    # The fair baseline for a plain ``def``: a blocking function run off the event loop, as a
    # Serve user would (and as Serve itself runs sync methods, in a thread pool).
    @serve.deployment(name="bench-bare-thread", num_replicas=1, max_ongoing_requests=CLIENTS, ray_actor_options={"num_cpus": 0.5})
    class BareThread:
        async def __call__(self, request: Request) -> dict:
            body = await request.json()
            return {"output": await asyncio.to_thread(echo, **body["input"])}

    serve.run(Bare.bind(), name="bench-bare", route_prefix="/bench-bare")
    serve.run(BareThread.bind(), name="bench-bare-thread", route_prefix="/bench-bare-thread")
    time.sleep(2)  # let the ingress pick up the routes
    body = {"input": {"x": 1}}
    urls = {
        "bare": f"{info.http_url}/bench-bare",
        "bare_thread": f"{info.http_url}/bench-bare-thread",
        "lambdaml_async": f"{info.http_url}/bench-lambdaml-async/predictions",
        "lambdaml_sync": f"{info.http_url}/bench-lambdaml-sync/predictions",
    }
    # Throughput in short windows, every server in turn (who goes first rotates), so that a drifting
    # machine slows each server alike: the ratio is the median of the windows' paired ratios.
    rounds, count, windows, seconds = (1, 300, 3, 1.0) if quick else (5, 1000, 2, 2.5)
    warm: dict[str, dict[str, list[float]]] = {name: {"p50": [], "p99": [], "rps": []} for name in urls}
    names = list(urls)
    for round_index in range(rounds):
        for name, samples in latencies(urls, body, count, headers).items():
            samples.sort()
            warm[name]["p50"].append(samples[len(samples) // 2] * 1000)
            warm[name]["p99"].append(samples[int(len(samples) * 0.99)] * 1000)
        for window in range(windows):
            first = (round_index * windows + window) % len(names)
            for name in names[first:] + names[:first]:
                warm[name]["rps"].append(throughput(urls[name], body, seconds, headers))
    result = {name: {k: statistics.median(v) for k, v in m.items()} for name, m in warm.items()}
    pairs = {"lambdaml_async": ("lambdaml_async", "bare"), "lambdaml_sync": ("lambdaml_sync", "bare"),
             "lambdaml_sync_vs_thread": ("lambdaml_sync", "bare_thread")}
    for figure in ("p50", "rps"):  # paired: the two were measured side by side (interleaved, or adjacent windows)
        result[f"{figure}_ratios"] = {
            key: statistics.median(a / b for a, b in zip(warm[server][figure], warm[baseline][figure]))
            for key, (server, baseline) in pairs.items()
        }
    serve.delete("bench-bare")
    serve.delete("bench-bare-thread")
    lambdaml_async.delete()
    lambdaml_sync.delete()

    cold_lambdaml = model(name="bench-cold", cpu=0.5, min=0, max=1, scaledown_after=1)(echo)
    cold_lambdaml.deploy()

    @serve.deployment(
        name="bench-cold-ray",
        ray_actor_options={"num_cpus": 0.5},
        # Ray's default timings, except scaling down sooner so the runs fit in minutes.
        autoscaling_config={"min_replicas": 0, "max_replicas": 1, "downscale_delay_s": 1, "downscale_to_zero_delay_s": 1},
    )
    class BareCold:
        async def __call__(self, request: Request) -> dict:
            return {"output": echo(**(await request.json())["input"])}

    serve.run(BareCold.bind(), name="bench-cold-ray", route_prefix="/bench-cold-ray")
    time.sleep(2)
    cold_rounds = 2 if quick else 5
    result["cold_start_s"] = {
        "lambdaml": statistics.median(
            cold_start(f"{info.http_url}/bench-cold/predictions", body, lambda: app_status("bench-cold")["replicas"], headers)
            for _ in range(cold_rounds)
        ),
        "ray_defaults": statistics.median(
            cold_start(f"{info.http_url}/bench-cold-ray", body, lambda: app_status("bench-cold-ray")["replicas"], headers)
            for _ in range(2 if quick else 3)
        ),
    }
    serve.delete("bench-cold-ray")
    cold_lambdaml.delete()
    return result


# ------------------------------------------------------------------ driver


def run_mode(ingress: str, quick: bool, auth: bool) -> dict:
    """Measure one ingress mode in a child process with a cluster of its own."""
    overrides = {
        "LAMBDAML_INGRESS": ingress,
        "LAMBDAML_TEMP_DIR": f"/tmp/lmbench-{ingress}",
        "LAMBDAML_RAY_PORT": "6390",
        "LAMBDAML_HTTP_PORT": "8090",
        "LAMBDAML_DASHBOARD_PORT": "8290",
    }
    flags = ["--quick"] * quick + ["--auth"] * auth
    return run_child(__file__, flags, overrides, f"{ingress} run")


def report(results: dict) -> str:
    lines = [
        "| ingress | server | p50 ms | p99 ms | req/s (8 clients) |",
        "|---|---|---:|---:|---:|",
    ]
    for ingress, result in results.items():
        for name in ("bare", "bare_thread", "lambdaml_async", "lambdaml_sync"):
            r = result[name]
            lines.append(f"| {ingress} | {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} |")
    lines.append("")
    lines.append(
        "| ingress | p50 ratio, async def / bare (goal <= 1.10; median of per-round ratios) | def / bare | "
        "def / bare_thread | throughput ratio, async def / bare (goal >= 0.95; median of per-window ratios) | "
        "def / bare_thread | cold start lambdaml s (goal <= 2) | cold start Ray defaults s |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for ingress, result in results.items():
        ratios, rps, cold = result["p50_ratios"], result["rps_ratios"], result["cold_start_s"]
        lines.append(
            f"| {ingress} | {ratios['lambdaml_async']:.2f} | {ratios['lambdaml_sync']:.2f} | "
            f"{ratios['lambdaml_sync_vs_thread']:.2f} | {rps['lambdaml_async']:.2f} | "
            f"{rps['lambdaml_sync_vs_thread']:.2f} | {cold['lambdaml']:.2f} | {cold['ray_defaults']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    parser.add_argument("--ingress", choices=["haproxy", "python"], action="append", help="only this mode (repeatable)")
    parser.add_argument("--auth", action="store_true", help="make an API token first: every lambdaml request is checked")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.quick, args.auth)))
        return
    results = {ingress: run_mode(ingress, args.quick, args.auth) for ingress in args.ingress or ("haproxy", "python")}
    RESULTS.mkdir(exist_ok=True)
    name = "skeleton" + "".join(f"-{ingress}" for ingress in args.ingress or ()) + "-auth" * args.auth + ".json"
    (RESULTS / name).write_text(json.dumps({"machine": machine(), "auth": args.auth, "results": results}, indent=2))
    print(f"Machine: {machine()}{', with an API token on every request' * args.auth}\n")
    print(report(results))


if __name__ == "__main__":
    main()
