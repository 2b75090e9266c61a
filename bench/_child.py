"""Shared by the benchmarks: measure in a child process that has an embedded cluster of its own."""

from __future__ import annotations

import json
import os
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
