"""A trivial Cog predictor served by Cog's own server and by ``lambdaml deploy``, side by side.

The same project (an async predictor, ``concurrency.max: 8``) runs under Cog's server
(``python -m cog.server.http`` with ``COG_MAX_CONCURRENCY=8``, as shared/NOTES.md describes:
no Docker) and as a lambdaml model on an embedded cluster of this benchmark's own (one
replica). Each round measures the p50 of sequential requests (alternating between the two,
request by request) and the successful answers per second from 8 loopback clients
(alternating which goes first). Goal: lambdaml >= Cog's throughput.
Usage: ``python bench/bench_cog.py [--quick]``. Writes ``bench/results/cog.json``.
"""

from __future__ import annotations

import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from _child import bench_main, paired_report, throughput

PREDICTOR = textwrap.dedent(
    """
    from cog import BasePredictor, Input


    class Predictor(BasePredictor):
        async def predict(self, text: str = Input(description="Echoed back")) -> str:
            return text
    """
)
BODY = {"input": {"text": "hello"}}
LABELS = {"lambdaml": "lambdaml deploy ./project", "cog": "Cog's server (coglet)"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_cog_server(project: pathlib.Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    # coglet spawns its worker as `python` from PATH: this interpreter's, which has the cog package
    path = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "COG_PREDICT_TYPE_STUB": "predict.py:Predictor", "PORT": str(port), "COG_MAX_CONCURRENCY": "8"}
    server = subprocess.Popen([sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"], cwd=project, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health-check", timeout=2).json().get("status") == "READY":
                return server, f"{url}/predictions"
        except (httpx.HTTPError, ValueError):
            time.sleep(0.2)
    server.kill()
    raise SystemExit("Cog's server did not become READY within 60 s")


def p50s(urls: dict[str, str], count: int) -> dict[str, float]:
    import httpx

    clients = {name: httpx.Client(timeout=30) for name in urls}
    samples: dict[str, list[float]] = {name: [] for name in urls}
    try:
        for name, client in clients.items():
            for _ in range(20):
                client.post(urls[name], json=BODY)
        names = list(urls)
        for index in range(count):
            for name in names if index % 2 == 0 else names[::-1]:
                started = time.perf_counter()
                answer = clients[name].post(urls[name], json=BODY)
                samples[name].append(time.perf_counter() - started)
                assert answer.status_code == 200 and answer.json()["output"] == "hello", answer.text
    finally:
        for client in clients.values():
            client.close()
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}


def rate(url: str, seconds: float) -> float:
    """Successful predictions per second from 8 clients (Cog answers 409 when every slot is busy: not counted)."""
    import httpx

    clients = [httpx.Client(timeout=30) for _ in range(8)]
    ok = [0] * 8

    def call(index: int) -> None:
        if clients[index].post(url, json=BODY).status_code == 200:
            ok[index] += 1

    try:
        throughput(call, seconds)
    finally:
        for client in clients:
            client.close()
    return sum(ok) / seconds


def measure(quick: bool) -> dict:
    from lambdaml import cog

    rounds, count, seconds = (2, 100, 3.0) if quick else (5, 300, 8.0)
    with tempfile.TemporaryDirectory() as folder:
        project = pathlib.Path(folder) / "echo-cog"
        project.mkdir()
        (project / "cog.yaml").write_text('predict: "predict.py:Predictor"\nconcurrency:\n  max: 8\n')
        (project / "predict.py").write_text(PREDICTOR)
        server, cog_url = start_cog_server(project)
        try:
            deployment = cog.load(project).deploy(min=1, max=1, cpu=0.5)
            urls = {"lambdaml": f"{deployment.url}/predictions", "cog": cog_url}
            results: dict = {"p50_ms": {n: [] for n in urls}, "per_s": {n: [] for n in urls}, "rounds": rounds}
            for round_index in range(rounds):
                for name, p50 in p50s(urls, count).items():
                    results["p50_ms"][name].append(p50)
                for name in (list(urls) if round_index % 2 == 0 else list(urls)[::-1]):
                    results["per_s"][name].append(rate(urls[name], seconds))
            return results
        finally:
            server.terminate()
            server.wait(timeout=30)


def report(results: dict) -> str:
    return paired_report(results, LABELS, "lambdaml", "cog", "ok/s", "server")


if __name__ == "__main__":
    bench_main(__doc__, "cog", 14, measure, report)
