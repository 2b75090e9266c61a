"""Shared by the benchmarks: measure in a child process that has an embedded cluster of its own."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys


def run_child(script: str, args: list[str], env_overrides: dict[str, str], label: str) -> dict:
    """Run ``script --child *args`` with a private cluster (stopped afterwards); return its last JSON line."""
    env = dict(os.environ)
    env.update(env_overrides)
    env.setdefault("LAMBDAML_ARTIFACTS", f"{env_overrides['LAMBDAML_TEMP_DIR']}/artifacts")
    for variable in ("LAMBDAML_ADDRESS", "RAY_ADDRESS", "LAMBDAML_URL"):
        env.pop(variable, None)
    command = [sys.executable, script, "--child", *args]
    try:
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"{label} failed:\n{error.stderr[-4000:]}") from None
    finally:
        subprocess.run([sys.executable, "-c", "import lambdaml; lambdaml.shutdown()"], env=env, check=False)
    return json.loads(output.strip().splitlines()[-1])


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}"
