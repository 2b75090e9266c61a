"""A replica's "I am up": what ``lambdaml cost`` counts replica-seconds from.

Every ``EVERY_S`` a replica tells the control application that it is alive, with the Ray
resources it holds; the control application keeps one span per replica (first and last
seen, ``lambdaml.control.usage``). A replica that stops says so last (``stop``); one that
dies is counted up to its last report: at most ``EVERY_S`` short. This works on any cluster, with nothing but lambdaml running:
no Prometheus needed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger("ray.serve")

EVERY_S = 15.0


def held_resources() -> dict[str, float]:
    """The Ray resources this replica holds (CPU, GPU, accelerator_type:X), as the scheduler gave them."""
    try:
        import ray

        return dict(ray.get_runtime_context().get_assigned_resources())
    except Exception:  # outside Ray (a test building the server by hand)
        return {}


class Presence:
    """Sends ``report(started_ts, resources)`` now and every ``EVERY_S`` until the replica stops."""

    def __init__(self, report: Callable[[float, dict[str, float]], Awaitable[Any]]) -> None:
        self._report = report
        self._task: asyncio.Task | None = None
        self._started = time.time()
        self._resources = held_resources()

    def start(self) -> None:
        """On the replica's event loop (Serve's first health probe comes within a second of start)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """The replica is stopping: one last report, so its span ends now."""
        if self._task is not None:
            self._task.cancel()
            await self._send()

    async def _run(self) -> None:
        while True:
            await self._send()
            await asyncio.sleep(EVERY_S)

    async def _send(self) -> None:
        try:
            await self._report(self._started, self._resources)
        except Exception as exc:  # the control application is (re)starting: the next report closes the gap
            logger.debug(f"lambdaml: presence report failed: {exc}")
