"""Worker threads for a model's synchronous ``predict``.

A sync ``predict`` must not run on the replica's event loop: a long prediction
would stall every other request to the replica, and Ray Serve restarts a
replica whose loop stays blocked. So it runs in a worker thread, as Ray Serve
does for sync methods. ``asyncio.to_thread`` costs ~100-130 us per call here
(a ``concurrent.futures.Future`` chained to an ``asyncio.Future``, plus the
executor's idle-thread bookkeeping); handing the call over a ``SimpleQueue``
and resolving the asyncio future directly costs ~45 us (bench/bench_threads.py),
which is a third of the budget lambdaml has per request against bare Serve.

``SyncRunner.run`` is that path. ``SyncRunner.start`` returns a ``Job`` that
can be cancelled as Cog cancels a prediction: ``Interrupted`` is raised in its
thread between two bytecodes (``PyThreadState_SetAsyncExc``), so Python code
stops at once and code in C (``time.sleep``, a CUDA call) once it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import queue
import threading
from collections.abc import Callable
from typing import Any

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_PENDING, _RUNNING, _FINISHED = range(3)
_BEFORE = "cancelled before it started"


class Interrupted(BaseException):
    """Raised in a cancelled job's thread, and by its future; a BaseException, so ``except Exception`` lets it by."""


class _Spent(BaseException):
    """Replaces an Interrupted that may still be pending when a job ends; raised and caught there at once."""


_INTERRUPTED, _SPENT = ctypes.py_object(Interrupted), ctypes.py_object(_Spent)


def _checkpoint() -> None:
    pass


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile (run: the prediction timed out), or resolved by Job.cancel
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Job:
    """A call started by ``SyncRunner.start``. ``done_future`` gets its result, its exception or ``Interrupted``
    only once the function has really stopped and its thread is back in the pool; shield it, never cancel it.
    ``running``: started in its thread and not finished. ``finished``: returned, raised, was interrupted, or was
    cancelled before it started; either way it holds no thread."""

    __slots__ = ("done_future", "_loop", "_lock", "_state", "_interrupted", "_ident")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.done_future: asyncio.Future = loop.create_future()
        self._loop, self._lock = loop, threading.Lock()
        self._state, self._interrupted, self._ident = _PENDING, False, None  # _ident: its thread's, once _RUNNING

    @property
    def running(self) -> bool:
        return self._state == _RUNNING

    @property
    def finished(self) -> bool:
        return self._state == _FINISHED

    async def wait(self) -> Any:
        """The function's result (or exception). Cancelling the awaiting task leaves the job alone: call ``cancel``."""
        return await asyncio.shield(self.done_future)

    def cancel(self) -> None:
        """From any thread: a job not started yet never starts (``Interrupted`` at once); a running one gets
        ``Interrupted`` raised in its thread (in C code, once that returns); a finished one is left alone."""
        with self._lock:
            if self._state == _PENDING:
                self._state = _FINISHED
                with contextlib.suppress(RuntimeError):  # the loop closed
                    self._loop.call_soon_threadsafe(_resolve, self.done_future, None, Interrupted(_BEFORE))
            elif self._state == _RUNNING and not self._interrupted:
                self._interrupted = True
                _set_async_exc(self._ident, _INTERRUPTED)

    def _run(self, ident: ctypes.c_ulong, context: contextvars.Context, function: Callable[..., Any], kwargs: dict):
        # cancel() sets the Interrupted at most once, only while _RUNNING, under self._lock. So it may fire anywhere
        # here until _finish() marks the job _FINISHED under that lock (the outer except catches it), and never
        # later: if it is still pending then, _finish() replaces it with a _Spent that fires and is caught at once.
        # (Clearing it with PyThreadState_SetAsyncExc(ident, NULL) leaves CPython 3.11's eval breaker stuck on:
        # under a tracer or profiler, coverage or pdb, the thread's next Python call would then never return.)
        result, error = None, None
        try:
            with self._lock:
                if self._state != _PENDING:
                    return None, Interrupted(_BEFORE)
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
            if self._interrupted:
                with contextlib.suppress(_Spent):
                    _set_async_exc(self._ident, _SPENT)  # raised as this call returns,
                    _checkpoint()  # or at the latest as a Python function starts


class SyncRunner:
    """Runs sync callables in daemon threads; starts another thread whenever all are busy."""

    def __init__(self, name: str):
        self._name = name
        self._jobs: queue.SimpleQueue[tuple] = queue.SimpleQueue()
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
        """Like ``run``, but returns a cancelable ``Job`` at once; call it on the event loop."""
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
        ident = ctypes.c_ulong(threading.get_ident())
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
