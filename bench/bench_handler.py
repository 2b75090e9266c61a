"""Where the p50 gap lives: each replica's own handler time, lambdaml's against bare Serve's.

The skeleton's p50 ratio moves by +-0.05 between runs of the same code on this VM, more than
any one change to the request path. The time a request spends in its replica's handler is
what such a change moves, and it is measured here inside the replicas themselves (wall and
thread CPU from entering ``__call__`` to its answer), for bare Serve and lambdaml, on one
cluster, with sequential requests interleaved through the HAProxy ingress (as the skeleton's
p50). lambdaml's replicas get the timing through a subclass of ``ModelServer`` that the
deploy uses in this process only.

Usage: ``python bench/bench_handler.py [--rounds 5] [--requests 400]``. Prints per round the
p50 through the ingress and the handlers' medians; writes ``bench/results/handler.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx
from _child import RESULTS, machine, run_child


async def async_echo(x: int = 1) -> int:
    return x


def _timed(handler_class: type) -> type:
    """``handler_class`` with its ``__call__`` timed; ``GET .../handler-times`` hands the samples over."""

    class Timed(handler_class):
        async def __call__(self, request):
            from starlette.responses import JSONResponse

            if request.scope["path"].endswith("/handler-times"):
                samples, self._samples = getattr(self, "_samples", []), []
                return JSONResponse(samples)
            wall, cpu = time.perf_counter(), time.thread_time()
            answer = await super().__call__(request)
            self.__dict__.setdefault("_samples", []).append((time.perf_counter() - wall, time.thread_time() - cpu))
            return answer

    return Timed


def measure(rounds: int, requests: int) -> dict:
    from ray import serve
    from starlette.requests import Request

    import lambdaml.serve.server
    from lambdaml import model
    from lambdaml.cluster import connect

    info = connect()
    serves = lambdaml.serve.server.ModelServer
    lambdaml.serve.server.ModelServer = _timed(serves)  # what app.build_with_fingerprint deploys, here only
    try:
        model(name="handler-lambdaml", cpu=0.1, min=1, max=1, concurrency=8)(async_echo).deploy()
    finally:
        lambdaml.serve.server.ModelServer = serves

    class Bare:
        async def __call__(self, request: Request) -> dict:
            body = await request.json()
            return {"output": await async_echo(**body["input"])}

    bare = serve.deployment(_timed(Bare), name="handler-bare", num_replicas=1, max_ongoing_requests=8,
                            ray_actor_options={"num_cpus": 0.1})
    serve.run(bare.bind(), name="handler-bare", route_prefix="/handler-bare")
    time.sleep(2)  # the ingress picks up the route
    bases = {"bare": f"{info.http_url}/handler-bare", "lambdaml": f"{info.http_url}/handler-lambdaml"}
    urls = {"bare": bases["bare"], "lambdaml": bases["lambdaml"] + "/predictions"}
    clients = {name: httpx.Client(timeout=30) for name in urls}
    body = {"input": {"x": 1}}
    figures: dict[str, dict[str, list[float]]] = {name: {"p50": [], "wall": [], "cpu": []} for name in urls}
    try:
        for name, client in clients.items():
            for _ in range(50):
                client.post(urls[name], json=body)
        names = list(urls)
        for _ in range(rounds):
            for name, client in clients.items():
                client.get(f"{bases[name]}/handler-times")  # drop the warm-up's and the last round's
            latencies: dict[str, list[float]] = {name: [] for name in urls}
            for index in range(requests):
                for name in names if index % 2 == 0 else names[::-1]:
                    started = time.perf_counter()
                    assert clients[name].post(urls[name], json=body).status_code == 200
                    latencies[name].append(time.perf_counter() - started)
            for name, client in clients.items():
                samples = client.get(f"{bases[name]}/handler-times").json()
                figures[name]["p50"].append(statistics.median(latencies[name]) * 1e6)
                figures[name]["wall"].append(statistics.median(wall for wall, _ in samples) * 1e6)
                figures[name]["cpu"].append(statistics.median(cpu for _, cpu in samples) * 1e6)
    finally:
        for client in clients.values():
            client.close()
    serve.delete("handler-bare")
    serve.delete("handler-lambdaml")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=400, help="per server and round")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.rounds, args.requests)))
        return
    overrides = {"LAMBDAML_INGRESS": "haproxy", "LAMBDAML_TEMP_DIR": "/tmp/lmbench-handler",
                 "LAMBDAML_RAY_PORT": "6392", "LAMBDAML_HTTP_PORT": "8092", "LAMBDAML_DASHBOARD_PORT": "8292"}
    figures = run_child(__file__, ["--rounds", str(args.rounds), "--requests", str(args.requests)], overrides, "handler run")
    bare, lam = figures["bare"], figures["lambdaml"]
    print(f"Machine: {machine()}\n")
    print("| round | p50 bare / lambdaml us | p50 ratio | handler wall bare / lambdaml us | lambdaml's extra | CPU bare / lambdaml us |")
    print("|---:|---|---:|---|---:|---|")
    for index in range(len(bare["p50"])):
        print(f"| {index + 1} | {bare['p50'][index]:.0f} / {lam['p50'][index]:.0f} | {lam['p50'][index] / bare['p50'][index]:.3f} "
              f"| {bare['wall'][index]:.0f} / {lam['wall'][index]:.0f} | {lam['wall'][index] - bare['wall'][index]:.0f} "
              f"| {bare['cpu'][index]:.0f} / {lam['cpu'][index]:.0f} |")
    ratio = statistics.median(a / b for a, b in zip(lam["p50"], bare["p50"]))
    extra = statistics.median(a - b for a, b in zip(lam["wall"], bare["wall"]))
    times = statistics.median(a / b for a, b in zip(lam["wall"], bare["wall"]))
    print(f"\nMedians: p50 ratio {ratio:.3f}; lambdaml's handler {extra:.0f} us longer than bare's ({times:.1f}x)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "handler.json").write_text(json.dumps({"machine": machine(), "figures": figures}, indent=2))


if __name__ == "__main__":
    main()
