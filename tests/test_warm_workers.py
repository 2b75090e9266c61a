"""The embedded cluster keeps unclaimed workers ready, and replicas start in them."""

import os
import time

import lambdaml
from lambdaml import model
from lambdaml.cluster.ray_internals import raylet_stub, unclaimed_workers
from lambdaml.cluster.warm_workers import WarmPool
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


def test_workers_claimed_before_the_pool_saw_them_still_count_as_arrived():
    """On a fresh cluster the first replicas take the workers the pool asked for within a second;
    the pool must ask again at once, not after its 30 s grace (cold starts there took 1.5-2.6 s)."""
    pool = WarmPool(stub=None, size=2)
    assert pool.to_request({1: False}, now=0.0) == 2  # a driver's worker; none ready: ask for two
    assert pool.to_request({1: False}, now=1.0) == 0  # they are starting
    assert pool.to_request({1: False, 2: False, 3: False}, now=2.0) == 2  # arrived and claimed unseen
    assert pool.to_request({1: False, 2: False, 3: False, 4: True, 5: True}, now=3.0) == 0  # full
    assert pool.to_request({1: False, 2: False, 3: False, 4: False, 5: True}, now=4.0) == 1  # one claimed
    assert pool.to_request({1: False, 2: False, 3: False, 4: False, 5: True}, now=40.0) == 1  # never came: again
