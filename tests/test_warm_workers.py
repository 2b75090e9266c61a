"""The embedded cluster keeps unclaimed workers ready, and replicas start in them."""

import os
import time

import lambdaml
from lambdaml import model
from lambdaml.cluster.ray_internals import raylet_stub, unclaimed_workers
from lambdaml.deploy import app_status


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for: {what}"
        time.sleep(0.25)


def test_a_replica_started_after_scaling_to_zero_reuses_a_ready_worker(deployed):
    @model(name="whereami", cpu=0.1, min=0, max=1, scaledown_after=1)
    def whereami() -> int:
        return os.getpid()

    deployed(whereami)
    stub = raylet_stub()
    # Two rounds: the first replica may take a worker Ray prestarted on its own;
    # the second only finds one ready because the keeper topped the pool up.
    for _ in range(2):
        _wait_for(lambda: not app_status("whereami")["replicas"], "scaled to zero")
        _wait_for(lambda: unclaimed_workers(stub), "an unclaimed worker is ready")
        ready = unclaimed_workers(stub)
        assert lambdaml.run("whereami", {}) in ready
