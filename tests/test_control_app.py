"""The control application across a cluster restart: records survive ``lambdaml down`` / ``up``, and a
prediction that was running when the cluster went down is reaped as failed once it is back.

A private cluster driven through the CLI, as a user would, with ``HOME`` in a temp dir so that the default
records file (``~/.lambdaml/records.db``) is the one under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from lambdaml.cluster.head import free_port

MODEL = '''
import time
from lambdaml import model


@model(name="restartable", cpu=0.1, min=1, max=1)
def restartable(seconds: float = 0.0) -> str:
    time.sleep(seconds)
    return "done"
'''


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    """A second embedded cluster of its own (temp dir, ports, HOME); yields (base URL, cli runner)."""
    workdir = tmp_path_factory.mktemp("restart")
    home = workdir / "home"
    home.mkdir()
    temp_dir = Path(tempfile.gettempdir()) / f"lmr-{os.getpid()}"  # short: socket paths are capped
    env = {
        **os.environ,
        "HOME": str(home),
        "LAMBDAML_TEMP_DIR": str(temp_dir),
        "LAMBDAML_ARTIFACTS": str(temp_dir / "artifacts"),
        "LAMBDAML_RAY_PORT": str(free_port()),
        "LAMBDAML_HTTP_PORT": str(free_port()),
        "LAMBDAML_DASHBOARD_PORT": str(free_port()),
    }
    env.pop("LAMBDAML_DATABASE_URL")  # the default: ~/.lambdaml/records.db, outside the cluster's temp dir
    (workdir / "restartable.py").write_text(MODEL)

    def lambdaml(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "lambdaml.cli", *args], env=env, capture_output=True,
                              text=True, timeout=timeout, cwd=workdir)
        assert done.returncode == 0, f"lambdaml {' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done

    try:
        yield f"http://127.0.0.1:{env['LAMBDAML_HTTP_PORT']}", lambdaml, home
    finally:
        subprocess.run([sys.executable, "-m", "lambdaml.cli", "down"], env=env, capture_output=True, timeout=120)


def test_records_survive_a_restart_and_orphans_are_reaped(private):
    base, lambdaml, home = private
    lambdaml("deploy", "restartable.py")
    finished = httpx.post(f"{base}/restartable/predictions", json={"input": {}}, timeout=60).json()
    assert finished["status"] == "succeeded"
    running = httpx.post(f"{base}/restartable/predictions", json={"input": {"seconds": 600}},
                         headers={"Prefer": "respond-async"}, timeout=60).json()
    deadline = time.monotonic() + 20
    while httpx.get(running["urls"]["get"], timeout=10).json()["status"] != "processing":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)  # the finished one's record has been written (batched every 0.1 s)

    lambdaml("down")
    assert (home / ".lambdaml" / "records.db").is_file()
    restarted = lambdaml("up")
    back = time.monotonic()
    assert "Brought back: restartable (" in restarted.stdout, restarted.stdout  # the model it ran before

    kept = httpx.get(finished["urls"]["get"], timeout=10)
    assert kept.status_code == 200 and kept.json()["status"] == "succeeded" and kept.json()["output"] == "done"
    while (orphan := httpx.get(running["urls"]["get"], timeout=10).json())["status"] not in ("failed", "canceled"):
        assert time.monotonic() - back < 30, orphan
        time.sleep(0.5)
    assert orphan["status"] == "failed" and "lost" in orphan["error"]

    again = httpx.post(f"{base}/restartable/predictions", json={"input": {}}, timeout=60).json()
    assert again["status"] == "succeeded"


def test_a_deleted_model_stays_deleted_across_a_restart(private):
    base, lambdaml, _ = private
    lambdaml("deploy", "restartable.py")
    lambdaml("delete", "restartable")
    lambdaml("down")
    restarted = lambdaml("up")
    assert "restartable" not in restarted.stdout
    assert "restartable" not in lambdaml("ls").stdout
