"""Shared by the benchmarks: measure in a child process that has an embedded cluster of its own."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def run_child(script: str, args: list[str], env_overrides: dict[str, str], label: str) -> dict:
    """Run ``script --child *args`` with a private cluster (stopped afterwards); return its last JSON line."""
    env = dict(os.environ)
    env.update(env_overrides)
    env.setdefault("LAMBDAML_ARTIFACTS", f"{env_overrides['LAMBDAML_TEMP_DIR']}/artifacts")
    # Records (and API tokens) of a run of its own, not the user's ~/.lambdaml/records.db.
    records = Path(env_overrides["LAMBDAML_TEMP_DIR"]) / "records.db"
    records.unlink(missing_ok=True)
    env.setdefault("LAMBDAML_DATABASE_URL", f"sqlite:///{records}")
    for variable in ("LAMBDAML_ADDRESS", "RAY_ADDRESS", "LAMBDAML_URL"):
        env.pop(variable, None)
    command = [sys.executable, script, "--child", *args]
    try:
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"{label} failed:\n{error.stderr[-4000:]}") from None
    finally:
        subprocess.run([sys.executable, "-c", "import lambdaml; lambdaml.shutdown()"], env=env, check=False)
    results = [line for line in output.splitlines() if line.startswith("{")]  # Ray may print lines of its own
    if not results:
        raise SystemExit(f"{label} printed no result:\n{output[-4000:]}")
    return json.loads(results[-1])


def measure_in_own_cluster(
    child: bool, measure: Callable[[], dict], forwarded: list[str], name: str, offset: int
) -> dict | None:
    """The split every cluster benchmark makes: in the child (``--child``) print ``measure()``
    and return None; in the parent, rerun this script as that child on a private cluster
    (``private_cluster(name, offset)``) and return its result."""
    if child:
        print(json.dumps(measure()))
        return None
    return run_child(sys.argv[0], forwarded, private_cluster(name, offset), f"{name} benchmark")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}"


def private_cluster(name: str, offset: int) -> dict[str, str]:
    """Settings for a benchmark's own embedded cluster: its temp dir and loopback ports (6390 + offset, ...)."""
    return {
        "LAMBDAML_TEMP_DIR": f"/tmp/lmbench-{name}",
        "LAMBDAML_RAY_PORT": str(6390 + offset),
        "LAMBDAML_HTTP_PORT": str(8090 + offset),
        "LAMBDAML_DASHBOARD_PORT": str(8290 + offset),
    }


def save(name: str, data: dict) -> None:
    """Write ``bench/results/{name}.json`` with the machine, and print the machine line."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine(), **data}, indent=2))
    print(f"Machine: {machine()}\n")


def paired_report(results: dict, labels: dict[str, str], subject: str, baseline: str, unit: str, first: str) -> str:
    """A markdown table of the medians of ``results["p50_ms"]`` and ``["per_s"]`` for each of ``labels``,
    then ``subject`` against ``baseline``: the median of per-round p50 ratios, and the throughput ratio."""
    median = statistics.median
    p50, rates = results["p50_ms"], results["per_s"]
    lines = [f"| {first} | p50 ms | {unit} (8 threads) |", "|---|---:|---:|"]
    lines += [f"| {label} | {median(p50[key]):.2f} | {median(rates[key]):.0f} |" for key, label in labels.items()]
    ratio = median(a / b for a, b in zip(p50[subject], p50[baseline]))
    lines.append(f"\n{labels[subject]} / {labels[baseline]}: p50 {ratio:.2f}x (median of per-round ratios), "
                 f"throughput {median(rates[subject]) / median(rates[baseline]):.2f}x")
    return "\n".join(lines)


def bench_main(doc: str, name: str, offset: int, measure: Callable[[bool], dict], report: Callable[[dict], str]) -> None:
    """The command line every cluster benchmark has: ``[--quick]``, measured in a child with its own cluster."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    results = measure_in_own_cluster(args.child, lambda: measure(args.quick), ["--quick"] if args.quick else [], name, offset)
    if results is None:
        return
    save(name, results)
    print(report(results))


def throughput(call: Callable[[int], object], seconds: float, clients: int = 8) -> float:
    """Calls per second of ``call(thread index)`` from ``clients`` threads, back to back, for ``seconds``."""
    done = [0] * clients
    stop = time.monotonic() + seconds

    def loop(index: int) -> None:
        while time.monotonic() < stop:
            call(index)
            done[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / seconds
