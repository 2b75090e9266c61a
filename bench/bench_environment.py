"""Environment benchmark: how long until a new deployment answers, by how its packages arrive.

On one embedded cluster (ports of its own), the same small function that imports
httpx and pydantic is deployed as:

* ``bare``: a bare Ray Serve deployment without runtime_env (the baseline);
* ``lambdaml``: ``@model`` with auto-detected packages, all present on the
  cluster, so lambdaml installs nothing and sets no runtime_env;
* ``naive``: a bare Serve deployment with Ray's ``runtime_env={"pip": [...]}``
  for the same pinned packages;
* ``lambdaml_install``: ``@model(packages=["tabulate==0.9.0"])``, which the
  cluster lacks, so lambdaml installs just that through runtime_env.

Each round deploys under a new name and times deploy (not waiting) + the first
call through a Serve handle, which waits for the replica: the same mechanism for
all four, lambdaml's packaging and environment check included. The first round of the runtime_env variants builds the environment;
later rounds reuse Ray's cached one. Usage: ``python bench/bench_environment.py``
(``--rounds N``). Prints a Markdown table and writes
``bench/results/environment.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _child import measure_in_own_cluster, save


def uses_packages() -> str:
    import httpx
    import pydantic

    return f"{httpx.__version__} {pydantic.__version__}"


def uses_tabulate() -> str:
    import tabulate

    return tabulate.__version__


def timed(deploy_and_call) -> float:
    started = time.perf_counter()
    deploy_and_call()
    return time.perf_counter() - started


def measure(rounds: int) -> dict[str, list[float]]:
    import httpx
    import pydantic
    from ray import serve

    from lambdaml import model
    from lambdaml.cluster import connect

    connect()
    pins = [f"httpx=={httpx.__version__}", f"pydantic=={pydantic.__version__}"]

    def bare(name: str, runtime_env: dict | None) -> None:
        options = {"num_cpus": 0.1} | ({"runtime_env": runtime_env} if runtime_env else {})

        @serve.deployment(name=name, ray_actor_options=options)
        class Bare:
            def __call__(self) -> str:
                return uses_packages()

        target = serve.RunTarget(target=Bare.bind(), name=name, route_prefix=f"/{name}")
        serve.run_many([target], wait_for_applications_running=False)
        assert serve.get_app_handle(name).remote().result(timeout_s=600)  # waits for the replica

    def with_lambdaml(name: str, **params) -> None:
        function = uses_tabulate if params else uses_packages
        deployed = model(name=name, cpu=0.1, min=1, **params)(function)
        deployed.deploy(wait=False)  # as above: the first call waits for the replica
        assert deployed.remote()

    variants = {
        "bare": lambda name: bare(name, None),
        "lambdaml": lambda name: with_lambdaml(name),
        "naive": lambda name: bare(name, {"pip": pins}),
        "lambdaml_install": lambda name: with_lambdaml(name, packages=["tabulate==0.9.0"]),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(rounds):
        for variant, run in variants.items():
            name = f"env-{variant.replace('_', '-')}-{round_index}"
            results[variant].append(timed(lambda: run(name)))
            serve.delete(name)
    return results


def report(results: dict[str, list[float]]) -> str:
    baseline = statistics.median(results["bare"][1:] or results["bare"])
    lines = [
        "| variant | first round s | median of later rounds s | later rounds / bare's later rounds |",
        "|---|---:|---:|---:|",
    ]
    for variant, samples in results.items():
        later = statistics.median(samples[1:] or samples)
        lines.append(f"| {variant} | {samples[0]:.2f} | {later:.2f} | {later / baseline:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    results = measure_in_own_cluster(args.child, lambda: measure(args.rounds), ["--rounds", str(args.rounds)], "env", 1)
    if results is None:
        return
    save("environment", {"results": results})
    print(report(results))


if __name__ == "__main__":
    main()
