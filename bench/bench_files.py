"""Files benchmark: a 256 MB S3 input fetched by a replica, against a raw s3fs get.

One run starts moto's S3 server on loopback and an embedded cluster of its own,
puts a 256 MB object, and alternates, for each round:

* ``raw``: ``s3fs.S3FileSystem().get_file`` of the object into a temp file, in a
  Ray worker process like the replica's, timed inside the worker (the
  filesystem object is reused across rounds, as lambdaml reuses its own);
* ``lambdaml``: a prediction whose ``Path`` input is the object's s3:// URL,
  timed end to end over HTTP; the replica's own ``metrics.fetch_time`` is
  reported too.

Usage: ``python bench/bench_files.py [--rounds N] [--mb 256]``. Prints a Markdown
table and writes ``bench/results/files.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

from _child import private_cluster, run_child, save

from lambdaml import Path as FilePath  # at module level: annotations are resolved in module globals
from lambdaml import model


def measure(rounds: int, megabytes: int) -> dict[str, list[float]]:
    from lambdaml.testing import local_s3

    with local_s3("bench"):
        return _measure(rounds, megabytes)


def _measure(rounds: int, megabytes: int) -> dict[str, list[float]]:
    import httpx
    import ray
    import s3fs

    os.environ["LAMBDAML_MAX_INPUT_BYTES"] = str((megabytes + 1) * 2**20)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("bench")
    fs.pipe("bench/big.bin", os.urandom(megabytes * 2**20))

    @model(name="bench-files", cpu=0.5, min=1)
    def size_of(data: FilePath) -> int:
        return data.stat().st_size

    deployment = size_of.deploy()
    credentials = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}

    @ray.remote(num_cpus=0.5)
    def raw_get(target: str) -> float:
        """The baseline, in a worker process like the replica's: one s3fs get_file, timed inside."""
        os.environ.update(credentials)
        started = time.perf_counter()
        s3fs.S3FileSystem().get_file("bench/big.bin", target)  # a cached instance, as lambdaml reuses its own
        elapsed = time.perf_counter() - started
        os.remove(target)
        return elapsed

    results: dict[str, list[float]] = {"raw": [], "lambdaml": [], "lambdaml_fetch": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(rounds):
            results["raw"].append(ray.get(raw_get.remote(f"{folder}/big.bin")))

            started = time.perf_counter()
            response = httpx.post(
                f"{deployment.url}/predictions", json={"input": {"data": "s3://bench/big.bin"}}, timeout=600
            )
            results["lambdaml"].append(time.perf_counter() - started)
            body = response.json()
            assert body["output"] == megabytes * 2**20, body
            results["lambdaml_fetch"].append(body["metrics"]["fetch_time"])
    size_of.delete()
    return results


def report(results: dict[str, list[float]], megabytes: int) -> str:
    raw = statistics.median(results["raw"])
    lines = [
        "| what | median s | MB/s | raw s3fs time / this time (goal >= 0.9) |",
        "|---|---:|---:|---:|",
    ]
    labels = {
        "raw": "raw s3fs get_file (Ray worker)",
        "lambdaml": "lambdaml prediction, end to end",
        "lambdaml_fetch": "lambdaml replica fetch (metrics.fetch_time)",
    }
    for key, label in labels.items():
        value = statistics.median(results[key])
        lines.append(f"| {label} | {value:.2f} | {megabytes / value:.0f} | {raw / value:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.rounds, args.mb)))
        return
    overrides = private_cluster("files", 2)
    results = run_child(__file__, ["--rounds", str(args.rounds), "--mb", str(args.mb)], overrides, "files benchmark")
    save("files", {"mb": args.mb, "results": results})
    print(report(results, args.mb))


if __name__ == "__main__":
    main()
