"""Batching benchmark for examples/torch_batch.py, without Ray: the network alone, batched vs one by one.

Runs on CPU, and on CUDA when torch sees a GPU (the GPU machine has torch but not
Ray, so this script needs neither Ray nor lambdaml's cluster). For each device it
times `--requests` single-example forward passes, then the same examples in batches
of `--batch` (what `@model(batch=...)` gives the model), and reports examples/s and
the ratio. Usage: ``python bench/bench_batching.py [--requests 2048] [--batch 16]``.
Writes ``bench/results/batching.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import time
from pathlib import Path

import torch

EXAMPLE = Path(__file__).parent.parent / "examples" / "torch_batch.py"
RESULTS = Path(__file__).parent / "results"


def load_example():
    spec = importlib.util.spec_from_file_location("torch_batch", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # needs lambdaml importable only for the decorator, not a cluster
    return module


def throughput(network, inputs: torch.Tensor, batch: int, device: str) -> float:
    """Examples per second through ``network`` in batches of ``batch`` (median of 3 runs)."""
    rates = []
    with torch.inference_mode():
        for _ in range(3):
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            for start in range(0, len(inputs), batch):
                network(inputs[start : start + batch].to(device)).softmax(dim=1).max(dim=1)[1].cpu()
            if device == "cuda":
                torch.cuda.synchronize()
            rates.append(len(inputs) / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    example = load_example()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {}
    for device in devices:
        network = example.build_network(device)
        inputs = torch.rand(args.requests, example.FEATURES)
        throughput(network, inputs[:64], 1, device)  # warm up
        single = throughput(network, inputs, 1, device)
        batched = throughput(network, inputs, args.batch, device)
        name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
        results[device] = {"device_name": name, "single_per_s": single, "batched_per_s": batched,
                           "ratio": batched / single, "batch": args.batch}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batching.json").write_text(json.dumps(results, indent=2))
    print(f"torch {torch.__version__}, {args.requests} requests, batch {args.batch}\n")
    print("| device | one at a time /s | batched /s | ratio |\n|---|---:|---:|---:|")
    for device, r in results.items():
        print(f"| {device} ({r['device_name']}) | {r['single_per_s']:.0f} | {r['batched_per_s']:.0f} | {r['ratio']:.1f}x |")


if __name__ == "__main__":
    main()
