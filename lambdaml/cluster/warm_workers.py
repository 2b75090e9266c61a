"""Keep a few unclaimed Ray worker processes ready on this node, so replicas start fast.

A Serve replica needs a worker process; starting one costs ~1.5-3 s of CPU here,
most of a cold start. Serve replicas are detached actors, and Ray's worker pool
only gives a detached actor a worker that no job has claimed yet: an idle worker
kept busy by some driver's tasks belongs to that driver's job and never serves a
replica. So the pool asks the raylet to start unclaimed workers (its
``PrestartWorkers`` call, the one Ray's core worker uses for backlogs) with a
keep-alive, and tops the pool up whenever a replica takes one.

The raylet has no public Python API for either call: ``ray_internals`` talks to
its gRPC service with Ray's own generated stubs. If a call fails, the pool logs
it and replicas start in new workers, as with plain Ray.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from lambdaml.cluster.ray_internals import prestart_workers, python_workers

log = logging.getLogger(__name__)

_KEEP_ALIVE_S = 24 * 3600  # the raylet's idle-worker killer leaves them alone this long
_STARTUP_GRACE_S = 30.0  # a requested worker not seen by then is asked for again


@dataclass
class WarmPool:
    """Tops the node up to ``size`` unclaimed workers; call ``tend`` periodically."""

    stub: Any  # ray_internals.raylet_stub()
    size: int
    _requested: int = 0  # asked for, not yet seen
    _requested_at: float = 0.0
    _seen: set[int] = field(default_factory=set)  # every worker process seen, claimed or not

    def tend(self) -> None:
        if self.size <= 0:  # LAMBDAML_WARM_WORKERS=0: replicas start in new workers, as with plain Ray
            return
        missing = self.to_request(python_workers(self.stub), time.monotonic())
        if missing:
            prestart_workers(self.stub, missing, _KEEP_ALIVE_S)

    def to_request(self, workers: dict[int, bool], now: float) -> int:
        """How many workers to ask for, given the node's workers (PID -> unclaimed) seen at ``now``."""
        ready = {pid for pid, unclaimed in workers.items() if unclaimed}
        # A requested worker counts as arrived even if a replica claimed it before this look
        # (on a fresh cluster the first replicas take them within a second): counting only
        # unclaimed arrivals left the pool empty until the grace below ran out.
        arrived = len(workers.keys() - self._seen)
        self._seen = set(workers)
        self._requested = max(0, self._requested - arrived)
        if self._requested and now - self._requested_at > _STARTUP_GRACE_S:
            self._requested = 0  # those starts failed
        missing = max(0, self.size - len(ready) - self._requested)
        if missing:
            self._requested += missing
            self._requested_at = now
        return missing

    def run_forever(self, interval_s: float = 1.0) -> None:
        failing = False
        while True:
            try:
                self.tend()
                failing = False
            except grpc.RpcError as error:
                if not failing:  # say it once, not twice a second
                    log.warning("Could not keep workers ready (replicas will start slower): %s", error)
                failing = True
            time.sleep(interval_s)
