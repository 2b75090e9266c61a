"""SyncRunner: sync predictions run in worker threads, overlap, and keep their context."""

import asyncio
import contextvars
import threading

import pytest

from lambdaml._threads import SyncRunner

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_runs_off_the_event_loop_and_returns_the_result():
    async def main():
        runner = SyncRunner("t")
        loop_thread = threading.get_ident()
        return loop_thread, await runner.run(lambda x: (threading.get_ident(), x * 2), {"x": 21})

    loop_thread, (worker_thread, result) = asyncio.run(main())
    assert result == 42 and worker_thread != loop_thread


def test_exceptions_reach_the_caller():
    def fail() -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        asyncio.run(SyncRunner("t").run(fail, {}))


def test_calls_overlap_and_see_their_callers_context():
    barrier = threading.Barrier(3, timeout=10)  # passes only if three calls are in flight at once

    def work() -> str:
        barrier.wait()
        return request_id.get()

    async def one(runner: SyncRunner, name: str) -> str:
        request_id.set(name)
        return await runner.run(work, {})

    async def main():
        runner = SyncRunner("t")
        return await asyncio.gather(*(one(runner, name) for name in ("a", "b", "c")))

    assert asyncio.run(main()) == ["a", "b", "c"]


def test_a_timed_out_call_does_not_hold_up_the_next():
    release = threading.Event()

    async def main():
        runner = SyncRunner("t")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(runner.run(release.wait, {"timeout": 10}), 0.05)
        try:
            return await asyncio.wait_for(runner.run(lambda: "next", {}), 10)
        finally:
            release.set()

    assert asyncio.run(main()) == "next"
