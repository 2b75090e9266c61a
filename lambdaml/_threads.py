"""Worker threads for a model's synchronous ``predict``.

A sync ``predict`` must not run on the replica's event loop: a long prediction
would stall every other request to the replica, and Ray Serve restarts a
replica whose loop stays blocked. So it runs in a worker thread, as Ray Serve
does for sync methods. ``asyncio.to_thread`` costs ~100-130 us per call here
(a ``concurrent.futures.Future`` chained to an ``asyncio.Future``, plus the
executor's idle-thread bookkeeping); handing the call over a ``SimpleQueue``
and resolving the asyncio future directly costs ~45 us (bench/README.md),
which is a third of the budget lambdaml has per request against bare Serve.

``SyncRunner.run`` is that fast path. ``SyncRunner.start`` returns a ``Job``
that can be cancelled as Cog cancels a prediction: CPython raises
``Interrupted`` in the worker thread between two bytecodes
(``PyThreadState_SetAsyncExc``), so Python code stops at once, and code in C
(``time.sleep``, a CUDA call) when it returns to Python.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import queue
import threading
from collections.abc import Callable
from typing import Any

_Item = tuple[asyncio.AbstractEventLoop, asyncio.Future, contextvars.Context, Callable[..., Any], dict[str, Any], "Job | None"]
_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc  # no argtypes, so None goes as NULL: "clear"
_PENDING, _RUNNING, _FINISHED = range(3)


class Interrupted(BaseException):
    """Raised in a cancelled job's thread, and by its future. A BaseException, so a model's ``except Exception`` lets it through."""


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile (run: the prediction timed out), or resolved by Job.cancel
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Job:
    """A call started by ``SyncRunner.start``. ``done_future`` gets its result, its exception or ``Interrupted``
    only once the function has really stopped and its thread is back in the pool; never cancel it, shield it."""

    __slots__ = ("done_future", "_loop", "_lock", "_state", "_interrupted", "_ident")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.done_future: asyncio.Future = loop.create_future()
        self._loop = loop
        self._lock = threading.Lock()
        self._state = _PENDING
        self._interrupted = False
        self._ident = 0

    @property
    def running(self) -> bool:
        """Started in its thread and not finished."""
        return self._state == _RUNNING

    @property
    def finished(self) -> bool:
        """Returned, raised, was interrupted, or was cancelled before it started: it holds no thread."""
        return self._state == _FINISHED

    async def wait(self) -> Any:
        """The function's result (or exception). Cancelling the awaiting task leaves the job as it is: call ``cancel``."""
        return await asyncio.shield(self.done_future)

    def cancel(self) -> None:
        """From any thread: a job not started yet never starts (``Interrupted`` at once); a running one gets
        ``Interrupted`` raised in its thread (in C code, when that returns); a finished one is left alone."""
        with self._lock:
            if self._state == _PENDING:
                self._state = _FINISHED
                try:
                    self._loop.call_soon_threadsafe(_resolve, self.done_future, None, Interrupted("cancelled before it started"))
                except RuntimeError:  # the loop closed
                    pass
            elif self._state == _RUNNING and not self._interrupted:
                self._interrupted = True
                _set_async_exc(ctypes.c_ulong(self._ident), ctypes.py_object(Interrupted))

    def _run(self, ident: int, context: contextvars.Context, function: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[Any, BaseException | None]:
        # cancel() may set the exception just as the function returns, so it can fire anywhere in this code
        # until the state is _FINISHED, never later: cancel() sets it only while _RUNNING, at most once, and
        # under self._lock; _finish() sets _FINISHED and clears a pending one under that lock. If it fires
        # here instead (the outer except), nothing is left pending. Either way the worker loop gets a clean thread.
        result, error = None, None
        try:
            with self._lock:
                if self._state != _PENDING:
                    return None, Interrupted("cancelled before it started")
                self._state, self._ident = _RUNNING, ident
            try:
                result = context.run(function, **kwargs)
            except BaseException as exc:  # handed to the awaiting coroutine
                error = exc
            self._finish()
        except Interrupted as exc:
            error = exc
            self._finish()
        return result, error

    def _finish(self) -> None:
        with self._lock:
            self._state = _FINISHED
            pass


class SyncRunner:
    """Runs sync callables in daemon threads; starts another thread whenever all are busy."""

    def __init__(self, name: str):
        self._name = name
        self._jobs: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()
        self._threads = 0

    async def run(self, function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """Call ``function(**kwargs)`` in a worker thread, in the caller's context (log capture follows)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._claim()
        self._jobs.put((loop, future, contextvars.copy_context(), function, kwargs, None))
        return await future

    def start(self, function: Callable[..., Any], kwargs: dict[str, Any]) -> Job:
        """Like ``run``, but returns a cancelable ``Job``; call it on the event loop, then ``await job.wait()``."""
        job = Job(asyncio.get_running_loop())
        self._claim()
        self._jobs.put((job._loop, job.done_future, contextvars.copy_context(), function, kwargs, job))
        return job

    def _claim(self) -> None:
        with self._lock:  # claim an idle thread, or start one (a timed-out prediction may hold its thread)
            if self._idle:
                self._idle -= 1
            else:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self._name}-{self._threads}", daemon=True).start()

    def _work(self) -> None:
        ident = threading.get_ident()
        while True:
            loop, future, context, function, kwargs, job = self._jobs.get()
            result, error = None, None
            if job is not None:
                result, error = job._run(ident, context, function, kwargs)
            else:
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
