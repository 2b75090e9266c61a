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

from lambdaml.cluster.ray_internals import prestart_workers, unclaimed_workers

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
    _seen: set[int] = field(default_factory=set)

    def tend(self) -> None:
        if self.size <= 0:  # LAMBDAML_WARM_WORKERS=0: replicas start in new workers, as with plain Ray
            return
        ready = unclaimed_workers(self.stub)
        arrived = len(ready - self._seen)
        self._seen = ready
        self._requested = max(0, self._requested - arrived)
        if self._requested and time.monotonic() - self._requested_at > _STARTUP_GRACE_S:
            self._requested = 0  # those starts failed or were claimed before we saw them
        missing = self.size - len(ready) - self._requested
        if missing > 0:
            prestart_workers(self.stub, missing, _KEEP_ALIVE_S)
            self._requested += missing
            self._requested_at = time.monotonic()

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
