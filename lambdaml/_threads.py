"""Worker threads for a model's synchronous ``predict``.

A sync ``predict`` must not run on the replica's event loop: a long prediction
would stall every other request to the replica, and Ray Serve restarts a
replica whose loop stays blocked. So it runs in a worker thread, as Ray Serve
does for sync methods. ``asyncio.to_thread`` costs ~100-130 us per call here
(a ``concurrent.futures.Future`` chained to an ``asyncio.Future``, plus the
executor's idle-thread bookkeeping); handing the call over a ``SimpleQueue``
and resolving the asyncio future directly costs ~45 us (bench/README.md),
which is a third of the budget lambdaml has per request against bare Serve.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

_Job = tuple[asyncio.AbstractEventLoop, asyncio.Future, contextvars.Context, Callable[..., Any], dict[str, Any]]


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile: the prediction timed out
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class SyncRunner:
    """Runs sync callables in daemon threads; starts another thread whenever all are busy."""

    def __init__(self, name: str):
        self._name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()
        self._threads = 0

    async def run(self, function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """Call ``function(**kwargs)`` in a worker thread, in the caller's context (log capture follows)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:  # claim an idle thread, or start one (a timed-out prediction may hold its thread)
            if self._idle:
                self._idle -= 1
            else:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self._name}-{self._threads}", daemon=True).start()
        self._jobs.put((loop, future, contextvars.copy_context(), function, kwargs))
        return await future

    def _work(self) -> None:
        while True:
            loop, future, context, function, kwargs = self._jobs.get()
            result, error = None, None
            try:
                result = context.run(function, **kwargs)
            except BaseException as exc:  # handed to the awaiting coroutine
                error = exc
            with self._lock:
                self._idle += 1
            try:
                loop.call_soon_threadsafe(_resolve, future, result, error)
            except RuntimeError:  # the loop closed: the replica is stopping
                return
